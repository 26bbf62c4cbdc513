//! The two keys and the window gate of an online rekey, under concurrent I/O.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use vmcrypt_xts::SectorSize;

use super::cipher::UnitCipher;
use super::fixture::{deciphered, disk_with, in_place};
use super::{EncryptedDisk, Scratch};
use crate::engine::online::JobKind;
use crate::secret::Dek;

/// A small xorshift: the tests' operations are random but repeatable per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Bytes the disk holds, as the thread that owns them last wrote them.
type Model = Vec<u8>;

/// Guest I/O of thread `who` of `threads` until `stop`: it owns the groups of 3 units whose
/// index is `who` modulo `threads` (so groups straddle windows), writes them whole, writes
/// 512-byte blocks into them (read-modify-write of a unit), discards units, and reads them
/// back against its model. Returns the model (its own groups hold what it wrote).
fn guest_io(
    disk: &EncryptedDisk,
    mut model: Model,
    who: u64,
    threads: u64,
    stop: &AtomicBool,
) -> (Model, u64) {
    let unit = disk.unit_size() as u64;
    let group = 3 * unit;
    let groups = disk.len() / group;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (who + 1));
    let mut scratch = Scratch::new(2 * unit as usize);
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) || ops < 50 {
        let g = rng.below(groups / threads) * threads + who;
        let at = g * group;
        let range = at as usize..(at + group) as usize;
        match rng.below(4) {
            0 => {
                let fill: Vec<u8> = (0..group).map(|_| rng.next() as u8).collect();
                disk.write_at(&fill, at, &mut scratch).expect("write");
                model[range].copy_from_slice(&fill);
            }
            1 => {
                let off = at + rng.below(group / 512) * 512;
                let fill = vec![rng.next() as u8 | 1; 512];
                disk.write_at(&fill, off, &mut scratch)
                    .expect("partial write");
                model[off as usize..off as usize + 512].copy_from_slice(&fill);
            }
            2 => {
                let off = at + rng.below(3) * unit;
                disk.discard(off, unit).expect("discard");
                model[off as usize..(off + unit) as usize].fill(0);
            }
            _ => {
                let mut got = vec![0u8; group as usize];
                disk.read_at(&mut got, at).expect("read");
                assert!(got == model[range], "thread {who} read back group {g}");
            }
        }
        ops += 1;
    }
    (model, ops)
}

#[test]
fn an_online_rekey_under_concurrent_guest_io_loses_nothing_and_ends_under_the_new_key() {
    for unit in [SectorSize::S4096, SectorSize::S512] {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain: Vec<u8> = (0..1u32 << 20).map(|i| (i % 249) as u8 + 1).collect();
        let (disk, _img) = disk_with(dir.path(), &plain, unit);
        let new = Dek::generate_xts().expect("dek");
        disk.begin_windows(
            JobKind::DeepRekey,
            in_place(&disk, UnitCipher::Xts(new.xts().expect("schedule"))),
        );
        let window = 16 * unit.bytes() as u64;
        let stop = AtomicBool::new(false);
        let (models, windows) = std::thread::scope(|s| {
            let io: Vec<_> = (0..3)
                .map(|who| {
                    let (disk, plain, stop) = (&disk, plain.clone(), &stop);
                    s.spawn(move || guest_io(disk, plain, who, 3, stop))
                })
                .collect();
            let mut buf = vec![0u8; window as usize];
            let mut windows = 0;
            while let Some(b) = disk.keys.boundary().filter(|b| *b < disk.len()) {
                let lock = disk
                    .lock_window(window.min(disk.len() - b), &mut buf)
                    .expect("window");
                // Requests that touch the window pile up meanwhile.
                std::thread::yield_now();
                disk.write_window(&lock, &buf).expect("write window");
                lock.done();
                windows += 1;
            }
            disk.finish_windows().expect("finish");
            stop.store(true, Ordering::Relaxed);
            let models: Vec<(Model, u64)> = io
                .into_iter()
                .map(|t| t.join().expect("io thread"))
                .collect();
            (models, windows)
        });
        assert_eq!(windows, disk.len() / window, "{unit:?}");
        // Each thread's groups, as it last wrote them.
        let group = 3 * unit.bytes();
        let mut model = plain.clone();
        for (who, (m, ops)) in models.iter().enumerate() {
            assert!(*ops >= 50, "thread {who} did {ops} operations");
            for (g, chunk) in m.chunks(group).enumerate() {
                if g % 3 == who && chunk.len() == group {
                    model[g * group..(g + 1) * group].copy_from_slice(chunk);
                }
            }
        }
        let mut got = vec![0u8; disk.len() as usize];
        disk.read_at(&mut got, 0).expect("read all");
        assert!(got == model, "{unit:?}: the disk is what the guests wrote");
        // Every unit is stored under the new key now, none under the old one.
        assert!(
            deciphered(&disk, &new.xts().expect("schedule")) == model,
            "{unit:?}: all under the new key"
        );
        // And I/O after the job goes on under the new key.
        let mut scratch = Scratch::default();
        disk.write_at(&[7u8; 4096], 8192, &mut scratch)
            .expect("write after");
        model[8192..12288].fill(7);
        assert!(deciphered(&disk, &new.xts().expect("schedule")) == model);
    }
}

#[test]
fn only_requests_that_touch_the_window_wait_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..1u32 << 20).map(|i| (i % 241) as u8).collect();
    let (disk, _img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    assert!(
        disk.lock_window(65536, &mut vec![0u8; 65536]).is_err(),
        "no window outside a job"
    );
    disk.begin_windows(
        JobKind::DeepRekey,
        in_place(
            &disk,
            UnitCipher::Xts(Dek::generate_xts().expect("dek").xts().expect("schedule")),
        ),
    );
    let mut buf = vec![0u8; 65536];
    assert!(
        disk.lock_window(65536 + 512, &mut vec![0u8; 1 << 17])
            .is_err(),
        "a window of part of a unit"
    );
    assert!(disk.finish_windows().is_err(), "not at the end yet");
    // A window locked and given up (as on an error before it was written) changes nothing:
    // the boundary stays, and the next lock takes the same window.
    drop(disk.lock_window(65536, &mut buf).expect("window"));
    assert_eq!(disk.keys.boundary(), Some(0));
    let mut b = vec![0u8; 65536];
    disk.read_at(&mut b, 0).expect("read");
    assert_eq!(b, plain[..65536]);
    // The window waits for a request in flight that touches it.
    let held = disk.route(60 * 1024, 8192);
    let lock = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let disk = &disk;
        let job = s.spawn(move || {
            let lock = disk.lock_window(65536, &mut buf).expect("window");
            disk.write_window(&lock, &buf).expect("write window");
            tx.send(()).expect("send");
            lock
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the window is not locked while a request touching it is in flight"
        );
        drop(held);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("locked once the request is done");
        job.join().expect("job thread")
    });
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let far = tx.clone();
        let disk = &disk;
        s.spawn(move || {
            let mut b = vec![0u8; 8192];
            disk.read_at(&mut b, 512 * 1024).expect("far read");
            far.send(("far", b)).expect("send");
        });
        s.spawn(move || {
            // The last unit of the window and the first after it.
            let mut b = vec![0u8; 8192];
            disk.read_at(&mut b, 65536 - 4096).expect("near read");
            tx.send(("near", b)).expect("send");
        });
        let (who, b) = rx.recv_timeout(Duration::from_secs(10)).expect("far read");
        assert_eq!(who, "far", "a request away from the window goes on");
        assert_eq!(b, plain[512 * 1024..512 * 1024 + 8192]);
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "a request that touches the window waits for it"
        );
        lock.done();
        let (who, b) = rx.recv_timeout(Duration::from_secs(10)).expect("near read");
        assert_eq!(who, "near");
        // Its first unit is under the new key now and its second under the old: both read
        // as they were.
        assert_eq!(b, plain[65536 - 4096..65536 + 4096]);
    });
    assert_eq!(disk.keys.boundary(), Some(65536));
}
