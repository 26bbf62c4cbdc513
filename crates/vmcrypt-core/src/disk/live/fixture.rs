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
    disk.payload.read_at(&mut raw, disk.base).expect("raw");
    crate::holes::decrypt(key, &mut raw, 0, disk.unit).expect("decipher");
    raw
}
