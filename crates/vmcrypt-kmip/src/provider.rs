//! A key provider backed by a cluster of replicating KMIP servers, tried in the operator's order.
//!
//! For every operation the servers are walked in order. A server that refuses the connection,
//! is unreachable, fails TLS or closes is skipped at once; one that accepts and does not answer
//! is abandoned when the response timeout passes (60 s by default); one that answers with a
//! KMIP failure is skipped too (a replica may lag behind), and its answer is kept for the final
//! error. Only when every server failed does the operation fail, with one error naming each
//! server and why. Nothing else is contacted once a server has answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vmcrypt_core::provider::{KeyId, KeyProvider, KeyPurpose};
use vmcrypt_core::secret::Kek;
use zeroize::Zeroizing;

use crate::client::{KmipClient, ProtocolVersion};
use crate::error::{Error, Result};
use crate::failover::Cluster;
use crate::spec::{self, State};
use crate::transport::client_config;

use crate::settings::split_host;
pub use crate::settings::{DEFAULT_DEMOTE, DEFAULT_HEDGE, DEFAULT_TIMEOUT, KmipSettings};

/// What `provider check` reports for one server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerCheck {
    /// host:port.
    pub server: String,
    /// TCP connection accepted.
    pub reachable: bool,
    /// TLS handshake completed with mutual authentication.
    pub trusted: bool,
    /// Negotiated KMIP version.
    pub version: Option<ProtocolVersion>,
    /// Vendor Identification from Query.
    pub vendor: Option<String>,
    /// Time of the TLS connect + handshake.
    pub connect: Option<Duration>,
    /// Round trip of one Query.
    pub latency: Option<Duration>,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// What `provider check --replication` measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicationReport {
    /// The server the probe key was created on.
    pub origin: String,
    /// The probe key's id.
    pub probe: String,
    /// For each other server: time until it returned the probe key, or why it never did.
    pub lag: Vec<(String, std::result::Result<Duration, String>)>,
    /// Whether the probe was revoked and destroyed afterwards.
    pub cleaned_up: bool,
}

/// The KMIP key provider. Connections it keeps and the servers it saw fail are shared by
/// every operation on it (crate::failover).
pub struct KmipProvider {
    cluster: Arc<Cluster>,
}

impl KmipProvider {
    /// Checks the settings and loads the TLS material.
    ///
    /// # Errors
    /// [`Error::Config`] for no servers, a malformed address, or unusable PEM files.
    pub fn new(settings: KmipSettings) -> Result<Self> {
        if settings.servers.is_empty() {
            return Err(Error::Config(format!(
                "key provider {:?} has no servers",
                settings.name
            )));
        }
        for s in &settings.servers {
            split_host(s)?;
        }
        if settings.timeout.is_zero() {
            return Err(Error::Config("the timeout must be above zero".into()));
        }
        if settings.hedge.is_some_and(|h| h.is_zero()) {
            return Err(Error::Config("the hedge delay must be above zero".into()));
        }
        let tls = client_config(&settings.ca, &settings.cert, &settings.key)?;
        Ok(KmipProvider {
            cluster: Arc::new(Cluster::new(settings, tls)),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &KmipSettings {
        &self.cluster.settings
    }

    /// Opens a TLS connection to one server and negotiates the KMIP version.
    ///
    /// # Errors
    /// Transport errors.
    pub fn connect(&self, server: &str) -> Result<KmipClient> {
        self.cluster.connect(server)
    }

    /// Runs `f` on the first server that completes it, strictly in the operator's order; see
    /// the module docs.
    ///
    /// # Errors
    /// [`Error::AllFailed`] listing every server and its error.
    pub fn with_failover<T>(
        &self,
        what: &str,
        f: impl FnMut(&mut KmipClient) -> Result<T>,
    ) -> Result<T> {
        self.cluster.sequential(what, false, f)
    }

    /// Checks every server in order: reachability, TLS trust, KMIP version, latency.
    pub fn check(&self) -> Vec<ServerCheck> {
        self.cluster
            .settings
            .servers
            .iter()
            .map(|server| {
                let mut r = ServerCheck {
                    server: server.clone(),
                    reachable: false,
                    trusted: false,
                    version: None,
                    vendor: None,
                    connect: None,
                    latency: None,
                    error: None,
                };
                let t0 = Instant::now();
                match self.connect(server) {
                    Ok(mut c) => {
                        r.reachable = true;
                        r.trusted = true;
                        r.connect = Some(t0.elapsed());
                        r.version = Some(c.version());
                        let t1 = Instant::now();
                        match c.query() {
                            Ok(info) => {
                                r.latency = Some(t1.elapsed());
                                r.vendor = info.vendor;
                            }
                            Err(e) => r.error = Some(vmcrypt_core::error_line(&e)),
                        }
                    }
                    Err(e) => {
                        r.reachable = !matches!(e, Error::Connect { .. })
                            && !matches!(
                                e,
                                Error::Timeout {
                                    phase: "connect",
                                    ..
                                }
                            );
                        r.error = Some(vmcrypt_core::error_line(&e));
                    }
                }
                r
            })
            .collect()
    }

    /// Measures replication: creates a probe key through the first server that accepts it,
    /// polls every other server until it returns the key (at most `max_wait` each), then
    /// destroys the probe.
    ///
    /// # Errors
    /// [`Error::AllFailed`] if no server would create the probe.
    pub fn replication(&self, max_wait: Duration) -> Result<ReplicationReport> {
        let id = vmcrypt_core::secret::random_uuid().map_err(|e| Error::Config(e.to_string()))?;
        let name = format!("vmcrypt-replication-probe-{id}");
        let mut origin = String::new();
        let probe = self.with_failover("Create (replication probe)", |c| {
            let uid = c.create_aes256(&name)?;
            origin = c.server().to_string();
            Ok(uid)
        })?;
        let created = Instant::now();
        let mut lag = Vec::new();
        for server in self
            .cluster
            .settings
            .servers
            .iter()
            .filter(|s| **s != origin)
        {
            let result = loop {
                let seen = self.connect(server).and_then(|mut c| c.state(&probe));
                match seen {
                    Ok(_) => break Ok(created.elapsed()),
                    Err(e) if created.elapsed() >= max_wait => {
                        break Err(vmcrypt_core::error_line(&e));
                    }
                    Err(e) if matches!(e.kind(), crate::ErrorKind::Unreachable) => {
                        break Err(vmcrypt_core::error_line(&e));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            lag.push((server.clone(), result));
        }
        let cleaned_up = self
            .with_failover("Destroy (replication probe)", |c| match c.destroy(&probe) {
                Ok(()) => Ok(()),
                Err(_) => {
                    c.revoke(&probe, spec::REVOCATION_CESSATION)?;
                    c.destroy(&probe)
                }
            })
            .is_ok();
        Ok(ReplicationReport {
            origin,
            probe,
            lag,
            cleaned_up,
        })
    }
}

impl KeyProvider for KmipProvider {
    fn name(&self) -> &str {
        &self.cluster.settings.name
    }

    fn servers(&self) -> Vec<vmcrypt_core::provider::ServerStat> {
        self.cluster.stats()
    }

    fn create_kek(&self, purpose: &KeyPurpose) -> vmcrypt_core::Result<(KeyId, Kek)> {
        let name = match purpose {
            KeyPurpose::Disk(u) => format!("vmcrypt-disk-{u}"),
            KeyPurpose::Vm(u) => format!("vmcrypt-vm-{u}"),
        };
        let (uid, bytes) = self.with_failover("Create+Activate+Get", |c| {
            let uid = c.create_aes256(&name)?;
            c.activate(&uid)?;
            let bytes = c.get_aes256(&uid)?;
            Ok((uid, bytes))
        })?;
        tracing::info!(provider = %self.cluster.settings.name, key_id = %uid, key_name = %name, "KEK created on the KMS");
        Ok((KeyId::new(uid)?, Kek::from_slice(&bytes)?))
    }

    fn fetch_kek(&self, id: &KeyId) -> vmcrypt_core::Result<Kek> {
        let key_id = id.to_string();
        let get = move |c: &mut KmipClient| -> Result<Zeroizing<Vec<u8>>> {
            let state = c.state(&key_id)?;
            if state != State::Active {
                return Err(Error::KeyState {
                    server: c.server().to_string(),
                    key_id: key_id.clone(),
                    what: format!(
                        "is {} on the KMS (revoked or destroyed keys are not used)",
                        state.name()
                    ),
                });
            }
            c.get_aes256(&key_id)
        };
        let bytes = match self.cluster.settings.hedge {
            Some(delay) if self.cluster.settings.servers.len() > 1 => {
                self.cluster.hedged("Get", delay, Arc::new(get))?
            }
            _ => self.cluster.sequential("Get", true, get)?,
        };
        Kek::from_slice(&bytes)
    }
}
