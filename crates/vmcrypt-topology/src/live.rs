//! `topology check --live`: what the key servers say now, measured by the caller through
//! this host's configuration (vmcrypt's `provider check`: reachable, TLS trust, latency,
//! replication lag), added to the report as [`LiveServer`]s and findings. The doctor itself
//! never talks to a server.
//!
//! A server is matched to the topology by name: the `[[kms]]` entries `topology init
//! --from-config` writes are named by their host:port, as the configuration lists them.

use serde::Serialize;

use crate::model::{ProviderKind, Topology};
use crate::report::{Finding, Severity};

/// A replica slower than this to show a new key is a warning.
pub const MAX_LAG_MS: f64 = 5_000.0;

/// One server of one provider, as measured now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveServer {
    /// The provider (by its name in the configuration).
    pub provider: String,
    /// The server (host:port).
    pub server: String,
    /// A TCP connection was accepted.
    pub reachable: bool,
    /// The TLS handshake completed with mutual authentication.
    pub trusted: bool,
    /// Round trip of one Query, milliseconds.
    pub latency_ms: Option<f64>,
    /// How long a key created on another server took to show here, milliseconds; `None`
    /// when not measured (this server made the probe, or no probe was made).
    pub lag_ms: Option<f64>,
    /// Why the probe never showed here, when it did not.
    pub lag_error: Option<String>,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// The findings of a live measurement: servers down or untrusted (`kms-down`), replicas that
/// lag or do not replicate (`replication-lag`), and providers whose configured servers are
/// not the ones the topology describes (`config-mismatch`).
pub fn findings(t: &Topology, live: &[LiveServer]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in live {
        let components = vec![s.provider.clone(), s.server.clone()];
        if let Some(e) = &s.error {
            let what = if !s.reachable {
                "is unreachable"
            } else if !s.trusted {
                "fails the TLS handshake (trust or client certificate)"
            } else {
                "does not answer KMIP"
            };
            out.push(Finding {
                check: "kms-down",
                severity: Severity::Error,
                components,
                site: t.kms(&s.server).and_then(|k| k.site.clone()),
                message: format!("server {} of provider {} {what} now: {e}", s.server, s.provider),
                why: "every fetch that reaches it waits for it to fail first, and the provider has one server fewer than the topology says".into(),
                fix: format!(
                    "bring {} back (or fix its certificates), or take it out of the order until it is",
                    s.server
                ),
            });
            continue;
        }
        let slow = s.lag_ms.is_some_and(|l| l > MAX_LAG_MS);
        if slow || s.lag_error.is_some() {
            let message = match (&s.lag_error, s.lag_ms) {
                (Some(e), _) => format!(
                    "server {} of provider {} did not show a key created on another server: {e}",
                    s.server, s.provider
                ),
                (None, l) => format!(
                    "server {} of provider {} showed a key created on another server after {:.1} s",
                    s.server,
                    s.provider,
                    l.unwrap_or(0.0) / 1000.0
                ),
            };
            out.push(Finding {
                check: "replication-lag",
                severity: Severity::Warning,
                components,
                site: t.kms(&s.server).and_then(|k| k.site.clone()),
                message,
                why: "a key created just before a failure may be missing from the server that answers next: the disk it protects cannot be opened there".into(),
                fix: "check the cluster's replication (its links and its queue) before relying on failover".into(),
            });
        }
    }
    // The servers the topology gives each provider, against those this host tries.
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        let mut measured: Vec<&str> = live
            .iter()
            .filter(|s| s.provider == p.name)
            .map(|s| s.server.as_str())
            .collect();
        if measured.is_empty() {
            continue;
        }
        measured.dedup();
        let mut described: Vec<&str> = p
            .servers
            .iter()
            .chain(p.order.values().flatten())
            .map(String::as_str)
            .collect();
        described.sort_unstable();
        described.dedup();
        let mut m = measured.clone();
        m.sort_unstable();
        if m != described {
            out.push(Finding {
                check: "config-mismatch",
                severity: Severity::Warning,
                components: std::iter::once(p.name.clone())
                    .chain(measured.iter().map(|s| s.to_string()))
                    .collect(),
                site: None,
                message: format!(
                    "provider {}: this host's configuration tries {}, the topology describes {}",
                    p.name,
                    measured.join(", "),
                    described.join(", ")
                ),
                why: "the report is about the topology as described; failover follows the configuration".into(),
                fix: "describe the configured servers (`vmcrypt topology init --from-config` writes them), or fix the configuration".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> LiveServer {
        LiveServer {
            provider: "p".into(),
            server: name.into(),
            reachable: true,
            trusted: true,
            latency_ms: Some(1.0),
            lag_ms: None,
            lag_error: None,
            error: None,
        }
    }

    #[test]
    fn down_lagging_and_mismatched_servers_are_findings() {
        let t = Topology::from_toml(
            r#"
            [[site]]
            name = "s"
            [[kms]]
            name = "a:1"
            site = "s"
            cluster = "c"
            vendor = "v"
            [[kms]]
            name = "b:1"
            site = "s"
            cluster = "c"
            vendor = "v"
            [[provider]]
            name = "p"
            servers = ["a:1", "b:1"]
            "#,
        )
        .expect("valid");
        let fine = [
            server("a:1"),
            LiveServer {
                lag_ms: Some(40.0),
                ..server("b:1")
            },
        ];
        assert!(findings(&t, &fine).is_empty());
        let slow = LiveServer {
            lag_ms: Some(MAX_LAG_MS + 1.0),
            ..server("b:1")
        };
        let f = findings(&t, &[server("a:1"), slow]);
        assert_eq!(
            f.iter().map(|f| f.check).collect::<Vec<_>>(),
            ["replication-lag"]
        );
        assert_eq!(f[0].site.as_deref(), Some("s"));
        let never = LiveServer {
            lag_error: Some("not found".into()),
            ..server("b:1")
        };
        assert!(
            findings(&t, &[server("a:1"), never])[0]
                .message
                .contains("not found")
        );
        let untrusted = LiveServer {
            trusted: false,
            error: Some("bad certificate".into()),
            ..server("b:1")
        };
        let f = findings(&t, &[server("a:1"), untrusted]);
        assert_eq!((f[0].check, f[0].severity), ("kms-down", Severity::Error));
        assert!(f[0].message.contains("TLS handshake"), "{}", f[0].message);
        let f = findings(&t, &[server("a:1"), server("c:1")]);
        assert_eq!(
            f.iter().map(|f| f.check).collect::<Vec<_>>(),
            ["config-mismatch"]
        );
    }
}
