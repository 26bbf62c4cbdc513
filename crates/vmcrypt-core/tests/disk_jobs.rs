//! Disk jobs through the public API: cancellation leaves every disk as it was, and the result
//! does not depend on the thread count.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use vmcrypt_core::disk::{
    DecryptOptions, Disk, DiskState, EncryptOptions, NoProgress, Progress, decrypt_disk,
    encrypt_disk, journal_path, rekey_disk_deep, resume_disk,
};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{Error, Result};

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

fn setup() -> (tempfile::TempDir, NativeProvider) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = NativeProvider::create("native", &dir.path().join("ks")).expect("keystore");
    (dir, p)
}

fn lookup(ks: &Path) -> impl Fn(&str) -> Result<Box<dyn KeyProvider>> + '_ {
    move |name: &str| -> Result<Box<dyn KeyProvider>> {
        Ok(Box::new(NativeProvider::open(name, ks)?))
    }
}

#[test]
fn cancelled_in_place_encrypt_is_resumed() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let ks = dir.path().join("ks");
    let flag = AtomicBool::new(false);
    let err = encrypt_disk(
        &img,
        &native,
        &EncryptOptions::in_place(),
        &CancelAfterFirstChunk(&flag),
        &flag,
    )
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
        decrypt_disk(
            &img,
            &lookup(&ks),
            &DecryptOptions::to_output(dir.path().join("x")),
            &NoProgress,
            &never
        )
        .is_err()
    );
    let r = resume_disk(&img, &lookup(&ks), 2, &NoProgress, &never).expect("resume");
    assert_eq!(r.from, 0);
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
        resume_disk(&img, &lookup(&ks), 2, &NoProgress, &never)
            .expect("again")
            .bytes,
        0
    );
    decrypt_disk(
        &img,
        &lookup(&ks),
        &DecryptOptions::in_place(),
        &NoProgress,
        &never,
    )
    .expect("decrypt");
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn cancelled_in_place_decrypt_is_resumed() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let never = AtomicBool::new(false);
    encrypt_disk(
        &img,
        &native,
        &EncryptOptions::in_place(),
        &NoProgress,
        &never,
    )
    .expect("encrypt");
    let ks = dir.path().join("ks");
    let flag = AtomicBool::new(false);
    let err = decrypt_disk(
        &img,
        &lookup(&ks),
        &DecryptOptions::in_place(),
        &CancelAfterFirstChunk(&flag),
        &flag,
    )
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
    resume_disk(&img, &lookup(&ks), 2, &NoProgress, &never).expect("resume");
    assert!(Disk::open(&img).expect("open").encryption().is_none());
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn deep_rekey_rewrites_every_sector_under_a_new_dek() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let never = AtomicBool::new(false);
    let ks = dir.path().join("ks");
    encrypt_disk(
        &img,
        &native,
        &EncryptOptions::in_place(),
        &NoProgress,
        &never,
    )
    .expect("encrypt");
    let before = std::fs::read(&img).expect("read");
    let (_, generation) =
        rekey_disk_deep(&img, &lookup(&ks), 2, &NoProgress, &never).expect("deep rekey");
    assert_eq!(generation, 2);
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
    decrypt_disk(
        &img,
        &lookup(&ks),
        &DecryptOptions::in_place(),
        &NoProgress,
        &never,
    )
    .expect("decrypt");
    assert_eq!(std::fs::read(&img).expect("read"), data);
}

#[test]
fn cancelled_output_job_leaves_no_output() {
    let (dir, native) = setup();
    let (img, data) = image(dir.path());
    let out = dir.path().join("out.img");
    let flag = AtomicBool::new(false);
    let err = encrypt_disk(
        &img,
        &native,
        &EncryptOptions::to_output(&out),
        &CancelAfterFirstChunk(&flag),
        &flag,
    )
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
    encrypt_disk(
        &img,
        &native,
        &EncryptOptions::to_output(&one).threads(1),
        &NoProgress,
        &never,
    )
    .expect("encrypt");
    let ks = dir.path().join("ks");
    // Decrypt the one-thread ciphertext with three threads, and compare with the plaintext.
    let back = dir.path().join("back.img");
    decrypt_disk(
        &one,
        &lookup(&ks),
        &DecryptOptions::to_output(&back).threads(3),
        &NoProgress,
        &never,
    )
    .expect("decrypt");
    assert_eq!(std::fs::read(&back).expect("read"), data);
}
