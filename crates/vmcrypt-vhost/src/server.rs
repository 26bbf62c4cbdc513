//! Serving one frontend (QEMU) after another on a Unix socket, until stopped.
//!
//! Each connection gets a fresh vhost-user daemon (and so fresh vring state and worker
//! threads) over the same device: a QEMU that is restarted, or that dies, reconnects to a
//! backend that kept the disk, its lock and its key. A guest reboot happens inside one
//! connection (the frontend stops and restarts the vrings).

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmcrypt_core::EncryptedDisk;
use vmcrypt_serve::Listener;

use crate::backend::BlkBackend;
use crate::config::Geometry;

/// How the device is offered.
#[derive(Debug, Clone)]
pub struct VhostOptions {
    /// Virtqueues (one worker thread each); 1 to 16.
    pub queues: u16,
    /// Descriptors per virtqueue: a power of two, 2 to 1024.
    pub queue_size: u16,
    /// Refuse writes (the guest sees a read-only disk).
    pub read_only: bool,
    /// The serial GET_ID returns (up to 20 bytes; default: the disk's file name).
    pub serial: Option<String>,
    /// Helper threads that move the second half of large requests (`Some(0)`: none, each
    /// queue's worker moves all of its requests; `None`: one per queue, as more never help:
    /// a queue hands out one half at a time).
    pub io_threads: Option<usize>,
}

impl Default for VhostOptions {
    fn default() -> VhostOptions {
        VhostOptions {
            queues: vmcrypt_core::worker_threads(None).clamp(1, 16) as u16,
            queue_size: 128,
            read_only: false,
            serial: None,
            io_threads: None,
        }
    }
}

/// What a backend did, for its log line at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VhostStats {
    /// Frontend connections served.
    pub connections: u64,
    /// Requests carried out or refused.
    pub requests: u64,
    /// Bytes read by the guest.
    pub bytes_read: u64,
    /// Bytes written by the guest.
    pub bytes_written: u64,
    /// Requests answered with an I/O error (refused, or failed on the disk).
    pub errors: u64,
    /// Reads and writes that took the copying path, in whole (not whole data units: a guest
    /// whose logical block size is smaller than the disk's unit sends them) or for a piece
    /// (guest memory that is not one mapping).
    pub copied: u64,
    /// Writes made durable (fdatasync) before they completed, because the guest switched its
    /// write cache to write-through (`/sys/block/vdX/cache_type`).
    pub write_through: u64,
    /// Chains that could not be answered at all (no status byte).
    pub broken: u64,
    /// Requests per virtqueue.
    pub per_queue: Vec<u64>,
}

/// A vhost-user-blk backend over one encrypted disk.
pub struct VhostUserBlk {
    backend: Arc<BlkBackend>,
    disk: Arc<EncryptedDisk>,
}

impl std::fmt::Debug for VhostUserBlk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserBlk")
            .field("disk", &self.disk)
            .finish_non_exhaustive()
    }
}

/// Where the accept loop is, for the thread that watches the stop flag.
enum Phase {
    Accepting,
    Connected(ShutdownHandle),
    Done,
}

impl VhostUserBlk {
    /// A device for `disk`.
    ///
    /// # Errors
    /// `InvalidInput` for queue counts or sizes out of range.
    pub fn new(disk: Arc<EncryptedDisk>, opts: &VhostOptions) -> io::Result<VhostUserBlk> {
        let bad = |m: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, m.to_string()));
        if !(1..=16).contains(&opts.queues) {
            return bad("--queues must be 1 to 16");
        }
        if !(2..=1024).contains(&opts.queue_size) || !opts.queue_size.is_power_of_two() {
            return bad("--queue-size must be a power of two from 2 to 1024");
        }
        let geo = Geometry {
            bytes: disk.len() / 512 * 512,
            unit: disk.unit_size() as u32,
            queues: opts.queues,
            queue_size: opts.queue_size,
            read_only: opts.read_only,
        };
        let serial = opts.serial.clone().unwrap_or_else(|| {
            disk.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        Ok(VhostUserBlk {
            backend: Arc::new(BlkBackend::new(
                Arc::clone(&disk),
                geo,
                &serial,
                opts.io_threads.unwrap_or(usize::from(opts.queues)),
            )),
            disk,
        })
    }

    /// Serves frontends on `listener` (a Unix socket), one after another, until `stop` is
    /// set; then flushes the disk.
    ///
    /// # Errors
    /// A TCP listener; accept or daemon errors; the final flush.
    pub fn serve(&self, listener: &Listener, stop: &AtomicBool) -> io::Result<VhostStats> {
        let (unix, path) = match listener {
            Listener::Unix(l, p) => (l.try_clone()?, p.clone()),
            Listener::Tcp(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "vhost-user needs a Unix socket path",
                ));
            }
        };
        unix.set_nonblocking(false)?;
        let mut vl = vhost::vhost_user::Listener::from(unix);
        let phase = Mutex::new(Phase::Accepting);
        let mut connections = 0u64;
        let result = std::thread::scope(|s| {
            s.spawn(|| watch(stop, &phase, &path));
            let r = self.accept_loop(&mut vl, stop, &phase, &mut connections);
            *phase.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Done;
            r
        });
        let flushed = self.disk.flush().map_err(io::Error::other);
        result?;
        flushed?;
        let mut stats = self.stats();
        stats.connections = connections;
        Ok(stats)
    }

    /// What the backend has done so far (while it serves, for metrics): every counter but
    /// `connections`, which [`VhostUserBlk::serve`]'s result has.
    pub fn stats(&self) -> VhostStats {
        let c = &self.backend.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        VhostStats {
            connections: 0,
            requests: get(&c.requests),
            bytes_read: get(&c.bytes_read),
            bytes_written: get(&c.bytes_written),
            errors: get(&c.errors),
            copied: get(&c.copied),
            write_through: get(&c.write_through),
            broken: get(&c.broken),
            per_queue: c.per_queue.iter().map(get).collect(),
        }
    }

    fn accept_loop(
        &self,
        vl: &mut vhost::vhost_user::Listener,
        stop: &AtomicBool,
        phase: &Mutex<Phase>,
        connections: &mut u64,
    ) -> io::Result<()> {
        let daemon_err = |e: vhost_user_backend::Error| io::Error::other(e.to_string());
        while !stop.load(Ordering::Relaxed) {
            let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let mut daemon =
                VhostUserDaemon::new("vmcrypt-vhost".into(), Arc::clone(&self.backend), mem)
                    .map_err(daemon_err)?;
            // Blocks until a frontend connects (or the watcher wakes it to stop).
            daemon.start(vl).map_err(daemon_err)?;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            *connections += 1;
            tracing::info!("frontend connected");
            if let Some(h) = daemon.shutdown_handle() {
                *phase.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Connected(h);
            }
            let ended = daemon.wait();
            *phase.lock().unwrap_or_else(PoisonError::into_inner) = Phase::Accepting;
            match ended {
                Ok(()) => tracing::info!("frontend disconnected"),
                Err(e) => tracing::warn!("frontend connection ended: {e}"),
            }
            // Dropping the daemon stops and joins its vring workers.
            drop(daemon);
        }
        Ok(())
    }
}

/// Watches `stop`: ends the connection being served, or wakes the accept with a connection
/// of its own.
fn watch(stop: &AtomicBool, phase: &Mutex<Phase>, path: &PathBuf) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let p = phase.lock().unwrap_or_else(PoisonError::into_inner);
        match &*p {
            Phase::Done => return,
            _ if !stop.load(Ordering::Relaxed) => {}
            Phase::Connected(h) => h.shutdown(),
            Phase::Accepting => {
                drop(p);
                let _ = UnixStream::connect(path);
            }
        }
    }
}
