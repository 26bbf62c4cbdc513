//! The device driven in-process at a given queue depth, without a guest or a socket: for the
//! host-only figure of benches/guest-compare.sh (`cargo bench -p vmcrypt-vhost`), where a TCG
//! guest would only measure itself. Requests are laid out in guest memory owned here (rings
//! written by hand), served by the queue worker's own code path, and checked.

use std::sync::Arc;

use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmcrypt_core::EncryptedDisk;

use crate::backend::BlkBackend;
use crate::config::Geometry;

const QUEUE: u16 = 256;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x3000;
const USED: u64 = 0x4000;
const HEADERS: u64 = 0x8000;
const STATUS: u64 = 0xc000;
const DATA: u64 = 0x10_0000;

/// Gives `backend` guest memory `mem` and returns a started, enabled vring of `size`
/// descriptors whose descriptor table, available ring and used ring are at `rings`, as a
/// frontend would set it up.
pub(crate) fn ready_vring(
    backend: &BlkBackend,
    mem: &GuestMemoryMmap,
    size: u16,
    rings: [u64; 3],
) -> VringRwLock {
    let atomic = GuestMemoryAtomic::new(mem.clone());
    backend.update_memory(atomic.clone()).expect("memory");
    let vring = VringRwLock::new(atomic, size).expect("vring");
    vring
        .set_queue_info(rings[0], rings[1], rings[2])
        .expect("queue info");
    vring.set_queue_size(size);
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    vring
}

/// One queue of a device over `disk`, with `depth` requests of `request` bytes in flight.
pub struct HostQueue {
    backend: BlkBackend,
    mem: GuestMemoryMmap,
    vring: VringRwLock,
    depth: u16,
    request: u32,
    served: u16,
}

impl std::fmt::Debug for HostQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostQueue")
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl HostQueue {
    /// A queue at `depth` (at most 85) of `request`-byte requests (a multiple of 4096).
    ///
    /// # Panics
    /// On parameters out of range (a bench's mistake).
    pub fn new(disk: Arc<EncryptedDisk>, depth: u16, request: u32) -> HostQueue {
        assert!(depth > 0 && 3 * depth <= QUEUE && request.is_multiple_of(4096));
        let geo = Geometry {
            bytes: disk.len() / 512 * 512,
            unit: disk.unit_size() as u32,
            queues: 1,
            queue_size: QUEUE,
            read_only: false,
        };
        let backend = BlkBackend::new(disk, geo, "bench", 2);
        let size = DATA as usize + usize::from(depth) * request as usize;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).expect("guest memory");
        let vring = ready_vring(&backend, &mem, QUEUE, [DESC, AVAIL, USED]);
        HostQueue {
            backend,
            mem,
            vring,
            depth,
            request,
            served: 0,
        }
    }

    /// The same queue with every piece moved by the queue's worker alone (no helper threads):
    /// the bench's "before" of splitting large requests across cores.
    pub fn one_thread(mut self) -> HostQueue {
        self.backend.without_helpers();
        self
    }

    /// Offers `depth` reads (or writes) of consecutive ranges from disk offset `offset`,
    /// serves them all, checks that each succeeded, and returns the bytes moved.
    ///
    /// # Panics
    /// When a request fails.
    pub fn round(&mut self, write: bool, offset: u64) -> u64 {
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(AVAIL + 2))
            .expect("avail idx");
        for i in 0..self.depth {
            let head = 3 * i;
            let h = HEADERS + 16 * u64::from(i);
            let mut header = [0u8; 16];
            header[..4].copy_from_slice(&u32::from(write).to_le_bytes());
            let sector = (offset + u64::from(i) * u64::from(self.request)) / 512;
            header[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem
                .write_slice(&header, GuestAddress(h))
                .expect("header");
            let data = DATA + u64::from(i) * u64::from(self.request);
            let st = STATUS + u64::from(i);
            self.mem
                .write_obj(0xeeu8, GuestAddress(st))
                .expect("status");
            let descs = [
                (h, 16u32, 1u16),
                (data, self.request, if write { 1 } else { 3 }),
                (st, 1, 2),
            ];
            for (k, (addr, len, flags)) in descs.into_iter().enumerate() {
                let mut d = addr.to_le_bytes().to_vec();
                d.extend(len.to_le_bytes());
                d.extend(flags.to_le_bytes());
                d.extend((head + k as u16 + 1).to_le_bytes());
                let at = DESC + 16 * u64::from(head + k as u16);
                self.mem
                    .write_slice(&d, GuestAddress(at))
                    .expect("descriptor");
            }
            let slot = AVAIL + 4 + 2 * u64::from(idx.wrapping_add(i) % QUEUE);
            self.mem
                .write_obj(head, GuestAddress(slot))
                .expect("avail ring");
        }
        self.mem
            .write_obj(idx.wrapping_add(self.depth), GuestAddress(AVAIL + 2))
            .expect("avail idx");
        self.backend.process(&self.vring, 0).expect("process");
        self.served = self.served.wrapping_add(self.depth);
        let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).expect("used idx");
        assert_eq!(used, self.served, "every request answered");
        for i in 0..self.depth {
            let st: u8 = self
                .mem
                .read_obj(GuestAddress(STATUS + u64::from(i)))
                .expect("status");
            assert_eq!(st, 0, "request {i} failed");
        }
        u64::from(self.depth) * u64::from(self.request)
    }
}
