//! Test fixture: a disk encrypted with a fresh native keystore, open for live I/O.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::EncryptedDisk;

use crate::provider::KeyProvider;
use crate::provider::native::NativeProvider;
use crate::{DiskJob, NoProgress, Result};

/// The registry of the native keystore in `dir` (made by [`disk_with`]).
pub(super) fn registry(
    dir: &std::path::Path,
) -> impl Fn(&str) -> Result<Arc<dyn KeyProvider>> + use<> {
    let ks = dir.join("native.keystore");
    move |name: &str| -> Result<Arc<dyn KeyProvider>> {
        Ok(Arc::new(NativeProvider::open(name, &ks)?))
    }
}

/// A side of an online job whose payload stays where `disk`'s is.
pub(super) fn in_place(disk: &EncryptedDisk, cipher: super::cipher::UnitCipher) -> super::Side {
    super::Side {
        cipher,
        base: disk.base(),
    }
}

/// `plain` encrypted in `dir` with `unit`-byte data units, and opened for live I/O.
pub(super) fn disk_with(
    dir: &std::path::Path,
    plain: &[u8],
    unit: vmcrypt_xts::SectorSize,
) -> (EncryptedDisk, std::path::PathBuf) {
    NativeProvider::create("native", &dir.join("native.keystore")).expect("keystore");
    let registry = registry(dir);
    let img = dir.join("d.img");
    std::fs::write(&img, plain).expect("write");
    DiskJob::encrypt(&img)
        .provider("native")
        .sector_size(unit)
        .run(&registry, &NoProgress, &AtomicBool::new(false))
        .expect("encrypt");
    (EncryptedDisk::open(&img, &registry).expect("open"), img)
}

/// The payload as stored, deciphered with `key` (holes as zeros).
pub(super) fn deciphered(disk: &EncryptedDisk, key: &crate::secret::Schedule) -> Vec<u8> {
    let mut raw = vec![0u8; disk.len() as usize];
    disk.payload.read_at(&mut raw, disk.base()).expect("raw");
    crate::holes::decrypt(key, &mut raw, 0, disk.unit).expect("decipher");
    raw
}

/// Runs `f` with a crash injected at failpoint `point` (it must come).
pub(super) fn crash_in<T>(point: &'static str, f: impl FnOnce() -> T) {
    use crate::failpoint::CRASH_AT;
    CRASH_AT.with(|c| c.set(Some(point)));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CRASH_AT.with(|c| c.set(None));
    assert!(r.is_err(), "crashed at {point}");
}

/// The image decrypted offline to a file: what every later tool sees.
pub(super) fn decrypted(dir: &std::path::Path, img: &std::path::Path) -> Vec<u8> {
    let out = dir.join("plain.img");
    let _ = std::fs::remove_file(&out);
    DiskJob::decrypt(img)
        .output(&out)
        .run(&registry(dir), &NoProgress, &AtomicBool::new(false))
        .expect("decrypt");
    std::fs::read(out).expect("read")
}
