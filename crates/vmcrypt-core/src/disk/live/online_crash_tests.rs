//! Crashes of an online rekey at each of its sync points, with guest writes around them: the
//! process state is lost (as with kill -9) and, in the torn cases, the writes that were in
//! flight at the crash are garbage (as with a power cut). Reopening and resuming must give
//! back every flushed guest write, under the right key.

use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;

use vmcrypt_xts::SectorSize;

use super::cipher::UnitCipher;
use super::fixture::{deciphered, disk_with, in_place, registry};
use super::{EncryptedDisk, Scratch};
use crate::engine::journal::JournalKeys;
use crate::engine::online::{JobKind, OnlineJournal};
use crate::engine::storage::FileStorage;
use crate::failpoint::{CRASH_AT, Crashed};
use crate::secret::Dek;

const LEN: usize = 1 << 20;
const WINDOW: u64 = 64 * 1024;

/// Where the crash comes, and what was in flight then.
#[derive(Clone, Copy, Debug)]
enum Torn {
    /// Nothing: every write before the crash point is on the disk.
    No,
    /// The slot being recorded (the crash came during `record`).
    Slot,
    /// The window being written over the payload (during `write_window`).
    Payload,
    /// The done block being written (during `mark_done`).
    Done,
}

fn journal_for(disk: &EncryptedDisk, job: u8) -> OnlineJournal {
    let keys = JournalKeys::derive(&[0x5a; 64], [job; 16]).expect("keys");
    OnlineJournal::new(
        JobKind::DeepRekey,
        keys,
        disk.unit_size() as u32,
        disk.len(),
        WINDOW,
    )
    .expect("journal")
}

fn garbage(path: &std::path::Path, at: u64, len: usize) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    let g: Vec<u8> = (0..len).map(|i| (i * 131 + 17) as u8).collect();
    f.write_all_at(&g, at).expect("tear");
}

/// Two windows done, guest writes into the done window, into the next one and far ahead
/// (flushed), then a crash at `point` in the third window; returns the boundary the resumed
/// job starts from.
fn crash_and_resume(point: &'static str, torn: Torn) -> u64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8 ^ 0x3c).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    let new = Dek::generate_xts().expect("dek");
    disk.begin_windows(
        JobKind::DeepRekey,
        in_place(&disk, UnitCipher::Xts(new.xts().expect("schedule"))),
    );
    let jpath = dir.path().join("online.journal");
    let oj = journal_for(&disk, 1);
    let store = FileStorage::create(&jpath).expect("journal file");
    oj.begin(&store).expect("begin");
    let mut buf = vec![0u8; WINDOW as usize];
    for _ in 0..2 {
        assert!(disk.window_step(&oj, &store, &mut buf).expect("step"));
    }
    let mut model = plain.clone();
    let mut scratch = Scratch::default();
    for (at, len, byte) in [
        (WINDOW + 512, 512, 0xa1u8),     // part of a unit, in the done window
        (2 * WINDOW + 4096, 4096, 0xb2), // a unit of the window about to be locked
        (2 * WINDOW + 8192 + 1024, 2048, 0xb3),
        (900 * 1024, 8192, 0xc4), // far ahead
    ] {
        disk.write_at(&vec![byte; len], at, &mut scratch)
            .expect("guest write");
        model[at as usize..at as usize + len].fill(byte);
    }
    disk.flush().expect("flush");
    CRASH_AT.with(|c| c.set(Some(point)));
    let crashed =
        std::panic::catch_unwind(AssertUnwindSafe(|| disk.window_step(&oj, &store, &mut buf)));
    CRASH_AT.with(|c| c.set(None));
    let payload = crashed.expect_err("the step crashed");
    assert_eq!(
        payload.downcast_ref::<Crashed>().map(|c| c.0.as_str()),
        Some(point),
        "crashed where asked"
    );
    // Window 2 (seq 3) is recorded in slot 0, over window 0's.
    let slot0 = 4096;
    match torn {
        Torn::No => {}
        Torn::Slot => garbage(&jpath, slot0, 4096 + 4096 + 20_000),
        Torn::Payload => {
            // The crash came while the window was being written: a sector in it is garbage.
            garbage(&img, disk.base() + 2 * WINDOW + 12_288, 512);
        }
        Torn::Done => garbage(&jpath, slot0 + 4096, 4096),
    }
    drop(disk);
    let disk = EncryptedDisk::open(&img, &registry(dir.path())).expect("reopen");
    let store = FileStorage::open(&jpath).expect("journal");
    disk.resume_windows(
        JobKind::DeepRekey,
        in_place(&disk, UnitCipher::Xts(new.xts().expect("schedule"))),
        &oj,
        &store,
    )
    .expect("resume");
    let boundary = disk.keys.boundary().expect("a job under way");
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(
        got == model,
        "{point} {torn:?}: every flushed write reads back after the resume"
    );
    while disk.window_step(&oj, &store, &mut buf).expect("step") {}
    disk.finish_windows().expect("finish");
    assert!(
        deciphered(&disk, &new.xts().expect("schedule")) == model,
        "{point} {torn:?}: the disk ends under the new key alone"
    );
    boundary
}

#[test]
fn an_online_rekey_resumes_after_a_crash_at_each_sync_point() {
    for (point, torn, boundary) in [
        // Locked, nothing recorded: window 1's slot rules, and its done mark keeps the guest's
        // write into window 1 (a replay would revert it).
        ("online-window-locked", Torn::No, 2 * WINDOW),
        ("online-window-locked", Torn::Slot, 2 * WINDOW),
        // Recorded: the window is written back from its slot, whatever reached the payload.
        ("online-slot-synced", Torn::No, 3 * WINDOW),
        ("online-slot-synced", Torn::Payload, 3 * WINDOW),
        ("online-window-synced", Torn::No, 3 * WINDOW),
        ("online-window-synced", Torn::Done, 3 * WINDOW),
        // Done: nothing to write back.
        ("online-done-synced", Torn::No, 3 * WINDOW),
    ] {
        assert_eq!(crash_and_resume(point, torn), boundary, "{point} {torn:?}");
    }
}

/// A change made to a journal file.
type Alter = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn a_journal_that_fails_its_checks_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 239) as u8).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    disk.begin_windows(
        JobKind::DeepRekey,
        in_place(
            &disk,
            UnitCipher::Xts(Dek::generate_xts().expect("dek").xts().expect("schedule")),
        ),
    );
    let jpath = dir.path().join("online.journal");
    let oj = journal_for(&disk, 1);
    let store = FileStorage::create(&jpath).expect("journal file");
    oj.begin(&store).expect("begin");
    let mut buf = vec![0u8; WINDOW as usize];
    CRASH_AT.with(|c| c.set(Some("online-slot-synced")));
    let crashed =
        std::panic::catch_unwind(AssertUnwindSafe(|| disk.window_step(&oj, &store, &mut buf)));
    CRASH_AT.with(|c| c.set(None));
    assert!(crashed.is_err());
    drop(disk);
    let before = std::fs::read(&img).expect("image");
    let good = std::fs::read(&jpath).expect("journal");
    let new = Dek::generate_xts().expect("dek");
    let cases: [(&str, Alter, u8); 4] = [
        ("a flipped header bit", Box::new(|j| j[40] ^= 1), 1),
        ("a flipped slot bit", Box::new(|j| j[4096 + 30] ^= 1), 1),
        ("a truncated journal", Box::new(|j| j.truncate(100)), 1),
        ("another job's keys", Box::new(|_| {}), 2),
    ];
    for (what, alter, job) in cases {
        let mut j = good.clone();
        alter(&mut j);
        std::fs::write(&jpath, &j).expect("alter");
        let disk = EncryptedDisk::open(&img, &registry(dir.path())).expect("reopen");
        let store = FileStorage::open(&jpath).expect("journal");
        let oj = journal_for(&disk, job);
        let r = disk.resume_windows(
            JobKind::DeepRekey,
            in_place(&disk, UnitCipher::Xts(new.xts().expect("schedule"))),
            &oj,
            &store,
        );
        match what {
            // A slot that fails its MAC is one torn by a crash: it is passed over, and with
            // no other slot the job starts again at 0.
            "a flipped slot bit" => {
                r.expect("resume");
                assert_eq!(disk.keys.boundary(), Some(0), "{what}");
            }
            _ => assert!(
                matches!(r, Err(crate::Error::Integrity { .. })),
                "{what}: {r:?}"
            ),
        }
        drop(disk);
        assert!(
            std::fs::read(&img).expect("image") == before,
            "{what}: the image is as it was"
        );
    }
}
