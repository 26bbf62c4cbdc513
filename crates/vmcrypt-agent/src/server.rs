//! The agent: key providers and a shared key cache, in-process ([`Agent`]) and served on a
//! Unix socket ([`bind`], [`serve`]).
//!
//! The socket is created mode 0600 and every peer is checked with `SO_PEERCRED`: only the
//! agent's own user and root are served (the file mode alone does not hold if an operator
//! loosens it). A connection may send any number of requests; a malformed or oversized one
//! gets an error response and the connection is closed, and nothing a peer sends can stop the
//! agent or reach another connection.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::audit::{AuditLog, Peer, Record};
use super::cache::{CachingProvider, KeyCache};
use super::limit::{DEFAULT_IN_FLIGHT, Limiter};
use super::metrics::{AgentMetrics, Page};
use super::proto::{self, Frame, Request, Response, Status};
use vmcrypt_core::provider::{KeyId, KeyProvider, ProviderRegistry};
use vmcrypt_core::{Error, Result};

/// A provider the agent opened, with its bound on requests under way.
type Opened = (Arc<dyn KeyProvider>, Arc<Limiter>);

/// An agent: providers opened once and kept (with their connections and server health), and
/// one cache for all of them.
pub struct Agent {
    cache: KeyCache,
    open: Box<dyn ProviderRegistry + Send>,
    in_flight: usize,
    providers: Mutex<HashMap<String, Opened>>,
    audit: Option<Arc<AuditLog>>,
    metrics: Arc<AgentMetrics>,
}

impl Agent {
    /// An agent that opens providers from `open` on first use (for the CLI: from its
    /// configuration file), and keeps them.
    pub fn new(cache: KeyCache, open: impl ProviderRegistry + Send + 'static) -> Self {
        Agent {
            cache,
            open: Box::new(open),
            in_flight: DEFAULT_IN_FLIGHT,
            providers: Mutex::new(HashMap::new()),
            audit: None,
            metrics: Arc::new(AgentMetrics::default()),
        }
    }

    /// The metrics page ([`crate::metrics`]): the cache's hits, misses and size, provider
    /// latency and requests under way, and each key server's failures and demotions.
    pub fn metrics_page(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        let mut p = Page::default();
        for (name, help, v) in [
            (
                "vmcrypt_agent_cache_hits_total",
                "Key fetches the cache answered without asking a provider.",
                &m.hits,
            ),
            (
                "vmcrypt_agent_cache_misses_total",
                "Key fetches that went to the provider.",
                &m.misses,
            ),
            (
                "vmcrypt_agent_fetch_errors_total",
                "Key fetches from a provider that failed (the key was not cached).",
                &m.fetch_errors,
            ),
            (
                "vmcrypt_agent_creates_total",
                "Keys created at a provider.",
                &m.creates,
            ),
            (
                "vmcrypt_agent_create_errors_total",
                "Key creations that failed.",
                &m.create_errors,
            ),
        ] {
            p.counter(name, help, v.load(Relaxed));
        }
        p.histogram(
            "vmcrypt_agent_fetch_seconds",
            "Time to fetch a key from its provider on a cache miss, waiting for a slot included.",
            &m.fetch_seconds,
        );
        p.gauge(
            "vmcrypt_agent_in_flight",
            "Requests under way at providers now.",
            m.in_flight.load(Relaxed),
        );
        p.gauge(
            "vmcrypt_agent_keys_cached",
            "Keys held in the cache (locked memory).",
            self.cache.len() as i64,
        );
        p.gauge(
            "vmcrypt_agent_cache_capacity",
            "Keys the cache can hold.",
            self.cache.capacity() as i64,
        );
        let mut servers: Vec<(String, vmcrypt_core::provider::ServerStat)> = {
            let opened = self
                .providers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            opened
                .iter()
                .flat_map(|(name, (p, _))| p.servers().into_iter().map(|s| (name.clone(), s)))
                .collect()
        };
        servers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut f = p.family(
            "vmcrypt_kms_server_failures_total",
            "counter",
            "Operations a key server failed (unreachable, timed out, garbage), each a failover.",
        );
        for (name, s) in &servers {
            f.sample(&[("provider", name), ("server", &s.server)], s.failures);
        }
        let mut d = p.family(
            "vmcrypt_kms_server_demotions_total",
            "counter",
            "Times a key server that failed recently was tried after the others.",
        );
        for (name, s) in &servers {
            d.sample(&[("provider", name), ("server", &s.server)], s.demotions);
        }
        p.finish()
    }

    /// Records every request that touches a key (create, fetch, cache hit, forget), with the
    /// peer that made it, in `log` ([`crate::audit`]).
    pub fn audit(mut self, log: Arc<AuditLog>) -> Self {
        self.audit = Some(log);
        self
    }

    /// Whether requests are audited (the server then reads each peer's command line).
    pub fn audited(&self) -> bool {
        self.audit.is_some()
    }

    /// Sets how many requests may be under way at one provider (cache misses and creates;
    /// the rest wait in the agent). See [`super::limit`].
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// The cache.
    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// The named provider, seen through the cache. A provider that fails to open (unknown
    /// name, unreadable keystore) is not remembered: the next call tries again, so a provider
    /// added to the configuration later is found without restarting the agent.
    ///
    /// # Errors
    /// What opening the provider returned.
    pub fn provider(&self, name: &str) -> Result<CachingProvider> {
        let known = self
            .providers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        let (inner, limit) = match known {
            Some(p) => p,
            None => {
                let p = self.open.provider(name)?;
                let limit = Arc::new(Limiter::new(self.in_flight));
                self.providers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(name.to_string())
                    .or_insert((p, limit))
                    .clone()
            }
        };
        Ok(CachingProvider::new(inner, self.cache.clone())
            .limited(limit)
            .counted(self.metrics.clone()))
    }

    /// Answers one request (from `peer`, when the server knows it).
    pub fn handle(&self, req: &Request, peer: Option<&Peer>) -> Response {
        let audit = |rec: Record| {
            if let Some(log) = &self.audit {
                log.record(rec.peer(peer));
            }
        };
        let r = match req {
            Request::Fetch { provider, key_id } => {
                let r = KeyId::new(key_id.clone())
                    .and_then(|id| self.provider(provider)?.fetch_traced(&id));
                let op = match &r {
                    Ok((_, true)) => "cache-hit",
                    _ => "fetch",
                };
                audit(
                    Record::new(op)
                        .with("provider", provider.as_str())
                        .with("key_id", key_id.as_str())
                        .result(&r),
                );
                r.map(|(k, _)| Response::Key(k))
            }
            Request::Create { provider, purpose } => {
                let r = self.provider(provider).and_then(|p| p.create_kek(purpose));
                let mut rec = Record::new("create")
                    .with("provider", provider.as_str())
                    .purpose(purpose);
                if let Ok((id, _)) = &r {
                    rec = rec.with("key_id", id.as_str());
                }
                audit(rec.result(&r));
                r.map(|(id, k)| Response::Created(id.to_string(), k))
            }
            Request::Forget { provider, key_id } => {
                let n = self.cache.forget(
                    Some(provider.as_str()).filter(|s| !s.is_empty()),
                    Some(key_id.as_str()).filter(|s| !s.is_empty()),
                );
                tracing::info!(provider = %provider, key_id = %key_id, forgotten = n, "cached keys forgotten on request");
                audit(
                    Record::new("forget")
                        .with("provider", provider.as_str())
                        .with("key_id", key_id.as_str())
                        .with("forgotten", n)
                        .result(&Ok::<(), Error>(())),
                );
                Ok(Response::Forgotten(u32::try_from(n).unwrap_or(u32::MAX)))
            }
            Request::Status => Ok(Response::Status(Status {
                pid: std::process::id(),
                capacity: u32::try_from(self.cache.capacity()).unwrap_or(u32::MAX),
                dumpable: vmcrypt_secmem::process_dumpable(),
                cached: self
                    .cache
                    .entries()
                    .into_iter()
                    .map(|e| (e.provider, e.key_id))
                    .collect(),
            })),
        };
        r.unwrap_or_else(|e| Response::failed(&e))
    }
}

/// How long a connection may sit between requests before the agent closes it.
pub const IDLE: Duration = Duration::from_secs(60);
/// How long a request may take to arrive once its first byte has: the whole frame, not each
/// read (a client that trickles one byte at a time is cut off after this, however slowly it
/// sends).
pub const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once with a warning. Each has its own
/// thread with a small stack, so slow clients cost memory in proportion, never a stall of
/// the others.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections one peer user may hold at once (the agent serves its own user and root): one
/// of them cannot take every slot from the other.
pub const MAX_PER_UID: usize = MAX_CONNECTIONS / 2;
/// Stack of a connection thread: enough for a provider call (TLS to a KMS), small enough for
/// thousands.
const CONNECTION_STACK: usize = 512 * 1024;

/// Creates the agent's socket at `path`, mode 0600. A stale socket (nobody answers) is
/// replaced; a live one, or a path that is not a socket, is an error.
///
/// # Errors
/// [`Error::InvalidInput`] for a live agent or a non-socket path; [`Error::Io`].
pub fn bind(path: &Path) -> Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(Error::input(format!(
                    "an agent is already serving on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path).map_err(Error::io("remove stale socket", path))?;
        }
        Ok(_) => {
            return Err(Error::input(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            )));
        }
        Err(_) => {}
    }
    // Bound inside a fresh 0700 directory, made 0600, then renamed into place: no other user
    // can connect in between, whatever the umask (changing the umask would touch every thread
    // of a host agent that links this library).
    let parent = vmcrypt_core::fsutil::parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::input(format!("{} names no file", path.display())))?;
    let private = parent.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(Error::io("create directory", &private))?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged)
        .map_err(Error::io("bind socket", &staged))
        .and_then(|l| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
                .map_err(Error::io("chmod socket", &staged))?;
            std::fs::rename(&staged, path).map_err(Error::io("rename socket", path))?;
            Ok(l)
        });
    let _ = std::fs::remove_dir_all(&private);
    let l = bound?;
    Ok(l)
}

/// Asks a running [`serve`] loop to return: sets its flag, shuts the listening socket down
/// (which wakes a blocked `accept` even if the socket file was removed) and, for good measure,
/// connects to the socket path.
#[derive(Clone)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    path: PathBuf,
    owns_socket: bool,
    listener: Arc<UnixListener>,
}

impl Shutdown {
    /// A handle for the loop that will serve `listener`, bound at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if the listener cannot be duplicated.
    pub fn new(listener: &UnixListener, path: &Path) -> Result<Self> {
        Ok(Shutdown {
            flag: Arc::new(AtomicBool::new(false)),
            path: path.to_path_buf(),
            owns_socket: true,
            listener: Arc::new(
                listener
                    .try_clone()
                    .map_err(Error::io("duplicate socket", path))?,
            ),
        })
    }

    /// Leaves the socket as it is when the loop ends: it belongs to whoever bound it (systemd,
    /// for a socket-activated agent, which goes on listening for the next start). It is
    /// neither shut down (that would end it for every holder) nor removed; a stop wakes the
    /// loop by connecting to it.
    pub fn keep_socket(mut self) -> Self {
        self.owns_socket = false;
        self
    }

    /// Stops the loop (from a signal thread, say).
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if self.owns_socket {
            let _ = rustix::net::shutdown(&*self.listener, rustix::net::Shutdown::Both);
        }
        let _ = UnixStream::connect(&self.path);
    }

    fn stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Whether the peer may use the agent: the same effective user, or root.
fn peer_allowed(s: &UnixStream) -> std::result::Result<(u32, i32), (u32, i32)> {
    match rustix::net::sockopt::socket_peercred(s) {
        Ok(c) => {
            let uid = c.uid.as_raw();
            let me = rustix::process::geteuid().as_raw();
            if uid == me || uid == 0 {
                Ok((uid, c.pid.as_raw_nonzero().get()))
            } else {
                Err((uid, c.pid.as_raw_nonzero().get()))
            }
        }
        Err(_) => Err((u32::MAX, 0)),
    }
}

/// Serves `agent` on `listener` until `shutdown` is stopped; then removes the socket file and
/// zeroes the cache. Each connection runs on its own thread.
///
/// # Errors
/// [`Error::Io`] if accepting fails for good.
pub fn serve(listener: UnixListener, agent: Arc<Agent>, shutdown: &Shutdown) -> Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    let per_uid: Arc<Mutex<HashMap<u32, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    tracing::info!(socket = %shutdown.path.display(), "agent serving");
    for conn in listener.incoming() {
        if shutdown.stopped() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(_) if shutdown.stopped() => break,
            Err(e) => {
                tracing::warn!("agent: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let (uid, pid) = match peer_allowed(&stream) {
            Ok(p) => p,
            Err((uid, pid)) => {
                tracing::warn!(uid, pid, "agent: refused a peer of another user");
                let body = Response::Failed {
                    kind: proto::FailKind::Other,
                    provider: String::new(),
                    message: "permission denied: this agent serves its own user and root".into(),
                }
                .encode();
                let mut s = stream;
                let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = proto::write_frame(&mut s, &body);
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("agent: {MAX_CONNECTIONS} connections open; closing a new one");
            continue;
        }
        let admitted = {
            let mut m = per_uid.lock().unwrap_or_else(PoisonError::into_inner);
            let n = m.entry(uid).or_insert(0);
            (*n < MAX_PER_UID).then(|| *n += 1).is_some()
        };
        if !admitted {
            active.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                uid,
                "agent: uid {uid} holds {MAX_PER_UID} connections; closing a new one"
            );
            continue;
        }
        let release = {
            let active = active.clone();
            let per_uid = per_uid.clone();
            move || {
                active.fetch_sub(1, Ordering::SeqCst);
                let mut m = per_uid.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(n) = m.get_mut(&uid) {
                    *n = n.saturating_sub(1);
                }
            }
        };
        let agent = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("vmcrypt-agent-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                // Read once per connection, and only for the audit log.
                let peer = agent.audited().then(|| Peer::of(uid, pid));
                connection(stream, &agent, uid, peer.as_ref());
                release();
            });
        if let Err(e) = spawned {
            tracing::warn!("agent: cannot start a connection thread: {e}");
            // The closure (and with it the release) never ran: give the slots back here.
            active.fetch_sub(1, Ordering::SeqCst);
            let mut m = per_uid.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(&uid) {
                *n = n.saturating_sub(1);
            }
        }
    }
    if shutdown.owns_socket {
        let _ = std::fs::remove_file(&shutdown.path);
    }
    agent.cache().clear();
    tracing::info!("agent stopped; cache zeroed");
    Ok(())
}

/// A connection's reader: [`IDLE`] to wait for a request's first byte, then
/// [`FRAME_DEADLINE`] for the rest of the frame, whatever the number of reads.
struct Deadlined<'a> {
    s: &'a UnixStream,
    deadline: Option<std::time::Instant>,
}

impl std::io::Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timeout = match self.deadline {
            None => IDLE,
            Some(d) => d
                .checked_duration_since(std::time::Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or(std::io::ErrorKind::TimedOut)?,
        };
        self.s.set_read_timeout(Some(timeout))?;
        let n = std::io::Read::read(&mut self.s, buf)?;
        if n > 0 && self.deadline.is_none() {
            self.deadline = Some(std::time::Instant::now() + FRAME_DEADLINE);
        }
        Ok(n)
    }
}

/// One connection: requests until the peer closes, goes idle, is too slow to send a request,
/// or sends something malformed.
fn connection(mut s: UnixStream, agent: &Agent, uid: u32, peer: Option<&Peer>) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut r = Deadlined {
            s: &s,
            deadline: None,
        };
        let body = match proto::read_frame(&mut r, proto::MAX_REQUEST) {
            Ok(Frame::Body(b)) => b,
            Ok(Frame::Closed) => return,
            Ok(Frame::TooLarge(n)) => {
                tracing::warn!(uid, "agent: refused a request of {n} bytes");
                reply_error(
                    &mut s,
                    &format!("request of {n} bytes; the limit is {}", proto::MAX_REQUEST),
                );
                return;
            }
            Err(e) => {
                tracing::debug!(uid, "agent: connection ended: {e}");
                return;
            }
        };
        let req = match Request::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(uid, "agent: {e}");
                reply_error(&mut s, &e.to_string());
                return;
            }
        };
        let resp = agent.handle(&req, peer);
        if proto::write_frame(&mut s, &resp.encode()).is_err() {
            return;
        }
    }
}

fn reply_error(s: &mut UnixStream, message: &str) {
    let body = Response::Failed {
        kind: proto::FailKind::InvalidInput,
        provider: String::new(),
        message: message.to_string(),
    }
    .encode();
    let _ = proto::write_frame(s, &body);
    let _ = s.flush();
}

/// The agent as the registry of the disk and VM jobs of this library: every provider seen
/// through the cache.
impl ProviderRegistry for Agent {
    fn provider(&self, name: &str) -> Result<Arc<dyn KeyProvider>> {
        Ok(Arc::new(Agent::provider(self, name)?))
    }
}
