//! `provider check NAME [--replication]`.

use std::time::Duration;

use serde_json::json;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{Error, Result};
use vmcrypt_kmip::provider::KmipProvider;

use crate::output::Out;
use vmcrypt_agent::config::{Config, ProviderConfig};

/// How long a replica may take to show a new key before it is reported as not replicating.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

pub fn run(cfg: &Config, name: &str, replication: bool, out: &Out) -> Result<()> {
    match cfg.get(name) {
        None => Err(Error::InvalidInput {
            reason: format!("no provider named {name:?}"),
        }),
        Some(ProviderConfig::Native { keystore }) => {
            let p = NativeProvider::open(name, keystore)?;
            out.result(
                &format!(
                    "native provider {name}: keystore {} readable{}",
                    keystore.display(),
                    if p.is_backed_up() { ", backed up" } else { ", NOT BACKED UP" }
                ),
                json!({"provider": name, "type": "native", "ok": true, "backed_up": p.is_backed_up()}),
            );
            Ok(())
        }
        Some(ProviderConfig::Kmip(k)) => {
            let p = KmipProvider::new(k.settings(name)).map_err(Error::from)?;
            let checks = p.check();
            let ms = |d: Option<Duration>| {
                d.map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                    .unwrap_or_else(|| "-".into())
            };
            let yn = |b: bool| if b { "yes" } else { "no" };
            let mut lines = vec![format!(
                "{:<3}{:<24}{:<11}{:<9}{:<6}{:<12}{:<10}{}",
                "#",
                "server",
                "reachable",
                "trusted",
                "KMIP",
                "connect ms",
                "query ms",
                "vendor / error"
            )];
            let mut docs = Vec::new();
            for (i, c) in checks.iter().enumerate() {
                lines.push(format!(
                    "{:<3}{:<24}{:<11}{:<9}{:<6}{:<12}{:<10}{}",
                    i + 1,
                    c.server,
                    yn(c.reachable),
                    yn(c.trusted),
                    c.version
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    ms(c.connect),
                    ms(c.latency),
                    c.error
                        .clone()
                        .or_else(|| c.vendor.clone())
                        .unwrap_or_default()
                ));
                docs.push(json!({
                    "server": c.server, "order": i + 1, "reachable": c.reachable, "trusted": c.trusted,
                    "kmip_version": c.version.map(|v| v.to_string()),
                    "connect_ms": c.connect.map(|d| d.as_secs_f64() * 1000.0),
                    "query_ms": c.latency.map(|d| d.as_secs_f64() * 1000.0),
                    "vendor": c.vendor, "error": c.error,
                }));
            }
            let healthy = checks.iter().filter(|c| c.error.is_none()).count();
            if healthy < 2 {
                lines.push(format!(
                    "warning: {healthy} of {} server(s) answer: {}",
                    checks.len(),
                    if healthy == 0 {
                        "no key can be fetched now"
                    } else {
                        "a single point of failure"
                    }
                ));
            }
            let mut doc =
                json!({"provider": name, "type": "kmip", "servers": docs, "healthy": healthy});
            if replication && healthy > 0 {
                let r = p.replication(REPLICATION_WAIT).map_err(Error::from)?;
                lines.push(format!(
                    "replication: probe key {} created on {}",
                    r.probe, r.origin
                ));
                let mut lag_docs = Vec::new();
                for (server, lag) in &r.lag {
                    match lag {
                        Ok(d) => lines.push(format!(
                            "  {server}: has it after {:.1} ms",
                            d.as_secs_f64() * 1000.0
                        )),
                        Err(e) => lines.push(format!("  {server}: not seen ({e})")),
                    }
                    lag_docs.push(json!({
                        "server": server,
                        "lag_ms": lag.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
                        "error": lag.as_ref().err(),
                    }));
                }
                lines.push(format!(
                    "  probe {}",
                    if r.cleaned_up {
                        "destroyed"
                    } else {
                        "NOT destroyed: remove it on the KMS"
                    }
                ));
                doc["replication"] = json!({"origin": r.origin, "probe": r.probe, "lag": lag_docs, "probe_destroyed": r.cleaned_up});
            }
            let failed = (healthy == 0).then(|| Error::key_service(name, "no server answered"));
            if let Some(e) = &failed {
                // --json prints one document: the report, with the error in it.
                doc["error"] = json!({"kind": "key_service", "message": e.to_string(), "exit_code": crate::output::exit_code(e)});
            }
            out.result(&lines.join("\n"), doc);
            failed.map_or(Ok(()), Err)
        }
    }
}
