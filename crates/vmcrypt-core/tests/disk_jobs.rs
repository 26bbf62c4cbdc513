//! Disk jobs through the public API: cancellation leaves every disk as it was, and the result
//! does not depend on the thread count.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use vmcrypt_core::disk::{Disk, DiskState, journal_path};
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::provider::{KeyProvider, Registry};
use vmcrypt_core::{DiskJob, Error, NoProgress, Progress};

const LEN: usize = 20 << 20; // three 8 MiB chunks

/// Sets the cancel flag as soon as the first chunk is done.
struct CancelAfterFirstChunk<'a>(&'a AtomicBool);

impl Progress for CancelAfterFirstChunk<'_> {
    fn advance(&self, _bytes: u64) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn image(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let p = dir.join("disk.img");
    let data: Vec<u8> = (0..LEN).map(|i| (i / 4096) as u8 ^ (i as u8)).collect();
    std::fs::write(&p, &data).expect("write image");
    (p, data)
}

/// A temp dir and a registry holding its native provider "native".
fn setup() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = NativeProvider::create("native", &dir.path().join("ks")).expect("keystore");
    (dir, Registry::of(Arc::new(p) as Arc<dyn KeyProvider>))
}

fn encrypt(img: &Path) -> DiskJob {
    DiskJob::encrypt(img).provider("native")
}

#[test]
fn cancelled_in_place_encrypt_is_resumed() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let flag = AtomicBool::new(false);
    let err = encrypt(&img)
        .run(&native, &CancelAfterFirstChunk(&flag), &flag)
        .expect_err("cancelled");
    assert!(
        // The payload (20 MiB) is one data-shift window: cancelled inside it, no window is
        // durable yet, and resume redoes it from its intact source.
        matches!(err, Error::Cancelled { done, restored: false } if done == 0),
        "{err:?}"
    );
    let disk = Disk::open(&img).expect("open");
    assert_eq!(
        disk.encryption().expect("metadata kept").state,
        DiskState::Encrypting
    );
    assert!(journal_path(&img).exists());
    // Every other job refuses the disk until it is resumed.
    let never = AtomicBool::new(false);
    assert!(
        DiskJob::decrypt(&img)
            .output(dir.path().join("x"))
            .run(&native, &NoProgress, &never)
            .is_err()
    );
    let r = DiskJob::resume(&img)
        .threads(2)
        .run(&native, &NoProgress, &never)
        .expect("resume");
    assert_eq!(r.from, Some(0));
    assert!(r.bytes == LEN as u64, "{r:?}");
    assert!(!journal_path(&img).exists());
    assert_eq!(
        Disk::open(&img)
            .expect("open")
            .encryption()
            .expect("encrypted")
            .state,
        DiskState::Encrypted
    );
    // Resuming again is harmless.
    assert_eq!(
        DiskJob::resume(&img)
            .threads(2)
            .run(&native, &NoProgress, &never)
            .expect("again")
            .bytes,
        0
    );
    DiskJob::decrypt(&img)
        .run(&native, &NoProgress, &never)
        .expect("decrypt");
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn cancelled_in_place_decrypt_is_resumed() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let never = AtomicBool::new(false);
    encrypt(&img)
        .run(&native, &NoProgress, &never)
        .expect("encrypt");
    let flag = AtomicBool::new(false);
    let err = DiskJob::decrypt(&img)
        .run(&native, &CancelAfterFirstChunk(&flag), &flag)
        .expect_err("cancelled");
    assert!(
        matches!(
            err,
            Error::Cancelled {
                restored: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        Disk::open(&img)
            .expect("open")
            .encryption()
            .expect("meta")
            .state,
        DiskState::Decrypting
    );
    DiskJob::resume(&img)
        .threads(2)
        .run(&native, &NoProgress, &never)
        .expect("resume");
    assert!(Disk::open(&img).expect("open").encryption().is_none());
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn deep_rekey_rewrites_every_sector_under_a_new_dek() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let never = AtomicBool::new(false);
    encrypt(&img)
        .run(&native, &NoProgress, &never)
        .expect("encrypt");
    let before = std::fs::read(&img).expect("read");
    let generation = DiskJob::rekey_deep(&img)
        .threads(2)
        .run(&native, &NoProgress, &never)
        .expect("deep rekey")
        .generation;
    assert_eq!(generation, Some(2));
    let after = std::fs::read(&img).expect("read");
    assert!(
        before
            .chunks(4096)
            .zip(after.chunks(4096))
            .all(|(a, b)| a != b),
        "a sector kept its old ciphertext"
    );
    let meta = Disk::open(&img)
        .expect("open")
        .encryption()
        .cloned()
        .expect("meta");
    assert_eq!(
        (meta.generation, meta.state, meta.keys().len()),
        (2, DiskState::Encrypted, 1)
    );
    DiskJob::decrypt(&img)
        .run(&native, &NoProgress, &never)
        .expect("decrypt");
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn cancelled_output_job_leaves_no_output() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let out = dir.path().join("out.img");
    let flag = AtomicBool::new(false);
    let err = encrypt(&img)
        .output(&out)
        .run(&native, &CancelAfterFirstChunk(&flag), &flag)
        .expect_err("cancelled");
    assert!(matches!(err, Error::Cancelled { .. }), "{err:?}");
    assert!(!out.exists());
    assert!(!dir.path().join("out.img.vmcrypt").exists());
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn same_ciphertext_for_any_thread_count() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let never = AtomicBool::new(false);
    let one = dir.path().join("one.img");
    encrypt(&img)
        .output(&one)
        .threads(1)
        .run(&native, &NoProgress, &never)
        .expect("encrypt");
    // Decrypt the one-thread ciphertext with three threads, and compare with the plaintext.
    let back = dir.path().join("back.img");
    DiskJob::decrypt(&one)
        .output(&back)
        .threads(3)
        .run(&native, &NoProgress, &never)
        .expect("decrypt");
    assert_eq!(std::fs::read(&back).expect("read"), data);
}
