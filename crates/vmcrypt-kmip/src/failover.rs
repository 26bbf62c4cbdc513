//! How a cluster of servers is walked: in the operator's order, with three refinements for a
//! long-running client such as the host agent (docs/kmip.md, docs/agent.md):
//!
//! - **Connection reuse**: after a successful operation the connection is kept (a few per
//!   server) and used for the next one; a kept connection that fails is retried once on a new
//!   connection to the same server before that server counts as failed.
//! - **Demotion** (reads only): a server that was unreachable is tried after the others for a
//!   while (`demote`), so that a dead server costs its timeout once, not on every fetch.
//! - **Hedging** (reads only): when the server being asked has not answered after `hedge`,
//!   the next one is asked too; the first good answer wins. A hung first server then costs
//!   the hedge delay instead of the whole timeout.
//!
//! Creates never hedge and never reorder: a key must be created once, on the server the
//! operator put first, and two servers must not both create it.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::client::KmipClient;
use crate::error::{Error, ErrorKind, Result};
use crate::settings::{KmipSettings, MAX_CONNECT_TIMEOUT, split_host};
use crate::transport::{Timeouts, TlsTransport};

/// An operation on one connection, shareable with the hedge threads.
pub(crate) type Operation<T> = dyn Fn(&mut KmipClient) -> Result<T> + Send + Sync;

/// Connections kept per server.
const POOL_PER_SERVER: usize = 8;

/// A cluster's servers with the state that outlives one operation.
pub(crate) struct Cluster {
    pub settings: KmipSettings,
    tls: Arc<ClientConfig>,
    idle: Mutex<HashMap<String, Vec<KmipClient>>>,
    failed_at: Mutex<HashMap<String, Instant>>,
    /// Per server: (failures, demotions), for metrics.
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether an error says the server itself is unwell (as opposed to its answer being no).
fn unwell(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unreachable | ErrorKind::Protocol)
}

impl Cluster {
    pub fn new(settings: KmipSettings, tls: Arc<ClientConfig>) -> Self {
        Cluster {
            settings,
            tls,
            idle: Mutex::new(HashMap::new()),
            failed_at: Mutex::new(HashMap::new()),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Each server's failures and demotions so far, in the operator's order.
    pub fn stats(&self) -> Vec<vmcrypt_core::provider::ServerStat> {
        let counts = lock(&self.counts);
        self.settings
            .servers
            .iter()
            .map(|s| {
                let (failures, demotions) = counts.get(s).copied().unwrap_or_default();
                vmcrypt_core::provider::ServerStat {
                    server: s.clone(),
                    failures,
                    demotions,
                }
            })
            .collect()
    }

    /// A new TLS connection with the KMIP version negotiated.
    pub fn connect(&self, server: &str) -> Result<KmipClient> {
        let name = match &self.settings.server_name {
            Some(n) => n.clone(),
            None => split_host(server)?.to_string(),
        };
        let timeouts = Timeouts {
            connect: self.settings.timeout.min(MAX_CONNECT_TIMEOUT),
            response: self.settings.timeout,
        };
        let t = TlsTransport::connect(server, &name, self.tls.clone(), timeouts)?;
        let mut c = KmipClient::new(Box::new(t));
        c.negotiate()?;
        Ok(c)
    }

    /// Runs `f` on `server`: on a kept connection if there is one (retried once on a new
    /// connection if the kept one fails), else on a new one. Keeps the connection on success.
    fn attempt<T>(
        &self,
        server: &str,
        f: &mut impl FnMut(&mut KmipClient) -> Result<T>,
    ) -> Result<T> {
        let kept = if self.settings.reuse {
            lock(&self.idle).get_mut(server).and_then(Vec::pop)
        } else {
            None
        };
        if let Some(mut c) = kept {
            match f(&mut c) {
                Ok(v) => {
                    self.keep(server, c);
                    return Ok(v);
                }
                Err(e) if unwell(&e) => {
                    tracing::debug!(
                        server,
                        "kept connection failed ({}); reconnecting",
                        vmcrypt_core::error_line(&e)
                    );
                }
                Err(e) => {
                    // A definite answer: the connection is sound.
                    self.keep(server, c);
                    return Err(e);
                }
            }
        }
        let mut c = self.connect(server)?;
        let r = f(&mut c);
        if r.is_ok() || r.as_ref().err().is_some_and(|e| !unwell(e)) {
            self.keep(server, c);
        }
        r
    }

    fn keep(&self, server: &str, c: KmipClient) {
        if !self.settings.reuse {
            return;
        }
        let mut idle = lock(&self.idle);
        let v = idle.entry(server.to_string()).or_default();
        if v.len() < POOL_PER_SERVER {
            v.push(c);
        }
    }

    fn note(&self, server: &str, result: std::result::Result<(), &Error>) {
        let mut f = lock(&self.failed_at);
        match result {
            Ok(()) => {
                f.remove(server);
            }
            Err(e) if unwell(e) => {
                f.insert(server.to_string(), Instant::now());
                lock(&self.counts).entry(server.to_string()).or_default().0 += 1;
            }
            Err(_) => {}
        }
    }

    /// The servers in the order to try: the operator's, with recently unreachable servers
    /// moved to the end (in the operator's order among themselves) when `demote` is on.
    pub fn order(&self, demote: bool) -> Vec<String> {
        let servers = &self.settings.servers;
        let Some(window) = self.settings.demote.filter(|_| demote) else {
            return servers.clone();
        };
        let failed = lock(&self.failed_at);
        let recent = |s: &String| failed.get(s).is_some_and(|t| t.elapsed() < window);
        let (mut healthy, late): (Vec<String>, Vec<String>) =
            servers.iter().cloned().partition(|s| !recent(s));
        if !late.is_empty() {
            tracing::debug!(provider = %self.settings.name, demoted = ?late, "recently failed servers are tried last");
            let mut counts = lock(&self.counts);
            for s in &late {
                counts.entry(s.clone()).or_default().1 += 1;
            }
        }
        healthy.extend(late);
        healthy
    }

    /// Tries the servers one after another (see the module docs).
    pub fn sequential<T>(
        &self,
        what: &str,
        demote: bool,
        mut f: impl FnMut(&mut KmipClient) -> Result<T>,
    ) -> Result<T> {
        let mut failures = Vec::new();
        for server in self.order(demote) {
            let started = Instant::now();
            match self.attempt(&server, &mut f) {
                Ok(v) => {
                    self.note(&server, Ok(()));
                    if !failures.is_empty() {
                        tracing::info!(provider = %self.settings.name, server = %server, operation = what, "served after {} failed server(s)", failures.len());
                    }
                    return Ok(v);
                }
                Err(e) => {
                    self.note(&server, Err(&e));
                    self.log_failure(what, &server, started, &e);
                    failures.push((server, e));
                }
            }
        }
        Err(Error::AllFailed {
            provider: self.settings.name.clone(),
            failures,
        })
    }

    fn log_failure(&self, what: &str, server: &str, started: Instant, e: &Error) {
        tracing::warn!(
            "key provider {:?}: {what} on {server} failed after {:.3} s, trying the next server: {}",
            self.settings.name,
            started.elapsed().as_secs_f64(),
            vmcrypt_core::error_line(e)
        );
    }

    /// Asks the servers in order, asking the next one also whenever the latest has not
    /// answered within `delay`, or at once when one fails. The first success wins; attempts
    /// still under way finish in the background (each is bounded by the response timeout)
    /// and their answers are dropped.
    pub fn hedged<T: Send + 'static>(
        self: &Arc<Self>,
        what: &'static str,
        delay: Duration,
        f: Arc<Operation<T>>,
    ) -> Result<T> {
        let order = self.order(true);
        let (tx, rx) = mpsc::channel::<(usize, Instant, Result<T>)>();
        let launch = |i: usize| {
            let cluster = self.clone();
            let server = order[i].clone();
            let (f2, tx2) = (f.clone(), tx.clone());
            let started = Instant::now();
            let spawned = std::thread::Builder::new()
                .name("vmcrypt-kmip-hedge".into())
                .spawn(move || {
                    let r = cluster.attempt(&server, &mut |c: &mut KmipClient| f2(c));
                    let _ = tx2.send((i, started, r));
                });
            if let Err(e) = spawned {
                // No thread: run it here (no hedging for this one, but no lost request).
                tracing::warn!(
                    "cannot start a hedge thread ({e}); asking {} inline",
                    order[i]
                );
                let r = self.attempt(&order[i], &mut |c: &mut KmipClient| f(c));
                let _ = tx.send((i, started, r));
            }
        };
        let mut next = 0;
        let mut pending = 0;
        let mut failures: Vec<Option<(String, Error)>> = (0..order.len()).map(|_| None).collect();
        launch(next);
        next += 1;
        pending += 1;
        loop {
            let got = if next < order.len() {
                match rx.recv_timeout(delay) {
                    Ok(v) => Some(v),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else if pending > 0 {
                match rx.recv() {
                    Ok(v) => Some(v),
                    Err(_) => break,
                }
            } else {
                break;
            };
            match got {
                None => {
                    tracing::info!(
                        provider = %self.settings.name,
                        slow = %order[next - 1],
                        also = %order[next],
                        "hedging: no answer after {} ms, also asking the next server",
                        delay.as_millis()
                    );
                    launch(next);
                    next += 1;
                    pending += 1;
                }
                Some((i, _, Ok(v))) => {
                    self.note(&order[i], Ok(()));
                    if i > 0 {
                        tracing::info!(provider = %self.settings.name, server = %order[i], operation = what, "served by server {} of the order (hedged)", i + 1);
                    }
                    return Ok(v);
                }
                Some((i, started, Err(e))) => {
                    pending -= 1;
                    self.note(&order[i], Err(&e));
                    self.log_failure(what, &order[i], started, &e);
                    failures[i] = Some((order[i].clone(), e));
                    if next < order.len() {
                        launch(next);
                        next += 1;
                        pending += 1;
                    }
                }
            }
        }
        Err(Error::AllFailed {
            provider: self.settings.name.clone(),
            failures: failures.into_iter().flatten().collect(),
        })
    }
}
