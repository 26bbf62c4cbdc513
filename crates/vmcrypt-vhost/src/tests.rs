//! The device driven in-process, without a guest: chains laid out in guest memory the test
//! owns (rings written by hand), served by the backend's queue worker, then the used ring,
//! the status byte and the disk are checked. For the request-level cases a real guest never
//! sends: descriptors outside guest memory, short headers, ranges past the end, chains with
//! no status byte or longer than the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vhost_user_backend::VringRwLock;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{DiskJob, EncryptedDisk, NoProgress};

use crate::backend::BlkBackend;
use crate::config::Geometry;

const QUEUE: u16 = 16;
const DISK: usize = 1 << 20;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

struct Rig {
    _dir: tempfile::TempDir,
    backend: BlkBackend,
    mem: GuestMemoryMmap,
    vring: VringRwLock,
    served: u16,
    plain: Vec<u8>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_memory(&[(GuestAddress(0), 4 << 20)])
    }

    /// A rig whose guest memory is the given regions (separate mappings).
    fn with_memory(regions: &[(GuestAddress, usize)]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = dir.path().join("native.keystore");
        NativeProvider::create("native", &ks).expect("keystore");
        let registry = move |name: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
            Ok(Arc::new(NativeProvider::open(name, &ks)?))
        };
        let img = dir.path().join("d.img");
        let plain: Vec<u8> = (0..DISK as u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&img, &plain).expect("image");
        DiskJob::encrypt(&img)
            .provider("native")
            .run(&registry, &NoProgress, &AtomicBool::new(false))
            .expect("encrypt");
        let disk = Arc::new(EncryptedDisk::open(&img, &registry).expect("open"));
        let geo = Geometry {
            bytes: DISK as u64,
            unit: disk.unit_size() as u32,
            queues: 1,
            queue_size: QUEUE,
            read_only: false,
        };
        let backend = BlkBackend::new(disk, geo, "serial-0123456789abcdef", 2);
        let mem = GuestMemoryMmap::from_ranges(regions).expect("memory");
        let vring = crate::hostbench::ready_vring(&backend, &mem, QUEUE, [DESC, AVAIL, USED]);
        Rig {
            _dir: dir,
            backend,
            mem,
            vring,
            served: 0,
            plain,
        }
    }

    /// Lays out one chain (address, length, flags) at the start of the descriptor table,
    /// makes it available, serves it, and returns the used length and the status byte at
    /// `status`.
    fn serve(&mut self, descs: &[(u64, u32, u16)], status: u64) -> (u32, u8) {
        let chain: Vec<(u64, u32, u16, u16)> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                (
                    addr,
                    len,
                    if last { flags } else { flags | NEXT },
                    (i + 1) as u16 % QUEUE,
                )
            })
            .collect();
        self.mem
            .write_obj(0xeeu8, GuestAddress(status))
            .expect("status");
        self.offer(&chain);
        self.backend.process(&self.vring, 0).expect("process");
        self.used()
    }

    /// Writes descriptors (address, length, flags, next) from index 0 and puts index 0 in the
    /// available ring.
    fn offer(&self, chain: &[(u64, u32, u16, u16)]) {
        for (i, &(addr, len, flags, next)) in chain.iter().enumerate() {
            let mut d = addr.to_le_bytes().to_vec();
            d.extend(len.to_le_bytes());
            d.extend(flags.to_le_bytes());
            d.extend(next.to_le_bytes());
            self.mem
                .write_slice(&d, GuestAddress(DESC + 16 * i as u64))
                .expect("descriptor");
        }
        let idx: u16 = self
            .mem
            .read_obj(GuestAddress(AVAIL + 2))
            .expect("avail idx");
        let slot = AVAIL + 4 + 2 * u64::from(idx % QUEUE);
        self.mem
            .write_obj(0u16, GuestAddress(slot))
            .expect("avail ring");
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .expect("avail idx");
    }

    /// The newest used entry's length, and the status byte.
    fn used(&mut self) -> (u32, u8) {
        let idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).expect("used idx");
        assert_eq!(idx, self.served + 1, "one chain answered");
        let entry = USED + 4 + 8 * u64::from(self.served % QUEUE);
        let len: u32 = self
            .mem
            .read_obj(GuestAddress(entry + 4))
            .expect("used len");
        self.served += 1;
        (
            len,
            self.mem.read_obj::<u8>(GuestAddress(ST)).expect("status"),
        )
    }

    fn header(&self, at: u64, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&h, GuestAddress(at)).expect("header");
    }

    fn backend_unit(&self) -> usize {
        self.backend.disk().unit_size()
    }

    fn guest(&self, at: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem
            .read_slice(&mut b, GuestAddress(at))
            .expect("guest memory");
        b
    }
}

/// Descriptors of a chain: address, length, flags.
type Chain = Vec<(u64, u32, u16)>;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const H: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const ST: u64 = 0x30_0000;

#[test]
fn reads_writes_flush_and_id_through_guest_memory() {
    let mut r = Rig::new();
    // A read of 8 KiB at sector 8, split over two data descriptors.
    r.header(H, 0, 8);
    let (used, status) = r.serve(
        &[
            (H, 16, 0),
            (DATA, 4096, WRITE),
            (DATA + 0x10000, 4096, WRITE),
            (ST, 1, WRITE),
        ],
        ST,
    );
    assert_eq!((used, status), (8193, 0));
    assert_eq!(r.guest(DATA, 4096), r.plain[4096..8192]);
    assert_eq!(r.guest(DATA + 0x10000, 4096), r.plain[8192..12288]);
    // A write of 4 KiB at sector 16: the guest's buffer is left as it was.
    let new = vec![0x5au8; 4096];
    r.mem.write_slice(&new, GuestAddress(DATA)).expect("data");
    r.header(H, 1, 16);
    assert_eq!(
        r.serve(&[(H, 16, 0), (DATA, 4096, 0), (ST, 1, WRITE)], ST),
        (1, 0)
    );
    assert_eq!(
        r.guest(DATA, 4096),
        new,
        "a write never modifies guest memory"
    );
    r.header(H, 0, 16);
    assert_eq!(
        r.serve(
            &[(H, 16, 0), (DATA + 0x8000, 4096, WRITE), (ST, 1, WRITE)],
            ST
        ),
        (4097, 0)
    );
    assert_eq!(r.guest(DATA + 0x8000, 4096), new);
    // Flush, and the serial (20 bytes).
    r.header(H, 4, 0);
    assert_eq!(r.serve(&[(H, 16, 0), (ST, 1, WRITE)], ST), (1, 0));
    r.header(H, 8, 0);
    assert_eq!(
        r.serve(&[(H, 16, 0), (DATA, 20, WRITE), (ST, 1, WRITE)], ST),
        (21, 0)
    );
    assert_eq!(r.guest(DATA, 20), b"serial-0123456789abc");
    assert_eq!(r.backend.counters.errors.load(Ordering::Relaxed), 0);
}

#[test]
fn hostile_chains_get_an_error_and_change_nothing() {
    let mut r = Rig::new();
    let disk_before = {
        let mut b = vec![0u8; DISK];
        r.header(H, 0, 0);
        r.serve(
            &[(H, 16, 0), (DATA, DISK as u32, WRITE), (ST, 1, WRITE)],
            ST,
        );
        b.copy_from_slice(&r.guest(DATA, DISK));
        b
    };
    assert_eq!(disk_before, r.plain);
    let far = 1u64 << 40;
    let cases: Vec<(&str, Chain, u32, u64, u8)> = vec![
        // (what, chain, header kind, sector, expected status)
        (
            "write data outside guest memory",
            vec![(H, 16, 0), (far, 4096, 0), (ST, 1, WRITE)],
            1,
            0,
            1,
        ),
        (
            "read into memory outside the guest",
            vec![(H, 16, 0), (far, 4096, WRITE), (ST, 1, WRITE)],
            0,
            0,
            1,
        ),
        (
            "a header of 8 bytes",
            vec![(H, 8, 0), (ST, 1, WRITE)],
            1,
            0,
            1,
        ),
        (
            "a write past the end",
            vec![(H, 16, 0), (DATA, 4096, 0), (ST, 1, WRITE)],
            1,
            (DISK / 512) as u64,
            1,
        ),
        (
            "a sector that overflows",
            vec![(H, 16, 0), (DATA, 4096, 0), (ST, 1, WRITE)],
            1,
            u64::MAX / 256,
            1,
        ),
        (
            "data not in whole sectors",
            vec![(H, 16, 0), (DATA, 1000, 0), (ST, 1, WRITE)],
            1,
            0,
            1,
        ),
        (
            "an unknown request",
            vec![(H, 16, 0), (ST, 1, WRITE)],
            77,
            0,
            2,
        ),
        (
            "a readable descriptor after a writable one",
            vec![(H, 16, 0), (ST, 1, WRITE), (DATA, 512, 0)],
            1,
            0,
            0xee,
        ),
        (
            "a discard with bad flags",
            vec![(H, 16, 0), (DATA, 16, 0), (ST, 1, WRITE)],
            11,
            0,
            2,
        ),
    ];
    r.mem
        .write_slice(
            &[0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0],
            GuestAddress(DATA),
        )
        .expect("segment");
    for (what, chain, kind, sector, want) in &cases {
        r.header(H, *kind, *sector);
        let (used, status) = r.serve(chain, ST);
        assert_eq!(status, *want, "{what}");
        assert_eq!(used, u32::from(*want != 0xee), "{what}");
    }
    // No writable byte at all: the chain is given back unanswered.
    r.header(H, 0, 0);
    assert_eq!(r.serve(&[(H, 16, 0), (DATA, 4096, 0)], ST), (0, 0xee));
    // A chain that loops (each descriptor names the next, the last names the first) is cut
    // at the queue size and given back unanswered.
    let looping: Vec<(u64, u32, u16, u16)> =
        (0..QUEUE).map(|i| (H, 16, NEXT, (i + 1) % QUEUE)).collect();
    r.offer(&looping);
    r.backend.process(&r.vring, 0).expect("process");
    assert_eq!(r.used().0, 0);
    assert!(r.backend.counters.broken.load(Ordering::Relaxed) >= 2);
    // The disk is as it was.
    r.header(H, 0, 0);
    r.serve(
        &[(H, 16, 0), (DATA, DISK as u32, WRITE), (ST, 1, WRITE)],
        ST,
    );
    assert!(r.guest(DATA, DISK) == r.plain, "nothing was written");
}

/// Whole units in whole-unit guest pieces go out of place; a piece that splits a unit, a
/// request covering part of a unit, and a piece across two mappings of guest memory take the
/// copying path. Large requests are moved in two halves at once, on the queue's worker and a
/// helper thread, or one after the other without helpers. Every way must read and write the
/// same bytes.
#[test]
fn out_of_place_and_copying_paths_agree() {
    for helpers in [true, false] {
        paths_agree(helpers);
    }
}

fn paths_agree(helpers: bool) {
    // Two mappings that meet at 4 MiB, so a descriptor can cross from one into the other.
    let mut r = Rig::with_memory(&[(GuestAddress(0), 4 << 20), (GuestAddress(4 << 20), 1 << 20)]);
    if !helpers {
        r.backend.without_helpers();
    }
    assert_eq!(r.backend_unit(), 4096, "the rig's disk has 4096-byte units");
    let mut model = r.plain.clone();
    let cross = (4 << 20) - 4096;
    /// What, the data pieces (address, length), the byte offset on the disk.
    type Case = (&'static str, Vec<(u64, u32)>, u64);
    let cases: Vec<Case> = vec![
        (
            "whole units in two pieces",
            vec![(DATA, 4096), (DATA + 0x9000, 8192)],
            8192,
        ),
        (
            "pieces that split a unit",
            vec![(DATA, 2048), (DATA + 0x9000, 6144)],
            32768,
        ),
        ("part of a unit", vec![(DATA, 512)], 65536 + 1024),
        (
            "units across a unit boundary, in part",
            vec![(DATA, 4096)],
            98304 + 2048,
        ),
        ("a piece across two mappings", vec![(cross, 8192)], 131072),
        (
            "a large request, split in halves, in uneven pieces",
            vec![
                (DATA, 3 * 4096),
                (DATA + 0x4_0000, 70 * 4096),
                (DATA + 0x9_0000, 2 * 4096),
            ],
            196_608,
        ),
        (
            "a large request whose second half crosses two mappings",
            vec![(DATA, 192 << 10), ((4 << 20) - (64 << 10), 128 << 10)],
            524_288,
        ),
    ];
    for (i, (what, pieces, offset)) in cases.iter().enumerate() {
        let len: usize = pieces.iter().map(|p| p.1 as usize).sum();
        let fill: Vec<u8> = (0..len).map(|k| (k * 7 + i * 13 + 1) as u8).collect();
        let mut from = 0;
        for &(addr, n) in pieces {
            r.mem
                .write_slice(&fill[from..from + n as usize], GuestAddress(addr))
                .expect("data");
            from += n as usize;
        }
        let chain = |write: bool| -> Chain {
            let flag = if write { 0 } else { WRITE };
            let mut c = vec![(H, 16, 0)];
            c.extend(pieces.iter().map(|&(a, n)| (a, n, flag)));
            c.push((ST, 1, WRITE));
            c
        };
        r.header(H, 1, offset / 512);
        assert_eq!(
            r.serve(&chain(true), ST),
            (1, 0),
            "write: {what} ({helpers})"
        );
        model[*offset as usize..*offset as usize + len].copy_from_slice(&fill);
        // Read it back through the same pieces after clearing them.
        for &(addr, n) in pieces {
            r.mem
                .write_slice(&vec![0xcc; n as usize], GuestAddress(addr))
                .expect("clear");
        }
        r.header(H, 0, offset / 512);
        assert_eq!(
            r.serve(&chain(false), ST),
            (len as u32 + 1, 0),
            "read: {what} ({helpers})"
        );
        let mut got = Vec::new();
        for &(addr, n) in pieces {
            got.extend(r.guest(addr, n as usize));
        }
        assert!(got == fill, "read back: {what} (helpers: {helpers})");
    }
    // The whole disk, read out of place in one piece, is the model.
    r.header(H, 0, 0);
    assert_eq!(
        r.serve(
            &[(H, 16, 0), (DATA, DISK as u32, WRITE), (ST, 1, WRITE)],
            ST
        ),
        (DISK as u32 + 1, 0)
    );
    assert!(
        r.guest(DATA, DISK) == model,
        "the disk is the model (helpers: {helpers})"
    );
    assert_eq!(r.backend.counters.errors.load(Ordering::Relaxed), 0);
    // The requests that split or part a unit, or cross mappings in one piece, took the copying
    // path, written and read (8); the large one whose second half crosses the mappings was
    // moved out of place, then, as that half could not be, again the copying way (2).
    assert_eq!(r.backend.counters.copied.load(Ordering::Relaxed), 10);
}
