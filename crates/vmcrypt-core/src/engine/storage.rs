//! The byte stores an in-place job works on: the payload and its journal. A trait, so that the
//! crash tests can run the real engine on a simulated disk that loses, keeps or tears every
//! write since the last sync.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Random-access storage with an explicit durability barrier.
pub trait Storage: Sync {
    /// Length in bytes.
    ///
    /// # Errors
    /// I/O errors.
    fn size(&self) -> Result<u64>;
    /// Reads exactly `buf.len()` bytes at `off`.
    ///
    /// # Errors
    /// I/O errors, including reading past the end.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;
    /// Writes all of `buf` at `off` (not durable until [`Storage::sync`]).
    ///
    /// # Errors
    /// I/O errors.
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()>;
    /// Makes every write so far durable. An error here is final: the job stops (it is never
    /// retried and ignored), and `resume` continues from what is durable.
    ///
    /// # Errors
    /// I/O errors.
    fn sync(&self) -> Result<()>;
    /// Cuts (or extends with zeros) the store to `len` bytes (not durable until
    /// [`Storage::sync`]).
    ///
    /// # Errors
    /// I/O errors.
    fn set_len(&self, len: u64) -> Result<()>;
    /// Starts making the writes so far durable, to shorten the next [`Storage::sync`]; it
    /// promises nothing, and doing nothing is a valid implementation (the default). Called
    /// from a helper thread while workers go on writing. An error is as final as one from
    /// [`Storage::sync`]: after a failed writeback the kernel may have dropped the data, so
    /// the job stops.
    ///
    /// # Errors
    /// I/O errors.
    fn writeback(&self) -> Result<()> {
        Ok(())
    }
    /// Whether [`Storage::writeback`] can shorten a sync (false for memory, and by default).
    fn writeback_helps(&self) -> bool {
        false
    }
    /// Makes `len` bytes at `off` a hole that reads as zeros (not durable until
    /// [`Storage::sync`]); false when this store cannot (the default): the caller writes
    /// zeros instead.
    ///
    /// # Errors
    /// I/O errors.
    fn punch(&self, _off: u64, _len: u64) -> Result<bool> {
        Ok(false)
    }
    /// The ranges of `[off, off + len)` that hold data; the rest are holes (read as zeros).
    /// By default everything is data.
    ///
    /// # Errors
    /// I/O errors.
    fn data_ranges(&self, off: u64, len: u64) -> Result<Vec<(u64, u64)>> {
        Ok(vec![(off, off + len)])
    }
}

/// A file.
pub struct FileStorage {
    file: File,
    path: PathBuf,
    /// The last data extent `SEEK_DATA`/`SEEK_HOLE` reported (start, end of data). A query
    /// inside it needs no seek: on tmpfs, `SEEK_HOLE` walks every page up to the next hole,
    /// so a dense file cost a walk to its end per query (a 1 GiB rekey spent 28 s in lseek).
    /// Writes only turn holes into data, so the extent stays data until this storage punches
    /// or truncates, which forget it; the job's disk lock keeps other writers away.
    extent: std::sync::Mutex<Option<(u64, u64)>>,
}

impl FileStorage {
    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, 0)
    }

    /// Opens an existing file that must not be a symlink (a journal: vmcrypt only ever makes
    /// a regular file there, and writes to it).
    ///
    /// # Errors
    /// [`Error::Io`] (`ELOOP` for a symlink); [`Error::NotRegularFile`] for a non-regular file.
    pub fn open_no_follow(path: &Path) -> Result<Self> {
        Self::open_with(path, libc::O_NOFOLLOW)
    }

    fn open_with(path: &Path, flags: i32) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking open, then regular files only: a FIFO in a journal's place is an error,
        // not a hang.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | flags)
            .open(path)
            .map_err(Error::io("open", path))?;
        if !file.metadata().map_err(Error::io("stat", path))?.is_file() {
            return Err(Error::NotRegularFile {
                path: path.to_path_buf(),
            });
        }
        // Reads and writes block as usual from here (O_NONBLOCK means nothing for a regular
        // file, but clear it all the same).
        rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty())
            .map_err(|e| Error::io("open", path)(e.into()))?;
        Ok(FileStorage {
            file,
            path: path.to_path_buf(),
            extent: std::sync::Mutex::new(None),
        })
    }

    /// Creates a new file (refusing to replace one).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn create(path: &Path) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(Error::io("create", path))?;
        Ok(FileStorage {
            file,
            path: path.to_path_buf(),
            extent: std::sync::Mutex::new(None),
        })
    }
}

impl Storage for FileStorage {
    fn size(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(Error::io("stat", &self.path))?
            .len())
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.file
            .read_exact_at(buf, off)
            .map_err(Error::io("read", &self.path))
    }

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.file
            .write_all_at(buf, off)
            .map_err(Error::io("write", &self.path))
    }

    fn sync(&self) -> Result<()> {
        // fdatasync: the data and what is needed to read it back (the file size included),
        // without the timestamps a full fsync would also commit.
        self.file
            .sync_data()
            .map_err(Error::io("fsync", &self.path))
    }

    fn writeback_helps(&self) -> bool {
        !crate::fsutil::memory_backed(&self.file)
    }

    fn writeback(&self) -> Result<()> {
        // A full fdatasync from the helper thread: the writes of the window so far go to the
        // disk while the workers produce the rest (std and rustix have no sync_file_range).
        self.sync()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        *self.extent() = None;
        self.file
            .set_len(len)
            .map_err(Error::io("resize", &self.path))
    }

    fn punch(&self, off: u64, len: u64) -> Result<bool> {
        *self.extent() = None;
        crate::holes::punch(&self.file, off, len).map_err(Error::io("punch a hole in", &self.path))
    }

    fn data_ranges(&self, off: u64, len: u64) -> Result<Vec<(u64, u64)>> {
        let end = off + len;
        let mut extent = self.extent();
        if let Some((d, h)) = *extent
            && d <= off
            && end <= h
        {
            return Ok(vec![(off, end)]);
        }
        let (ranges, last) = crate::holes::data_extents(&self.file, off, end)
            .map_err(Error::io("seek data in", &self.path))?;
        if last.is_some() {
            *extent = last;
        }
        Ok(ranges)
    }
}

impl FileStorage {
    fn extent(&self) -> std::sync::MutexGuard<'_, Option<(u64, u64)>> {
        self.extent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes `buf` at `off` keeping holes: an all-zero run over a hole is not written (it reads
/// as zeros already); one over data is written as zeros, since punching would free the old
/// blocks (plaintext, or ciphertext under a retired key) without overwriting them. Those
/// zero-written ranges go into `zeroed`: once a sync has made the zeros durable,
/// [`give_back`] punches them, and the job gives back the room.
///
/// # Errors
/// I/O errors.
pub(crate) fn write_sparse(
    storage: &dyn Storage,
    buf: &[u8],
    off: u64,
    unit: vmcrypt_xts::SectorSize,
    zeroed: &std::sync::Mutex<Vec<(u64, u64)>>,
) -> Result<()> {
    for (a, b, zero) in crate::holes::runs(buf, unit) {
        let at = off + a as u64;
        if !zero {
            storage.write_at(&buf[a..b], at)?;
            continue;
        }
        for (x, y) in storage.data_ranges(at, (b - a) as u64)? {
            let (x, y) = (x.max(at), y.min(off + b as u64));
            if x < y {
                let from = (x - off) as usize;
                storage.write_at(&buf[from..from + (y - x) as usize], x)?;
                zeroed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((x, y));
            }
        }
    }
    Ok(())
}

/// Punches the ranges [`write_sparse`] zeroed, after the sync that made their zeros durable.
/// A crash before or during this leaves zeros, which read the same.
///
/// # Errors
/// I/O errors.
pub(crate) fn give_back(
    storage: &dyn Storage,
    zeroed: &std::sync::Mutex<Vec<(u64, u64)>>,
) -> Result<()> {
    let ranges = std::mem::take(
        &mut *zeroed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for (a, b) in ranges {
        if !storage.punch(a, b - a)? {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{FileStorage, Storage};

    /// The remembered data extent answers queries inside it, and is forgotten when the
    /// storage punches or truncates: a hole made since is never reported as data.
    #[test]
    fn the_data_extent_is_remembered_until_a_punch_or_a_truncate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let s = FileStorage::create(&path).expect("create");
        s.write_at(&vec![9u8; 1 << 20], 0).expect("write");
        s.sync().expect("sync");
        assert_eq!(s.data_ranges(0, 1 << 20).expect("seek"), [(0, 1 << 20)]);
        assert_eq!(
            s.data_ranges(64 << 10, 64 << 10).expect("seek"),
            [(64 << 10, 128 << 10)]
        );
        assert!(s.punch(256 << 10, 256 << 10).expect("punch"));
        assert_eq!(
            s.data_ranges(0, 1 << 20).expect("seek"),
            [(0, 256 << 10), (512 << 10, 1 << 20)]
        );
        assert_eq!(s.data_ranges(300 << 10, 100 << 10).expect("seek"), []);
        // Writing into the hole makes it data again.
        s.write_at(&[1u8; 4096], 300 << 10).expect("write");
        assert_eq!(
            s.data_ranges(0, 1 << 20).expect("seek"),
            [
                (0, 256 << 10),
                (300 << 10, (300 << 10) + 4096),
                (512 << 10, 1 << 20)
            ]
        );
        s.set_len(128 << 10).expect("truncate");
        s.set_len(1 << 20).expect("extend");
        assert_eq!(s.data_ranges(0, 1 << 20).expect("seek"), [(0, 128 << 10)]);
    }
}
