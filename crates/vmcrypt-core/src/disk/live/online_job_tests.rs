//! The online job from start to end through the metadata: start (the new key round-tripped
//! first), windows under guest writes, a crash and the job taken up on the next open (or
//! finished by `resume`), the result recorded; and a provider failing before the new key is
//! held, which leaves the disk as it was.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vmcrypt_xts::SectorSize;

use super::fixture::{crash_in, decrypted, disk_with, registry};
use super::{EncryptedDisk, Scratch};
use crate::disk::inplace::journal_path;
use crate::disk::{Disk, DiskState};
use crate::provider::KeyProvider;
use crate::{DiskJob, NoProgress, Result};

const LEN: usize = 1 << 20;
const WINDOW: u64 = 64 * 1024;

fn state(img: &std::path::Path) -> (DiskState, u64, usize) {
    let d = Disk::open(img).expect("disk");
    let m = d.encryption().expect("encrypted");
    (m.state, m.generation, m.keys().len())
}

#[test]
fn an_online_deep_rekey_is_recorded_taken_up_after_a_crash_and_ends_at_the_next_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 247) as u8 ^ 0x55).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    let mut model = plain.clone();
    assert_eq!(state(&img), (DiskState::Encrypted, 1, 1));
    assert!(disk.job().is_none());
    disk.start_deep_rekey_in(&registry(dir.path()), None, WINDOW)
        .expect("start");
    assert!(
        disk.start_deep_rekey_in(&registry(dir.path()), None, WINDOW)
            .is_err(),
        "one job at a time"
    );
    assert_eq!(state(&img), (DiskState::RekeyingOnline, 1, 2), "both keys");
    let mut scratch = Scratch::default();
    for i in 0..5u64 {
        assert!(disk.job_step().expect("step"));
        // A write into the window just done, and one ahead of the boundary.
        for at in [i * WINDOW + 4096, (i + 3) * WINDOW + 512] {
            disk.write_at(&[i as u8 + 1; 1024], at, &mut scratch)
                .expect("write");
            model[at as usize..at as usize + 1024].fill(i as u8 + 1);
        }
    }
    disk.flush().expect("flush");
    assert_eq!(
        disk.job().map(|j| (j.done, j.len)),
        Some((5 * WINDOW, LEN as u64))
    );
    crash_in("online-slot-synced", || disk.job_step());
    drop(disk);
    // The next open (a server starting) takes the job up, the window it died in included.
    let disk = EncryptedDisk::open(&img, &registry(dir.path())).expect("reopen");
    assert_eq!(disk.job().map(|j| j.done), Some(6 * WINDOW));
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(got == model, "what was flushed reads back after the crash");
    while disk.job_step().expect("step") {}
    assert!(disk.job().is_none());
    assert!(!journal_path(&img).exists(), "the journal is removed");
    assert_eq!(
        state(&img),
        (DiskState::Encrypted, 2, 1),
        "the new key alone"
    );
    disk.write_at(&[0xee; 4096], 0, &mut scratch)
        .expect("write after");
    model[..4096].fill(0xee);
    drop(disk);
    assert!(
        decrypted(dir.path(), &img) == model,
        "offline, the disk is the model"
    );
}

#[test]
fn a_crash_at_the_start_or_the_end_of_the_job_leaves_one_key_that_opens_the_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 233) as u8).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S512);
    // Journal made, job not recorded: the next open clears the journal; nothing changed.
    crash_in("online-journal-created", || {
        disk.start_deep_rekey_in(&registry(dir.path()), None, WINDOW)
    });
    drop(disk);
    assert!(journal_path(&img).exists());
    let disk = EncryptedDisk::open(&img, &registry(dir.path())).expect("reopen");
    assert!(!journal_path(&img).exists(), "a stale journal is cleared");
    assert_eq!(state(&img), (DiskState::Encrypted, 1, 1));
    assert!(disk.job().is_none());
    // Every window done, the result recorded, the journal still there.
    disk.start_deep_rekey_in(&registry(dir.path()), None, WINDOW)
        .expect("start");
    while disk.job().is_some_and(|j| j.done < j.len) {
        disk.job_step().expect("step");
    }
    crash_in("online-meta-final", || disk.job_step());
    drop(disk);
    assert_eq!(state(&img), (DiskState::Encrypted, 2, 1));
    let disk = EncryptedDisk::open(&img, &registry(dir.path())).expect("reopen");
    assert!(disk.job().is_none());
    assert!(!journal_path(&img).exists());
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(got == plain);
    // Recorded and died after two windows: `vmcrypt resume` finishes it offline.
    disk.start_deep_rekey_in(&registry(dir.path()), None, WINDOW)
        .expect("start");
    disk.job_step().expect("step");
    crash_in("online-done-synced", || disk.job_step());
    drop(disk);
    assert_eq!(state(&img), (DiskState::RekeyingOnline, 2, 2));
    DiskJob::resume(&img)
        .run(&registry(dir.path()), &NoProgress, &AtomicBool::new(false))
        .expect("resume");
    assert_eq!(state(&img), (DiskState::Encrypted, 3, 1));
    assert!(!journal_path(&img).exists());
    assert!(decrypted(dir.path(), &img) == plain);
}

#[test]
fn a_provider_that_fails_before_the_new_key_is_held_fails_the_start_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 229) as u8).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    let meta = std::fs::read(crate::disk::sidecar_path(&img)).expect("sidecar");
    // The KEK is fetched once for the wrap and once more for the round trip: fail the second
    // (an outage in between), then the first.
    for allowed in [1, 0] {
        let calls = Arc::new(AtomicUsize::new(0));
        let (good, calls2) = (registry(dir.path()), calls.clone());
        let flaky = move |name: &str| -> Result<Arc<dyn KeyProvider>> {
            if calls2.fetch_add(1, Ordering::SeqCst) >= allowed {
                return Err(crate::Error::input("the key manager is down (test)"));
            }
            good(name)
        };
        assert!(disk.start_deep_rekey_in(&flaky, None, WINDOW).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), allowed + 1, "{allowed}");
        assert!(disk.job().is_none());
        assert!(!journal_path(&img).exists(), "no journal");
        assert_eq!(
            std::fs::read(crate::disk::sidecar_path(&img)).expect("sidecar"),
            meta,
            "the metadata is as it was"
        );
    }
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(got == plain, "and the disk serves as before");
}

/// A shallow rekey of a served disk: the server re-wraps the DEK (metadata only) while a guest
/// writes and reads back; during a deep job it is refused and changes nothing.
#[test]
fn a_shallow_rekey_of_a_served_disk_rewraps_its_key_while_a_guest_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 241) as u8).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    let disk = Arc::new(disk);
    let reg = registry(dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let guest = {
        let (disk, stop, rounds) = (disk.clone(), stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut scratch = Scratch::default();
            let mut model = plain;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) || i < 64 {
                let at = (i * 7919 * 512) % (LEN - 4096);
                let data = [(i % 253) as u8 + 1; 1536];
                disk.write_at(&data, at as u64, &mut scratch)
                    .expect("write");
                let mut back = [0u8; 1536];
                disk.read_at(&mut back, at as u64).expect("read");
                assert_eq!(back, data, "round {i} reads back");
                model[at..at + 1536].copy_from_slice(&data);
                i += 1;
                rounds.store(i, Ordering::Relaxed);
            }
            model
        })
    };
    let mut kek_ids = std::collections::BTreeSet::new();
    for g in 2..=4 {
        let r = disk.rekey_shallow(&reg, "native").expect("shallow rekey");
        assert_eq!(r.generation, g);
        assert!(!r.resumed);
        kek_ids.insert(r.key_id);
        assert_eq!(state(&img), (DiskState::Encrypted, g, 1));
    }
    assert_eq!(kek_ids.len(), 3, "a new KEK each time");

    disk.start_deep_rekey_in(&reg, None, WINDOW).expect("deep");
    let err = disk
        .rekey_shallow(&reg, "native")
        .expect_err("refused during a job");
    assert!(err.to_string().contains("under way"), "{err}");
    assert_eq!(state(&img), (DiskState::RekeyingOnline, 4, 2));
    while disk.job_step().expect("step") {}
    assert_eq!(state(&img), (DiskState::Encrypted, 5, 1));
    stop.store(true, Ordering::Relaxed);
    let model = guest.join().expect("guest");
    assert!(rounds.load(Ordering::Relaxed) >= 64);
    drop(disk);
    assert!(
        decrypted(dir.path(), &img) == model,
        "the disk decrypts to what the guest wrote"
    );
}
