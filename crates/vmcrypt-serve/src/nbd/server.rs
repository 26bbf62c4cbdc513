//! The NBD server: accepts clients on a [`Listener`], gives each connection a thread for its
//! handshake and its requests, and shares one pool of workers (the disk I/O and XTS, on every
//! core) among all of them. [`NbdServer::serve`] returns when the stop flag is set and every
//! request read so far has been answered, after a final flush.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use vmcrypt_core::disk::MIN_BLOCK;
use vmcrypt_core::{EncryptedDisk, worker_threads};

use super::negotiate::{Offer, Outcome, negotiate};
use super::session::{self, Conn, Counters, Ctx, Task, WorkerBufs};
use super::wire::{Export, MAX_PAYLOAD};
use crate::buffers::Buffers;
use crate::deadline::TICK;
use crate::endpoint::{Listener, Stream};

/// How long a client may stall in the middle of a message, by default.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// Clients served at once, by default; more are refused (their connection is closed).
pub const DEFAULT_MAX_CLIENTS: usize = 64;

/// What a server did, for its log line at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServeStats {
    /// Clients that reached the transmission phase.
    pub clients: u64,
    /// Requests carried out.
    pub requests: u64,
    /// Bytes read by clients.
    pub bytes_read: u64,
    /// Bytes written by clients.
    pub bytes_written: u64,
    /// Requests that failed on the disk.
    pub errors: u64,
}

/// An NBD export of one encrypted disk; see the module docs.
#[derive(Debug)]
pub struct NbdServer {
    disk: Arc<EncryptedDisk>,
    offer: Offer,
    stall: Duration,
    max_clients: usize,
    workers: usize,
    budget: usize,
    counters: Counters,
    served: AtomicUsize,
}

impl NbdServer {
    /// An export of `disk` named `name` (default: the disk's file name). The disk may be
    /// served over other protocols at the same time (it is shared).
    pub fn new(disk: Arc<EncryptedDisk>, name: Option<String>, read_only: bool) -> NbdServer {
        let name = name.unwrap_or_else(|| {
            disk.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let offer = Offer {
            name,
            size: disk.len(),
            block: disk.unit_size() as u32,
            read_only,
        };
        NbdServer {
            disk,
            offer,
            stall: DEFAULT_STALL,
            max_clients: DEFAULT_MAX_CLIENTS,
            workers: (2 * worker_threads(None)).max(4),
            // The largest write, and room beside it for many small ones.
            budget: MAX_PAYLOAD as usize + (16 << 20),
            counters: Counters::default(),
            served: AtomicUsize::new(0),
        }
    }

    /// How long a client may stall in the middle of a request or of the handshake before it
    /// is cut off ([`DEFAULT_STALL`]).
    pub fn stall_deadline(mut self, d: Duration) -> NbdServer {
        self.stall = d.max(TICK);
        self
    }

    /// Clients served at once ([`DEFAULT_MAX_CLIENTS`]).
    pub fn max_clients(mut self, n: usize) -> NbdServer {
        self.max_clients = n.max(1);
        self
    }

    /// Worker threads (default: twice the cores, at least 4: they wait on the disk and on
    /// sockets as well as encrypt).
    pub fn workers(mut self, n: usize) -> NbdServer {
        self.workers = n.max(1);
        self
    }

    /// What is offered to clients.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// The disk, to close it (and release its lock) once every holder has dropped it.
    pub fn into_disk(self) -> Arc<EncryptedDisk> {
        self.disk
    }

    /// Serves clients on `listener` until `stop` is set; then reads no more requests, answers
    /// those read, closes the connections and flushes the disk.
    ///
    /// # Errors
    /// The listener cannot be made non-blocking, or the final flush fails.
    pub fn serve(&self, listener: &Listener, stop: &AtomicBool) -> io::Result<ServeStats> {
        listener.set_nonblocking()?;
        let counters = &self.counters;
        let queue = Queue::default();
        let buffers = Buffers::new(self.budget);
        let export = Export {
            size: self.offer.size,
            // Requests in 512-byte blocks are served (partial units read-modify-written), as
            // the protocol asks of clients that did not learn the block size.
            block: MIN_BLOCK as u32,
            read_only: self.offer.read_only,
        };
        let clients = AtomicUsize::new(0);
        let served = &self.served;
        let submit = |t: Task| queue.push(t);
        let ctx = Ctx {
            export,
            stall: self.stall,
            stop,
            buffers: &buffers,
            submit: &submit,
        };
        std::thread::scope(|scope| -> io::Result<()> {
            let mut workers = Vec::new();
            for i in 0..self.workers {
                let (queue, disk) = (&queue, &*self.disk);
                let w = std::thread::Builder::new()
                    .name(format!("nbd-worker-{i}"))
                    .spawn_scoped(scope, move || {
                        let mut bufs = WorkerBufs::new();
                        while let Some(task) = queue.pop() {
                            session::execute(task, disk, &mut bufs, counters);
                        }
                    })?;
                workers.push(w);
            }
            let mut sessions = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (stream, peer) = match listener.accept() {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        std::thread::sleep(TICK / 2);
                        continue;
                    }
                    Err(e) => {
                        // Out of descriptors or the like: keep serving the others.
                        tracing::warn!("accept failed: {e}");
                        std::thread::sleep(TICK);
                        continue;
                    }
                };
                sessions.retain(|s: &std::thread::ScopedJoinHandle<'_, ()>| !s.is_finished());
                if clients.load(Ordering::Relaxed) >= self.max_clients {
                    tracing::warn!(client = %peer, "refused: {} clients already", self.max_clients);
                    stream.shutdown();
                    continue;
                }
                clients.fetch_add(1, Ordering::Relaxed);
                let (ctx, clients) = (&ctx, &clients);
                let spawned = std::thread::Builder::new()
                    .name("nbd-client".into())
                    .spawn_scoped(scope, move || {
                        if self.session(stream, peer, ctx) {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        clients.fetch_sub(1, Ordering::Relaxed);
                    });
                match spawned {
                    Ok(h) => sessions.push(h),
                    Err(e) => {
                        clients.fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!("cannot start a thread for a client: {e}");
                    }
                }
            }
            let draining = Instant::now();
            for s in sessions {
                let _ = s.join();
            }
            queue.close();
            for w in workers {
                let _ = w.join();
            }
            tracing::info!("drained in {:.3} s", draining.elapsed().as_secs_f64());
            Ok(())
        })?;
        self.disk.flush().map_err(io::Error::other)?;
        Ok(self.stats())
    }

    /// What the server has done so far (while it serves, for metrics; the totals at the end).
    pub fn stats(&self) -> ServeStats {
        let c = &self.counters;
        ServeStats {
            clients: self.served.load(Ordering::Relaxed) as u64,
            requests: c.requests.load(Ordering::Relaxed),
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }

    /// One connection: handshake, then requests. Returns whether it reached transmission.
    fn session(&self, stream: Stream, peer: String, ctx: &Ctx<'_>) -> bool {
        let mut stream = stream;
        let ready = stream
            .set_read_timeout(Some(TICK))
            .and_then(|()| stream.set_write_timeout(Some(self.stall)));
        if let Err(e) = ready {
            tracing::warn!(client = %peer, "cannot set up the connection: {e}");
            return false;
        }
        let structured = match negotiate(&mut stream, &self.offer, self.stall, ctx.stop) {
            Ok(Outcome::Transmission { structured }) => structured,
            Ok(Outcome::Left) => return false,
            Err(e) => {
                tracing::warn!(client = %peer, "handshake failed: {e}");
                stream.shutdown();
                return false;
            }
        };
        tracing::info!(client = %peer, structured, "client connected");
        let conn = match Conn::new(&stream, structured, peer, self.stall) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!("cannot set up the connection: {e}");
                return false;
            }
        };
        session::read_requests(stream, &conn, ctx);
        tracing::info!(client = %conn.peer, "client disconnected");
        true
    }
}

/// The workers' queue: every connection's requests, in the order they were read.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<(VecDeque<Task>, bool)>,
    ready: Condvar,
}

impl Queue {
    fn push(&self, t: Task) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.0.push_back(t);
        drop(s);
        self.ready.notify_one();
    }

    /// The next task; `None` once closed and empty.
    fn pop(&self) -> Option<Task> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(t) = s.0.pop_front() {
                return Some(t);
            }
            if s.1 {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.ready.notify_all();
    }
}
