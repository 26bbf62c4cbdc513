//! How to reach a KMIP cluster: its settings, their defaults, and server addresses. Apart from
//! the provider and the failover cluster, which both read it (so neither depends on the other
//! for it).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Default response timeout, as in the reference system.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Connect timeout ceiling: a silent network should not cost the whole response timeout.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default hedge delay for Get: well above a healthy server's answer (milliseconds), far
/// below the timeout.
pub const DEFAULT_HEDGE: Duration = Duration::from_secs(2);
/// Default time an unreachable server is tried last for Get.
pub const DEFAULT_DEMOTE: Duration = Duration::from_secs(300);

/// How to reach a KMIP cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KmipSettings {
    /// Provider (cluster) name, recorded in every keySafe.
    pub name: String,
    /// host:port of each server, in the order to try them (local site first).
    pub servers: Vec<String>,
    /// The name the server certificates are checked against; default: each server's host.
    pub server_name: Option<String>,
    /// CA certificate(s) that sign the servers' certificates (PEM).
    pub ca: PathBuf,
    /// Client certificate chain (PEM).
    pub cert: PathBuf,
    /// Client private key (PEM).
    pub key: PathBuf,
    /// Response timeout per server (also bounds the TLS handshake).
    pub timeout: Duration,
    /// Get only: also ask the next server when one has not answered after this long
    /// (`None`: wait for the timeout, as the reference system does).
    pub hedge: Option<Duration>,
    /// Get only: try a server that was unreachable after the others for this long.
    pub demote: Option<Duration>,
    /// Keep connections open for the next operation (a long-running agent), instead of a
    /// new TLS connection per operation.
    pub reuse: bool,
}

impl KmipSettings {
    /// Settings with the default timeout.
    pub fn new(
        name: impl Into<String>,
        servers: Vec<String>,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    ) -> Self {
        KmipSettings {
            name: name.into(),
            servers,
            server_name: None,
            ca,
            cert,
            key,
            timeout: DEFAULT_TIMEOUT,
            hedge: Some(DEFAULT_HEDGE),
            demote: Some(DEFAULT_DEMOTE),
            reuse: true,
        }
    }

    /// Sets the hedge delay for Get (`None` turns hedging off).
    pub fn hedge(mut self, d: Option<Duration>) -> Self {
        self.hedge = d;
        self
    }

    /// Sets how long an unreachable server is tried last for Get (`None` turns it off).
    pub fn demote(mut self, d: Option<Duration>) -> Self {
        self.demote = d;
        self
    }

    /// Keeps connections for reuse, or opens a new one per operation.
    pub fn reuse(mut self, on: bool) -> Self {
        self.reuse = on;
        self
    }

    /// Sets the TLS server name.
    pub fn server_name(mut self, n: Option<String>) -> Self {
        self.server_name = n;
        self
    }

    /// Sets the response timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

/// The host part of host:port (brackets of an IPv6 literal removed).
pub(crate) fn split_host(server: &str) -> Result<&str> {
    let bad = || Error::Config(format!("server {server:?} is not HOST:PORT"));
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host("kms.example:5696").ok(), Some("kms.example"));
        assert_eq!(split_host("[::1]:5696").ok(), Some("::1"));
        assert_eq!(split_host("127.0.0.1:5696").ok(), Some("127.0.0.1"));
        for bad in ["kms", "kms:", ":5696", "kms:99999", "kms:x"] {
            assert!(split_host(bad).is_err(), "{bad}");
        }
    }
}
