//! The virtio-blk device behind vhost-user: one worker thread per virtqueue (queues never
//! wait for each other), each with its own buffers. A read is one `pread` of ciphertext into
//! the queue's sealed buffer and one XTS pass from it straight into guest memory; a write is
//! one XTS pass from guest memory into that buffer and one `pwrite`. Guest memory is never
//! modified by a write and the guest never sees ciphertext. Requests that are not whole data
//! units (a 512-byte write on a 4096-byte-unit disk) or whose guest pieces split a unit take
//! the copying path, which read-modify-writes. A FLUSH is an fdatasync before the used ring
//! says the request is done.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryMmap,
};
use vmcrypt_core::{EncryptedDisk, Scratch, Sealed};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use zeroize::Zeroizing;

use crate::config::{CONFIG_LEN, Geometry, WCE_OFFSET, config_slice};
use crate::request::{
    ID_LEN, Kind, Layout, Refused, Request, Seg, Span, ZeroRange, status, zero_ranges,
};

type Memory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Bytes moved between the disk and guest memory at a time, out of place.
const PIECE: usize = 1 << 20;

/// Out-of-place pieces at least this long are cut in two halves, moved at once by the queue's
/// worker and a helper thread: the `pread` and the cipher pass of one large request then use
/// two cores. A guest's sequential I/O has one request in flight, so without this one core
/// idles while the other reads and deciphers (see docs/performance.md). Below this size the
/// hand-off to the helper costs more than half the work saves.
const SPLIT: usize = 256 << 10;

/// Bytes at a time on the copying path (requests that are not whole units).
const SLOW_PIECE: usize = 128 << 10;

/// What the device did, for the log line at exit.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Reads and writes that took the copying path.
    pub(crate) copied: AtomicU64,
    /// Writes made durable before they completed (the guest turned its write cache off).
    pub(crate) write_through: AtomicU64,
    pub(crate) broken: AtomicU64,
    /// Requests per virtqueue.
    pub(crate) per_queue: Vec<AtomicU64>,
}

/// One step of a read or write: `len` bytes from byte `skip` of the request's data `span`,
/// at disk offset `at`.
#[derive(Clone, Copy)]
struct Piece<'a> {
    span: Span<'a>,
    skip: u64,
    len: usize,
    at: u64,
}

impl<'a> Piece<'a> {
    /// The first `n` bytes and the rest.
    fn split(self, n: usize) -> (Piece<'a>, Piece<'a>) {
        let rest = Piece {
            span: self.span,
            skip: self.skip + n as u64,
            len: self.len - n,
            at: self.at + n as u64,
        };
        (Piece { len: n, ..self }, rest)
    }
}

/// The `n` helper threads of [`BlkBackend::direct`], asleep unless a large request is being
/// moved. Named so that `top -H` tells them apart.
fn helpers(n: usize) -> Option<rayon::ThreadPool> {
    if n == 0 {
        return None;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("vhost-xts-{i}"))
        .build()
        .map_err(|e| tracing::warn!("large requests move on one thread: no helper threads: {e}"))
        .ok()
}

/// A queue's own memory: the ciphertext buffers of the out-of-place path (one per half of a
/// piece), the plaintext buffer and write scratch of the copying path, and the chain being
/// served.
struct QueueBufs {
    sealed: [Sealed; 2],
    data: Zeroizing<Vec<u8>>,
    scratch: Scratch,
    segs: Vec<Seg>,
    /// Descriptors a chain may have: the queue size (a longer chain loops or is hostile).
    max_segs: usize,
    zeros: Vec<ZeroRange>,
}

/// The device; shared (as `Arc`) by the vhost-user daemon of each frontend connection.
pub(crate) struct BlkBackend {
    disk: Arc<EncryptedDisk>,
    geo: Geometry,
    serial: [u8; ID_LEN],
    writeback: AtomicBool,
    event_idx: AtomicBool,
    mem: Mutex<Option<Memory>>,
    queues: Vec<Mutex<QueueBufs>>,
    /// Threads that move the second half of large pieces; `None` (every piece moved by the
    /// queue's worker alone) if they could not be started.
    helpers: Option<rayon::ThreadPool>,
    pub(crate) counters: Counters,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BlkBackend {
    /// A device over `disk`, with `io_threads` helpers for large requests (0: none).
    pub(crate) fn new(
        disk: Arc<EncryptedDisk>,
        geo: Geometry,
        serial: &str,
        io_threads: usize,
    ) -> BlkBackend {
        let mut id = [0u8; ID_LEN];
        let s = serial.as_bytes();
        id[..s.len().min(ID_LEN)].copy_from_slice(&s[..s.len().min(ID_LEN)]);
        let queues = (0..geo.queues)
            .map(|_| {
                Mutex::new(QueueBufs {
                    sealed: [Sealed::new(PIECE / 2), Sealed::new(PIECE / 2)],
                    data: Zeroizing::new(vec![0u8; SLOW_PIECE]),
                    scratch: Scratch::new(SLOW_PIECE),
                    segs: Vec::with_capacity(usize::from(geo.queue_size)),
                    max_segs: usize::from(geo.queue_size),
                    zeros: Vec::new(),
                })
            })
            .collect();
        BlkBackend {
            helpers: helpers(io_threads),
            disk,
            geo,
            serial: id,
            writeback: AtomicBool::new(true),
            event_idx: AtomicBool::new(false),
            mem: Mutex::new(None),
            queues,
            counters: Counters {
                requests: AtomicU64::new(0),
                bytes_read: AtomicU64::new(0),
                bytes_written: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                copied: AtomicU64::new(0),
                write_through: AtomicU64::new(0),
                broken: AtomicU64::new(0),
                per_queue: (0..geo.queues).map(|_| AtomicU64::new(0)).collect(),
            },
        }
    }

    /// Serves every available chain of queue `q`, then signals the guest once.
    pub(crate) fn process(&self, vring: &VringRwLock, q: usize) -> io::Result<()> {
        let Some(atomic) = lock(&self.mem).clone() else {
            return Ok(());
        };
        let Some(bufs) = self.queues.get(q) else {
            return Ok(());
        };
        let mut bufs = lock(bufs);
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let qerr = |e: virtio_queue::Error| io::Error::other(e.to_string());
        loop {
            if event_idx {
                vring.disable_notification().map_err(qerr)?;
            }
            let mut used = false;
            loop {
                let mem = atomic.memory();
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                if let Some(c) = self.counters.per_queue.get(q) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                bufs.segs.clear();
                let cap = bufs.max_segs;
                let mut too_long = false;
                for d in chain {
                    if bufs.segs.len() == cap {
                        too_long = true;
                        break;
                    }
                    bufs.segs.push(Seg {
                        addr: d.addr().0,
                        len: d.len(),
                        write: d.is_write_only(),
                    });
                }
                let len = if too_long {
                    self.broken("a descriptor chain longer than the queue");
                    0
                } else {
                    self.serve(&mem, &mut bufs)
                };
                vring.add_used(head, len).map_err(qerr)?;
                used = true;
            }
            if used && vring.needs_notification().map_err(qerr)? {
                vring.signal_used_queue()?;
            }
            if !event_idx || !vring.enable_notification().map_err(qerr)? {
                return Ok(());
            }
        }
    }

    fn broken(&self, why: &str) {
        self.counters.broken.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("guest request not answered: {why}");
    }

    /// Serves the chain in `bufs.segs`; returns the bytes written into guest memory (the used
    /// length).
    fn serve(&self, mem: &GuestMemoryMmap, bufs: &mut QueueBufs) -> u32 {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let segs = std::mem::take(&mut bufs.segs);
        let used = self.serve_segs(mem, &segs, bufs);
        bufs.segs = segs;
        used
    }

    fn serve_segs(&self, mem: &GuestMemoryMmap, segs: &[Seg], bufs: &mut QueueBufs) -> u32 {
        let layout = match Layout::of(segs) {
            Ok(l) => l,
            Err(Refused::NoStatus(why)) => {
                self.broken(why);
                return 0;
            }
            Err(Refused::Status(code, why)) => {
                // The framing is wrong, but the last descriptor may still be the status.
                return match segs.last() {
                    Some(s) if s.write && s.len > 0 => {
                        self.refuse(why);
                        let at = s.addr.saturating_add(u64::from(s.len) - 1);
                        if mem.write_slice(&[code], GuestAddress(at)).is_ok() {
                            1
                        } else {
                            0
                        }
                    }
                    _ => {
                        self.broken(why);
                        0
                    }
                };
            }
        };
        let mut header = [0u8; 16];
        let (code, written) = match copy_in(mem, layout.header(), 0, &mut header) {
            Err(why) => {
                self.refuse(why);
                (status::IOERR, 0)
            }
            Ok(()) => match layout.request(&header, self.disk.len(), self.geo.read_only) {
                Err(r) => {
                    let (code, why) = r.code();
                    self.refuse(why);
                    (code, 0)
                }
                Ok(req) => self.execute(mem, &req, bufs),
            },
        };
        match copy_out(mem, layout.status(), 0, &[code]) {
            Ok(()) => written + 1,
            Err(why) => {
                self.broken(why);
                0
            }
        }
    }

    /// Moves a read's or a write's data, piece by piece: out of place when it can
    /// ([`BlkBackend::out_of_place`]), else, or for a piece it cannot, the copying way.
    /// Returns the bytes moved.
    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        req: &Request<'_>,
        bufs: &mut QueueBufs,
        write: bool,
    ) -> Result<u64, String> {
        let direct = self.out_of_place(req);
        if !direct {
            self.counters.copied.fetch_add(1, Ordering::Relaxed);
        }
        let step = if direct { PIECE } else { SLOW_PIECE } as u64;
        let mut done = 0u64;
        while done < req.data.len {
            let p = Piece {
                span: req.data,
                skip: done,
                len: (req.data.len - done).min(step) as usize,
                at: req.offset + done,
            };
            let moved = direct && self.direct(mem, p, &mut bufs.sealed, write);
            if !moved {
                if direct {
                    self.counters.copied.fetch_add(1, Ordering::Relaxed);
                }
                // The copying path's buffers hold SLOW_PIECE: a direct piece that fell back
                // is copied in steps of that.
                let mut from = 0;
                while from < p.len {
                    let (q, _) = p.split(from).1.split((p.len - from).min(SLOW_PIECE));
                    if write {
                        self.write_copying(mem, q, bufs)?;
                    } else {
                        self.read_copying(mem, q, bufs)?;
                    }
                    from += q.len;
                }
            }
            done += p.len as u64;
        }
        Ok(done)
    }

    /// Whether a read or write goes out of place: whole data units, and every guest piece of
    /// its data whole units too (so no unit is split between two pieces).
    fn out_of_place(&self, req: &Request<'_>) -> bool {
        let u = self.disk.unit_size();
        self.disk.whole_units(req.offset, req.data.len)
            && req.data.pieces().all(|(_, n)| n.is_multiple_of(u))
    }

    /// Moves every piece on the queue's worker alone (benches and tests of that path).
    pub(crate) fn without_helpers(&mut self) {
        self.helpers = None;
    }

    #[cfg(test)]
    pub(crate) fn disk(&self) -> &EncryptedDisk {
        &self.disk
    }

    /// Moves a piece out of place; a large one as two halves at once, the second on a helper
    /// thread. False when either half could not (the caller then moves the whole piece the
    /// copying way: a read is read again, a write written again from the same guest memory).
    fn direct(
        &self,
        mem: &GuestMemoryMmap,
        p: Piece<'_>,
        sealed: &mut [Sealed; 2],
        write: bool,
    ) -> bool {
        let one = |p: Piece<'_>, s: &mut Sealed| {
            if write {
                self.write_direct(mem, p, s)
            } else {
                self.read_direct(mem, p, s)
            }
        };
        let [a, b] = sealed;
        if p.len < SPLIT {
            return one(p, a);
        }
        // Every guest piece is whole units, so any unit boundary is a boundary of guest
        // pieces too: both halves stay out of place. Each half fits one buffer.
        let u = self.disk.unit_size();
        let (first, second) = p.split((p.len / u).div_ceil(2) * u);
        let Some(pool) = &self.helpers else {
            return one(first, a) && one(second, b);
        };
        let mut second_ok = false;
        let first_ok = pool.in_place_scope(|s| {
            s.spawn(|_| second_ok = one(second, b));
            one(first, a)
        });
        first_ok && second_ok
    }

    /// Reads a piece from the disk, deciphering from the sealed buffer straight into guest
    /// memory. False when a guest piece is not one contiguous mapping (or not guest memory at
    /// all): the caller then takes the copying path, which tells the two apart. A disk error
    /// is also false, and the copying path reports it.
    fn read_direct(&self, mem: &GuestMemoryMmap, p: Piece<'_>, sealed: &mut Sealed) -> bool {
        let disk = &*self.disk;
        // Held until the piece is in guest memory (an online job's window waits for it), and
        // dropped before any fallback, which takes its own.
        let route = disk.route(p.at, p.len);
        disk.read_sealed(&route, sealed, p.at, p.len).is_ok()
            && walk(p.span, p.skip, p.len, |addr, _, m| {
                mem.get_slice(GuestAddress(addr), m)
                    .is_ok_and(|vs| disk.open_into(&route, sealed, &vs).is_ok())
            })
            .is_ok()
    }

    /// Writes a piece to the disk, enciphering from guest memory into the sealed buffer, then
    /// one `pwrite`. False, with nothing written, when a guest piece is not one contiguous
    /// mapping: the caller takes the copying path.
    fn write_direct(&self, mem: &GuestMemoryMmap, p: Piece<'_>, sealed: &mut Sealed) -> bool {
        let disk = &*self.disk;
        let route = disk.route(p.at, p.len);
        disk.begin_seal(sealed, p.at);
        walk(p.span, p.skip, p.len, |addr, _, m| {
            mem.get_slice(GuestAddress(addr), m)
                .is_ok_and(|vs| disk.seal_from(&route, sealed, &vs).is_ok())
        })
        .is_ok()
            && disk.write_sealed(&route, sealed).is_ok()
    }

    /// The copying path of a read: decrypt into the queue's buffer, copy into guest memory.
    fn read_copying(
        &self,
        mem: &GuestMemoryMmap,
        p: Piece<'_>,
        bufs: &mut QueueBufs,
    ) -> Result<(), String> {
        let data = &mut bufs.data[..p.len];
        self.disk.read_at(data, p.at).map_err(|e| e.to_string())?;
        copy_out(mem, p.span, p.skip, data).map_err(str::to_string)
    }

    /// The copying path of a write: copy out of guest memory, then encrypt through the
    /// scratch (read-modify-writing units covered in part).
    fn write_copying(
        &self,
        mem: &GuestMemoryMmap,
        p: Piece<'_>,
        bufs: &mut QueueBufs,
    ) -> Result<(), String> {
        let data = &mut bufs.data[..p.len];
        copy_in(mem, p.span, p.skip, data)?;
        self.disk
            .write_at(data, p.at, &mut bufs.scratch)
            .map_err(|e| e.to_string())
    }

    fn refuse(&self, why: &str) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("guest request refused: {why}");
    }

    /// Carries out a checked request: (status, bytes written into the guest's data).
    fn execute(&self, mem: &GuestMemoryMmap, req: &Request<'_>, bufs: &mut QueueBufs) -> (u8, u32) {
        let disk = &*self.disk;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("guest {what} failed: {e}");
            (status::IOERR, 0)
        };
        match req.kind {
            Kind::Read => match self.transfer(mem, req, bufs, false) {
                Ok(done) => {
                    self.counters.bytes_read.fetch_add(done, Ordering::Relaxed);
                    (status::OK, u32::try_from(done).unwrap_or(u32::MAX))
                }
                Err(e) => failed("read", &e),
            },
            Kind::Write => {
                let done = match self.transfer(mem, req, bufs, true) {
                    Ok(done) => done,
                    Err(e) => return failed("write", &e),
                };
                if !self.writeback.load(Ordering::Relaxed) {
                    if let Err(e) = disk.flush() {
                        return failed("write", &e);
                    }
                    self.counters.write_through.fetch_add(1, Ordering::Relaxed);
                }
                self.counters
                    .bytes_written
                    .fetch_add(done, Ordering::Relaxed);
                (status::OK, 0)
            }
            Kind::Flush => match disk.flush() {
                Ok(()) => (status::OK, 0),
                Err(e) => failed("flush", &e),
            },
            Kind::GetId => {
                let n = req.data.len as usize;
                match copy_out(mem, req.data, 0, &self.serial[..n]) {
                    Ok(()) => (status::OK, n as u32),
                    Err(why) => failed("get id", &why),
                }
            }
            Kind::Discard | Kind::WriteZeroes => {
                let n = req.data.len as usize;
                let mut list = [0u8; crate::config::MAX_ZERO_SEGS as usize * 16];
                if let Err(why) = copy_in(mem, req.data, 0, &mut list[..n]) {
                    return failed("discard", &why);
                }
                if let Err(r) = zero_ranges(req.kind, &list[..n], disk.len(), &mut bufs.zeros) {
                    let (code, why) = r.code();
                    self.refuse(why);
                    return (code, 0);
                }
                for i in 0..bufs.zeros.len() {
                    let z = bufs.zeros[i];
                    let r = if req.kind == Kind::Discard {
                        disk.discard(z.offset, z.len)
                    } else {
                        disk.write_zeroes(z.offset, z.len, !z.unmap, &mut bufs.scratch)
                    };
                    if let Err(e) = r {
                        return failed("discard or write zeroes", &e);
                    }
                }
                (status::OK, 0)
            }
        }
    }
}

/// Copies `buf.len()` bytes of guest memory from byte `skip` of `span` into `buf`.
fn copy_in(
    mem: &GuestMemoryMmap,
    span: Span<'_>,
    skip: u64,
    buf: &mut [u8],
) -> Result<(), &'static str> {
    walk(span, skip, buf.len(), |addr, from, n| {
        mem.read_slice(&mut buf[from..from + n], GuestAddress(addr))
            .is_ok()
    })
}

/// Copies `buf` into guest memory at byte `skip` of `span`.
fn copy_out(
    mem: &GuestMemoryMmap,
    span: Span<'_>,
    skip: u64,
    buf: &[u8],
) -> Result<(), &'static str> {
    walk(span, skip, buf.len(), |addr, from, n| {
        mem.write_slice(&buf[from..from + n], GuestAddress(addr))
            .is_ok()
    })
}

/// Calls `f(guest address, offset in the buffer, bytes)` for the pieces of `len` bytes of
/// `span` from byte `skip`; fails when one is outside guest memory.
fn walk(
    span: Span<'_>,
    skip: u64,
    len: usize,
    mut f: impl FnMut(u64, usize, usize) -> bool,
) -> Result<(), &'static str> {
    let (mut skip, mut from) = (skip, 0usize);
    for (addr, n) in span.pieces() {
        if from == len {
            break;
        }
        if skip >= n as u64 {
            skip -= n as u64;
            continue;
        }
        let take = (n - skip as usize).min(len - from);
        if !f(addr.saturating_add(skip), from, take) {
            return Err("a descriptor outside guest memory");
        }
        skip = 0;
        from += take;
    }
    if from == len {
        Ok(())
    } else {
        Err("the descriptors are shorter than the request")
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        usize::from(self.geo.queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.geo.queue_size)
    }

    fn features(&self) -> u64 {
        self.geo.features() | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ
    }

    fn acked_features(&self, _features: u64) {
        // A driver negotiates after every device reset (boot, reboot, a new QEMU): the write
        // cache starts in its default mode, write-back, whatever the last driver chose.
        self.writeback.store(true, Ordering::Relaxed);
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space: [u8; CONFIG_LEN] = self
            .geo
            .config_space(self.writeback.load(Ordering::Relaxed));
        config_slice(&space, offset, size)
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        // Only the write cache mode is writable (VIRTIO_BLK_F_CONFIG_WCE).
        if offset as usize == WCE_OFFSET && buf.len() == 1 {
            let writeback = buf[0] != 0;
            let was = self.writeback.swap(writeback, Ordering::Relaxed);
            tracing::info!(writeback, "guest set the write cache mode");
            if was && !writeback {
                // From now on a completed write is durable; so must be every write that
                // completed before.
                self.disk.flush().map_err(io::Error::other)?;
            }
            return Ok(());
        }
        Err(io::Error::from(io::ErrorKind::InvalidInput))
    }

    fn update_memory(&self, mem: Memory) -> io::Result<()> {
        *lock(&self.mem) = Some(mem);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.geo.queues).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event {evset:?}")));
        }
        match vrings.get(usize::from(device_event)) {
            Some(vring) => self.process(vring, thread_id),
            None => Ok(()),
        }
    }
}
