//! Online encryption and decryption through the metadata: a plaintext disk served as such is
//! encrypted by its server while a guest writes (the units below the boundary are under the
//! new DEK on the file, the others still plaintext), a crash mid-job is taken up on the next
//! open or finished by `resume`; an encrypted disk is decrypted by its server and ends
//! plaintext with no metadata, served on as it is. What cannot be done online is refused
//! before anything changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use vmcrypt_xts::SectorSize;

use super::fixture::{crash_in, decrypted, disk_with, registry};
use super::{EncryptedDisk, Scratch};
use crate::disk::inplace::journal_path;
use crate::disk::{Disk, DiskState, sidecar_path};
use crate::engine::Tuning;
use crate::provider::KeyProvider;
use crate::provider::native::NativeProvider;
use crate::{DiskJob, NoProgress, Result};

const LEN: usize = 1 << 20;
const WINDOW: u64 = 64 * 1024;

fn meta_state(img: &std::path::Path) -> Option<(DiskState, u64, u64, usize)> {
    let d = Disk::open(img).expect("disk");
    d.encryption().map(|m| {
        (
            m.state,
            m.identity.payload_offset,
            m.identity.sector_size.bytes() as u64,
            m.keys().len(),
        )
    })
}

/// Writes into the window just done and one ahead, into `model`.
fn guest_writes(disk: &EncryptedDisk, model: &mut [u8], i: u64, scratch: &mut Scratch) {
    for at in [i * WINDOW + 4096 + 512, (i + 3) * WINDOW + 1024] {
        let data = vec![i as u8 + 0x41; 1536];
        disk.write_at(&data, at, scratch).expect("write");
        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
    }
}

#[test]
fn an_online_encryption_survives_a_crash_and_ends_with_the_disk_encrypted() {
    let dir = tempfile::tempdir().expect("tempdir");
    NativeProvider::create("native", &dir.path().join("native.keystore")).expect("keystore");
    let reg = registry(dir.path());
    let img = dir.path().join("p.img");
    let mut model: Vec<u8> = (0..LEN).map(|i| (i % 239) as u8 ^ 0x21).collect();
    // A hole: it stays one, and reads as zeros.
    model[12 * WINDOW as usize..13 * WINDOW as usize].fill(0);
    std::fs::write(&img, &model).expect("write");
    let disk = EncryptedDisk::open_plaintext(&img).expect("open");
    let down = |_: &str| -> Result<Arc<dyn KeyProvider>> {
        Err(crate::Error::input("the key manager is down (test)"))
    };
    assert!(
        disk.start_encrypt_in(&down, "native", WINDOW).is_err(),
        "no KEK, no start"
    );
    assert!(meta_state(&img).is_none() && !journal_path(&img).exists());
    disk.start_encrypt_in(&reg, "native", WINDOW)
        .expect("start");
    assert!(disk.start_encrypt_in(&reg, "native", WINDOW).is_err());
    assert!(disk.start_decrypt_in(&reg, WINDOW).is_err(), "one job");
    assert_eq!(
        meta_state(&img),
        Some((DiskState::EncryptingOnline, 0, 512, 1)),
        "recorded: in place, 512-byte units"
    );
    assert!(!disk.is_plaintext());
    let mut scratch = Scratch::default();
    for i in 0..4 {
        assert!(disk.job_step().expect("step"));
        guest_writes(&disk, &mut model, i, &mut scratch);
    }
    disk.flush().expect("flush");
    // On the file: the done windows are ciphertext, the ones ahead still plaintext.
    let raw = std::fs::read(&img).expect("raw");
    assert!(raw[..WINDOW as usize] != model[..WINDOW as usize]);
    assert!(raw[5 * WINDOW as usize..] == model[5 * WINDOW as usize..]);
    crash_in("online-window-synced", || disk.job_step());
    drop(disk);
    assert!(
        EncryptedDisk::open_plaintext(&img).is_err(),
        "no longer a plaintext disk"
    );
    let disk = EncryptedDisk::open(&img, &reg).expect("reopen");
    assert_eq!(disk.job().map(|j| j.done), Some(5 * WINDOW));
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(got == model, "what was flushed reads back after the crash");
    guest_writes(&disk, &mut model, 5, &mut scratch);
    while disk.job_step().expect("step") {}
    assert!(disk.job().is_none() && !journal_path(&img).exists());
    assert_eq!(meta_state(&img), Some((DiskState::Encrypted, 0, 512, 1)));
    disk.write_at(&[0xee; 512], 0, &mut scratch).expect("after");
    model[..512].fill(0xee);
    drop(disk);
    assert!(decrypted(dir.path(), &img) == model, "offline, the model");
    let raw = std::fs::read(&img).expect("raw");
    assert!(
        raw[12 * WINDOW as usize..13 * WINDOW as usize]
            .iter()
            .all(|&b| b == 0),
        "the hole stays zeros"
    );
    let plain_runs = raw
        .chunks(512)
        .zip(model.chunks(512))
        .filter(|(r, m)| r == m && m.iter().any(|&b| b != 0))
        .count();
    assert_eq!(plain_runs, 0, "no plaintext unit is left on the file");
}

#[test]
fn an_online_encryption_recorded_and_stopped_is_finished_by_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    NativeProvider::create("native", &dir.path().join("native.keystore")).expect("keystore");
    let reg = registry(dir.path());
    let img = dir.path().join("p.img");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 233) as u8).collect();
    std::fs::write(&img, &plain).expect("write");
    let disk = EncryptedDisk::open_plaintext(&img).expect("open");
    // Journal made, job not recorded: the plaintext disk is as it was.
    crash_in("online-journal-created", || {
        disk.start_encrypt_in(&reg, "native", WINDOW)
    });
    drop(disk);
    let disk = EncryptedDisk::open_plaintext(&img).expect("reopen plaintext");
    assert!(!journal_path(&img).exists(), "the stale journal is cleared");
    assert!(meta_state(&img).is_none());
    disk.start_encrypt_in(&reg, "native", WINDOW)
        .expect("start");
    disk.job_step().expect("step");
    crash_in("online-slot-synced", || disk.job_step());
    drop(disk);
    let r = DiskJob::resume(&img)
        .run(&reg, &NoProgress, &AtomicBool::new(false))
        .expect("resume");
    assert_eq!(r.was, Some("encrypting-online"));
    assert_eq!(meta_state(&img), Some((DiskState::Encrypted, 0, 512, 1)));
    assert!(decrypted(dir.path(), &img) == plain);
}

/// `plain` encrypted into a new file (so its payload starts at 0) with a fresh native
/// keystore in `dir`.
fn encrypted_copy(dir: &std::path::Path, plain: &[u8]) -> std::path::PathBuf {
    NativeProvider::create("native", &dir.join("native.keystore")).expect("keystore");
    let (p, img) = (dir.join("p0.img"), dir.join("e.img"));
    std::fs::write(&p, plain).expect("write");
    DiskJob::encrypt(&p)
        .provider("native")
        .sector_size(SectorSize::S4096)
        .output(&img)
        .run(&registry(dir), &NoProgress, &AtomicBool::new(false))
        .expect("encrypt a copy");
    img
}

#[test]
fn an_online_decryption_ends_plaintext_with_no_metadata_and_serves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model: Vec<u8> = (0..LEN).map(|i| (i % 227) as u8 ^ 0x6b).collect();
    let img = encrypted_copy(dir.path(), &model);
    let reg = registry(dir.path());
    assert_eq!(meta_state(&img), Some((DiskState::Encrypted, 0, 4096, 1)));
    let disk = EncryptedDisk::open(&img, &reg).expect("open");
    disk.start_decrypt_in(&reg, WINDOW).expect("start");
    assert_eq!(
        meta_state(&img),
        Some((DiskState::DecryptingOnline, 0, 4096, 1))
    );
    let mut scratch = Scratch::default();
    for i in 0..3 {
        assert!(disk.job_step().expect("step"));
        guest_writes(&disk, &mut model, i, &mut scratch);
    }
    disk.flush().expect("flush");
    let raw = std::fs::read(&img).expect("raw");
    assert!(
        raw[..3 * WINDOW as usize] == model[..3 * WINDOW as usize],
        "the done windows are plaintext on the file"
    );
    assert!(raw[4 * WINDOW as usize..] != model[4 * WINDOW as usize..]);
    crash_in("online-done-synced", || disk.job_step());
    drop(disk);
    let disk = EncryptedDisk::open(&img, &reg).expect("reopen");
    assert_eq!(disk.job().map(|j| j.done), Some(4 * WINDOW));
    guest_writes(&disk, &mut model, 4, &mut scratch);
    while disk.job_step().expect("step") {}
    assert!(disk.is_plaintext(), "served on as plaintext");
    assert!(meta_state(&img).is_none() && !sidecar_path(&img).exists());
    assert!(!journal_path(&img).exists());
    disk.write_at(&[0x99; 1024], 2048, &mut scratch)
        .expect("after");
    model[2048..3072].fill(0x99);
    disk.flush().expect("flush");
    assert!(std::fs::read(&img).expect("file") == model, "plaintext");
    assert!(
        disk.start_decrypt_in(&reg, WINDOW).is_err(),
        "not encrypted any more"
    );
    drop(disk);
    // A crash after the metadata went: the stale journal is cleared at the next open.
    let model2 = model.clone();
    let reg2 = registry(dir.path());
    let disk = EncryptedDisk::open_plaintext(&img).expect("plaintext");
    disk.start_encrypt_in(&reg2, "native", WINDOW)
        .expect("encrypt again");
    while disk.job().is_some_and(|j| j.done < j.len) {
        disk.job_step().expect("step");
    }
    crash_in("online-meta-final", || disk.job_step());
    drop(disk);
    let disk = EncryptedDisk::open(&img, &reg2).expect("encrypted");
    disk.start_decrypt_in(&reg2, WINDOW).expect("decrypt");
    while disk.job().is_some_and(|j| j.done < j.len) {
        disk.job_step().expect("step");
    }
    crash_in("online-meta-final", || disk.job_step());
    drop(disk);
    assert!(journal_path(&img).exists() && meta_state(&img).is_none());
    let disk = EncryptedDisk::open_plaintext(&img).expect("plaintext again");
    assert!(!journal_path(&img).exists());
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(got == model2);
}

#[test]
fn what_an_online_job_cannot_do_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 211) as u8).collect();
    let (disk, img) = disk_with(dir.path(), &plain, SectorSize::S4096);
    let reg = registry(dir.path());
    let before = std::fs::read(sidecar_path(&img)).expect("sidecar");
    let err = disk
        .start_encrypt_in(&reg, "native", WINDOW)
        .expect_err("encrypted already");
    assert!(err.to_string().contains("encrypted already"), "{err}");
    assert!(disk.job().is_none() && !journal_path(&img).exists());
    assert_eq!(
        std::fs::read(sidecar_path(&img)).expect("sidecar"),
        before,
        "the metadata is as it was"
    );
    drop(disk);
    // A key manager that is down: the DEK cannot be unwrapped, the start fails.
    let sub = dir.path().join("copy");
    std::fs::create_dir(&sub).expect("dir");
    let img = encrypted_copy(&sub, &plain);
    let disk = EncryptedDisk::open(&img, &registry(&sub)).expect("open");
    let before = std::fs::read(sidecar_path(&img)).expect("sidecar");
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let down = move |_: &str| -> Result<Arc<dyn KeyProvider>> {
        calls2.fetch_add(1, Ordering::SeqCst);
        Err(crate::Error::input("the key manager is down (test)"))
    };
    assert!(disk.start_decrypt_in(&down, WINDOW).is_err());
    assert!(calls.load(Ordering::SeqCst) > 0, "the provider was asked");
    assert!(disk.job().is_none() && !journal_path(&img).exists());
    assert_eq!(
        std::fs::read(sidecar_path(&img)).expect("sidecar"),
        before,
        "the metadata is as it was"
    );
    let mut got = vec![0u8; LEN];
    disk.read_at(&mut got, 0).expect("read");
    assert!(got == plain, "and the disk serves as before");
}

#[test]
fn an_online_decryption_moves_a_moved_payload_back_to_the_start_through_crashes() {
    // Encrypted in place offline with a 64 KiB shift: the payload starts 64 KiB into its
    // file. The job is asked for windows of 256 KiB: they must shrink to the shift, or a
    // window would land on bytes still needed.
    let shift = 64 * 1024u64;
    let dir = tempfile::tempdir().expect("tempdir");
    NativeProvider::create("native", &dir.path().join("native.keystore")).expect("keystore");
    let reg = registry(dir.path());
    let img = dir.path().join("d.img");
    let mut model: Vec<u8> = (0..LEN).map(|i| (i % 241) as u8 ^ 0x17).collect();
    // A hole in the middle stays zeros (and is punched at the new place).
    model[5 * shift as usize..6 * shift as usize].fill(0);
    std::fs::write(&img, &model).expect("write");
    DiskJob::encrypt(&img)
        .provider("native")
        .sector_size(SectorSize::S4096)
        .tuning(Tuning::default().chunk(Some(shift)))
        .run(&reg, &NoProgress, &AtomicBool::new(false))
        .expect("encrypt in place");
    assert_eq!(
        meta_state(&img),
        Some((DiskState::Encrypted, shift, 4096, 1))
    );
    let disk = EncryptedDisk::open(&img, &reg).expect("open");
    disk.start_decrypt_in(&reg, 4 * shift).expect("start");
    assert_eq!(
        meta_state(&img),
        Some((DiskState::DecryptingOnline, shift, 4096, 1)),
        "recorded where the payload is now"
    );
    let mut scratch = Scratch::default();
    // Guest writes below the boundary, across it and ahead, between the windows; reads
    // across the boundary see the model.
    let write = |disk: &EncryptedDisk, model: &mut Vec<u8>, i: u64, scratch: &mut Scratch| {
        for at in [
            i * shift / 2 + 512,
            (i + 1) * shift - 1024,
            (i + 7) * shift + 4096,
        ] {
            let data = vec![i as u8 + 0x61; 2048];
            disk.write_at(&data, at, scratch).expect("write");
            model[at as usize..at as usize + data.len()].copy_from_slice(&data);
        }
        let mut got = vec![0u8; 3 * shift as usize];
        let at = i.saturating_sub(1) * shift;
        disk.read_at(&mut got, at).expect("read");
        assert!(
            got == model[at as usize..at as usize + got.len()],
            "window {i}"
        );
    };
    for i in 0..4 {
        assert!(disk.job_step().expect("step"));
        assert_eq!(
            disk.job().map(|j| j.done),
            Some((i + 1) * shift),
            "windows of the shift"
        );
        write(&disk, &mut model, i, &mut scratch);
    }
    disk.flush().expect("flush");
    let raw = std::fs::read(&img).expect("raw");
    assert!(
        raw[..4 * shift as usize] == model[..4 * shift as usize],
        "the done windows are plaintext at the start of the file"
    );
    crash_in("online-window-synced", || disk.job_step());
    drop(disk);
    let disk = EncryptedDisk::open(&img, &reg).expect("reopen");
    assert_eq!(disk.job().map(|j| j.done), Some(5 * shift), "replayed");
    write(&disk, &mut model, 5, &mut scratch);
    while disk.job().is_some_and(|j| j.done < j.len) {
        disk.job_step().expect("step");
    }
    // Cut, not yet recorded: the next open records the result.
    crash_in("online-payload-cut", || disk.job_step());
    drop(disk);
    assert_eq!(
        std::fs::metadata(&img).expect("file").len(),
        LEN as u64,
        "cut"
    );
    assert_eq!(
        meta_state(&img).map(|m| m.0),
        Some(DiskState::DecryptingOnline)
    );
    let disk = EncryptedDisk::open(&img, &reg).expect("reopen after the cut");
    assert!(!disk.job_step().expect("records the result"));
    assert!(disk.is_plaintext() && meta_state(&img).is_none());
    assert!(!journal_path(&img).exists() && !sidecar_path(&img).exists());
    disk.write_at(&[0x5a; 4096], 8192, &mut scratch)
        .expect("served on");
    model[8192..12288].fill(0x5a);
    disk.flush().expect("flush");
    drop(disk);
    assert!(
        std::fs::read(&img).expect("file") == model,
        "the file is the model"
    );
    assert_eq!(Disk::open(&img).expect("disk").payload_len(), LEN as u64);
    // The hole was punched at its new place, not written.
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&img).expect("file").blocks() * 512;
    assert!(blocks < LEN as u64, "{blocks} bytes allocated of {LEN}");
}
