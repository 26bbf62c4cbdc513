//! An encrypted disk opened for live I/O: what an NBD or vhost-user server reads and writes
//! for a running guest, by guest byte offset, with the XTS tweak of each data unit derived
//! here, never by the caller.
//!
//! The handle holds the disk's lock for its whole life, so no vmcrypt job (and no QEMU tool
//! that takes its image locks) can change the disk under a running guest. I/O is `pread` /
//! `pwrite` at the payload's place in its file; methods take `&self`, so one handle serves many
//! threads. Guest writes that overlap while both are in flight have no defined result on any
//! block device; partial-unit writes ([`EncryptedDisk::write_partial_at`]) serialize among
//! themselves per data unit, so two of them into one unit never lose each other's bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use vmcrypt_xts::{SectorSize, Xts};

use super::DiskState;
use crate::keysafe::KeyRing;
use crate::lock::DiskLock;
use crate::provider::ProviderRegistry;
use crate::{Error, Result};

/// The smallest write [`EncryptedDisk::write_partial_at`] takes, and its alignment: a
/// logical block of every virtual disk.
pub const MIN_BLOCK: u64 = 512;

/// Stripes of the partial-write locks (a partial write locks the stripe of its unit).
const STRIPES: usize = 64;

/// An encrypted disk open for reading and writing by guest offset; see the module docs.
pub struct EncryptedDisk {
    _lock: DiskLock,
    path: PathBuf,
    payload_path: PathBuf,
    file: File,
    xts: Xts,
    unit: SectorSize,
    /// Where the payload starts in its file.
    base: u64,
    len: u64,
    partial: [Mutex<()>; STRIPES],
}

impl std::fmt::Debug for EncryptedDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedDisk")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("unit", &self.unit.bytes())
            .finish_non_exhaustive()
    }
}

impl EncryptedDisk {
    /// Opens an encrypted disk under its lock and unwraps its DEK through `registry`.
    ///
    /// # Errors
    /// [`Error::InUse`] when a job or program holds the disk; [`Error::NotEncrypted`];
    /// [`Error::JobUnderWay`] while an in-place job is unfinished (resume it first);
    /// [`Error::Integrity`] for a payload that does not match its metadata;
    /// [`Error::UnwrapFailed`]; provider and I/O errors.
    pub fn open(path: &Path, registry: &dyn ProviderRegistry) -> Result<EncryptedDisk> {
        let (lock, disk) = super::open_for_job(path)?;
        let meta = disk.require_encrypted()?;
        if meta.state != DiskState::Encrypted {
            return Err(Error::job_under_way(path, meta.state.as_str()));
        }
        let key = disk.open_key(&KeyRing::new(registry))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(disk.payload_path())
            .map_err(Error::io("open", disk.payload_path()))?;
        tracing::info!(disk = %path.display(), bytes = meta.identity.payload_size, "disk open for live I/O");
        Ok(EncryptedDisk {
            _lock: lock,
            path: path.to_path_buf(),
            payload_path: disk.payload_path().to_path_buf(),
            file,
            xts: key.secret.xts()?,
            unit: meta.identity.sector_size,
            base: meta.identity.payload_offset,
            len: meta.identity.payload_size,
            partial: std::array::from_fn(|_| Mutex::new(())),
        })
    }

    /// The disk that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The guest-visible size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the disk has no bytes (never, for a disk vmcrypt encrypted).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The XTS data unit in bytes (512 or 4096): reads and [`EncryptedDisk::write_at`] take
    /// whole, aligned units.
    pub fn unit_size(&self) -> usize {
        self.unit.bytes()
    }

    /// Reads and decrypts whole data units at guest byte `offset` into `buf`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range that is not whole aligned units or runs past the
    /// end (nothing is read); [`Error::Io`].
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len(), self.unit.bytes() as u64)?;
        self.file
            .read_exact_at(buf, self.base + offset)
            .map_err(Error::io("read", &self.payload_path))?;
        self.xts.decrypt_sectors(buf, offset, self.unit)?;
        Ok(())
    }

    /// Encrypts and writes whole data units at guest byte `offset`. Durable after
    /// [`EncryptedDisk::flush`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range that is not whole aligned units or runs past the
    /// end (nothing is written); [`Error::Io`].
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len(), self.unit.bytes() as u64)?;
        let mut sealed = buf.to_vec();
        self.xts.encrypt_sectors(&mut sealed, offset, self.unit)?;
        self.file
            .write_all_at(&sealed, self.base + offset)
            .map_err(Error::io("write", &self.payload_path))
    }

    /// Writes a range aligned to [`MIN_BLOCK`] (512 bytes) that need not be whole data units:
    /// the units it covers in part are read, decrypted, patched and written back (a
    /// read-modify-write), whole units in between are written directly.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range not aligned to 512 bytes or past the end (nothing
    /// is written); [`Error::Io`].
    pub fn write_partial_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len(), MIN_BLOCK)?;
        let unit = self.unit.bytes() as u64;
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let unit_start = at - at % unit;
            let unit_end = unit_start + unit;
            let upto = end.min(unit_end);
            let part = &buf[(at - offset) as usize..(upto - offset) as usize];
            if at == unit_start && upto == unit_end {
                // Whole units from here: one write for as many as the range holds.
                let whole_end = end - (end - at) % unit;
                self.write_at(
                    &buf[(at - offset) as usize..(whole_end - offset) as usize],
                    at,
                )?;
                at = whole_end;
                continue;
            }
            let stripe = &self.partial[(unit_start / unit) as usize % STRIPES];
            let _serial = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            let mut block = zeroize::Zeroizing::new(vec![0u8; unit as usize]);
            self.read_at(&mut block, unit_start)?;
            let from = (at - unit_start) as usize;
            block[from..from + part.len()].copy_from_slice(part);
            self.write_at(&block, unit_start)?;
            at = upto;
        }
        Ok(())
    }

    /// Makes every write so far durable (`fdatasync` of the payload file).
    ///
    /// # Errors
    /// [`Error::Io`]; a failed flush is never retried (the page cache may have dropped the
    /// data), it is reported.
    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(Error::io("fsync", &self.payload_path))
    }

    fn check(&self, offset: u64, len: usize, align: u64) -> Result<()> {
        let len = len as u64;
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !fits || !offset.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(Error::input(format!(
                "{}: I/O of {len} bytes at {offset} is not whole {align}-byte blocks inside the disk's {} bytes",
                self.path.display(),
                self.len
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::provider::KeyProvider;
    use crate::provider::native::NativeProvider;
    use crate::{DiskJob, NoProgress};

    #[test]
    fn reads_and_writes_by_offset_match_the_offline_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = dir.path().join("native.keystore");
        NativeProvider::create("native", &ks).expect("keystore");
        let registry = move |name: &str| -> Result<Arc<dyn KeyProvider>> {
            Ok(Arc::new(NativeProvider::open(name, &ks)?))
        };
        let img = dir.path().join("d.img");
        let plain: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&img, &plain).expect("write");
        let never = AtomicBool::new(false);
        DiskJob::encrypt(&img)
            .provider("native")
            .run(&registry, &NoProgress, &never)
            .expect("encrypt");
        let mut expect = plain.clone();
        {
            let disk = EncryptedDisk::open(&img, &registry).expect("open");
            assert_eq!(disk.len(), plain.len() as u64);
            let again = std::thread::scope(|s| {
                s.spawn(|| EncryptedDisk::open(&img, &registry).map(|_| ()))
                    .join()
                    .expect("thread")
            });
            assert!(
                matches!(again, Err(Error::InUse { .. })),
                "the handle holds the disk: {again:?}"
            );
            let mut buf = vec![0u8; 8192];
            disk.read_at(&mut buf, 4096).expect("read");
            assert_eq!(buf, plain[4096..12288]);
            let new = vec![0xabu8; 4096];
            disk.write_at(&new, 8192).expect("write");
            expect[8192..12288].copy_from_slice(&new);
            // 512-byte writes inside a unit, across a boundary, and into whole units.
            for (at, n) in [(512u64, 512usize), (3584, 1024), (16384 - 512, 4096 + 1024)] {
                let bytes: Vec<u8> = (0..n).map(|i| (i % 7) as u8 + 1).collect();
                disk.write_partial_at(&bytes, at).expect("partial");
                expect[at as usize..at as usize + n].copy_from_slice(&bytes);
            }
            for (at, n) in [(100u64, 4096usize), (4096, 100), (plain.len() as u64, 4096)] {
                assert!(disk.read_at(&mut vec![0; n], at).is_err(), "{at} {n}");
                assert!(disk.write_at(&vec![0; n], at).is_err(), "{at} {n}");
            }
            assert!(disk.write_partial_at(&[0; 100], 512).is_err());
            disk.flush().expect("flush");
        }
        let out = dir.path().join("d.plain");
        DiskJob::decrypt(&img)
            .output(&out)
            .run(&registry, &NoProgress, &never)
            .expect("decrypt");
        assert_eq!(std::fs::read(&out).expect("read"), expect);
    }
}
