//! One owner per disk: every job locks the files it works on before it reads or changes them,
//! and holds the locks to its end.
//!
//! The locks are open file description locks over the whole file (`vmcrypt_secmem::ofd`):
//! - a job that writes a file takes an exclusive lock; it conflicts with every other vmcrypt
//!   job and with the byte-range locks QEMU, qemu-img, qemu-io, qemu-nbd and
//!   qemu-storage-daemon take on an image they open (from byte 100), so vmcrypt refuses an
//!   image QEMU has open and QEMU refuses one vmcrypt holds;
//! - a job that only reads a file it cannot open for writing takes a shared lock and checks
//!   that nobody holds QEMU's write or resize permission bytes (101 and 103);
//! - read-only commands (`inspect`) take none and never block a job: they read metadata that
//!   is only ever replaced whole (temp file and rename), so they see the old or the new state.
//!
//! Files are locked in the order the caller gives: a VM's VMX first, then for each disk its
//! payload file (which is never replaced, so its lock is the one every job meets), then its
//! metadata file. Metadata files are replaced by rename; `carry_over` moves a held lock onto
//! the new file before it takes the old one's place, so the lock stays on whatever the path
//! names.
//!
//! Within one process, a thread that already holds a file may take it again (a VM job runs
//! disk jobs on its disks); another thread of the same process is refused like another
//! process, so a host agent running two jobs at once cannot mix them either.

mod holder;

use vmcrypt_secmem::ofd;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread::ThreadId;

use crate::{Error, Result};

/// What a job does with a file it locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// The job only reads it.
    Read,
    /// The job writes it (or may).
    Write,
}

/// Locks held on a set of files; dropping it releases them.
#[must_use = "the files are unlocked when this is dropped"]
#[derive(Debug)]
pub struct DiskLock {
    /// Entries of [`HELD`], by id: a file's key changes when a rewrite carries its lock over.
    ids: Vec<u64>,
}

/// A file's identity: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
}

struct Held {
    id: u64,
    key: FileKey,
    thread: ThreadId,
    depth: usize,
    access: Access,
    /// The open file description that carries the lock.
    file: File,
}

/// Every file this process holds a lock on.
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Vec<Held>> {
    // A panic while the registry was locked leaves it consistent (each update is one push,
    // one remove or one field store), so a poisoned mutex is still usable.
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

impl DiskLock {
    /// Locks `files`, in the order given, without waiting.
    ///
    /// # Errors
    /// [`Error::InUse`] when another job or program holds one of them (the locks taken so far
    /// are released again); [`Error::Io`]; [`Error::NotRegularFile`] for a file that is not a
    /// regular file.
    pub fn acquire(files: &[(&Path, Access)]) -> Result<DiskLock> {
        let mut lock = DiskLock { ids: Vec::new() };
        for (path, access) in files {
            let id = lock_one(path, *access)?;
            lock.ids.push(id);
        }
        Ok(lock)
    }

    /// Adds the locks of `other` to this set.
    pub fn extend(&mut self, mut other: DiskLock) {
        self.ids.append(&mut other.ids);
    }
}

impl Drop for DiskLock {
    fn drop(&mut self) {
        let mut held = registry();
        for id in self.ids.drain(..).rev() {
            if let Some(i) = held.iter().position(|h| h.id == id) {
                held[i].depth -= 1;
                if held[i].depth == 0 {
                    // Closing the last descriptor of the description releases the lock.
                    held.swap_remove(i);
                }
            }
        }
    }
}

fn key_of(m: &std::fs::Metadata) -> FileKey {
    FileKey {
        dev: m.dev(),
        ino: m.ino(),
    }
}

fn lock_one(path: &Path, access: Access) -> Result<u64> {
    let (file, access) = open_for_lock(path, access)?;
    let meta = file.metadata().map_err(Error::io("stat", path))?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    let key = key_of(&meta);
    let me = std::thread::current().id();
    let mut held = registry();
    if let Some(h) = held.iter_mut().find(|h| h.key == key) {
        if h.thread != me {
            return Err(in_use(path, "another job of this process".into()));
        }
        if access == Access::Write && h.access == Access::Read {
            // Upgrade in place: the same description, now exclusive.
            if !ofd::try_lock(&h.file, ofd::Kind::Write, 0, 0).map_err(Error::io("lock", path))? {
                return Err(in_use(path, holder::describe(&h.file)));
            }
            h.access = Access::Write;
        }
        h.depth += 1;
        return Ok(h.id);
    }
    // Still under the registry's mutex, so two threads cannot both find the file free here.
    take(&file, access, path)?;
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    held.push(Held {
        id,
        key,
        thread: me,
        depth: 1,
        access,
        file,
    });
    Ok(id)
}

/// Opens a file to carry a lock: non-blocking (a FIFO must not hang the open), for writing
/// when the job writes it or when it can (an exclusive lock needs a writable descriptor).
fn open_for_lock(path: &Path, access: Access) -> Result<(File, Access)> {
    let open = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
    };
    match open(true) {
        Ok(f) => Ok((f, Access::Write)),
        Err(e)
            if access == Access::Read
                && matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)) =>
        {
            let f = open(false).map_err(Error::io("open", path))?;
            Ok((f, Access::Read))
        }
        Err(e) => Err(Error::io("open", path)(e)),
    }
}

/// QEMU's permission bytes (`raw_apply_lock_bytes`): byte 100 + n is read-locked by a
/// program that holds permission n (0 consistent read, 1 write, 2 write-unchanged, 3 resize).
const QEMU_PERM_WRITE: u64 = 101;
const QEMU_PERM_RESIZE: u64 = 103;

fn take(file: &File, access: Access, path: &Path) -> Result<()> {
    let io = Error::io("lock", path);
    match access {
        Access::Write => {
            if !ofd::try_lock(file, ofd::Kind::Write, 0, 0).map_err(io)? {
                return Err(in_use(path, holder::describe(file)));
            }
        }
        Access::Read => {
            let writer = |at: u64| ofd::conflicts(file, ofd::Kind::Write, at, 1);
            let ok = ofd::try_lock(file, ofd::Kind::Read, 0, 0)
                .and_then(|got| Ok(got && !writer(QEMU_PERM_WRITE)? && !writer(QEMU_PERM_RESIZE)?))
                .map_err(io)?;
            if !ok {
                return Err(in_use(path, holder::describe(file)));
            }
        }
    }
    Ok(())
}

fn in_use(path: &Path, holder: String) -> Error {
    Error::InUse {
        path: path.to_path_buf(),
        holder,
    }
}

/// Before `new` is renamed over `target`: if this process holds a lock on `target`, takes the
/// same lock on `new` and files it in its place, so that the path stays locked when `new`
/// takes its name. Returns the key the lock was filed under before, for [`undo_carry_over`]
/// if the rename fails. Does nothing for a target this process does not hold.
pub(crate) fn carry_over(
    target: &Path,
    new: &File,
    new_path: &Path,
) -> Result<Option<CarriedLock>> {
    let Ok(old) = std::fs::metadata(target) else {
        return Ok(None);
    };
    let old = key_of(&old);
    let mut held = registry();
    let Some(h) = held.iter_mut().find(|h| h.key == old) else {
        return Ok(None);
    };
    let kind = match h.access {
        Access::Write => ofd::Kind::Write,
        Access::Read => ofd::Kind::Read,
    };
    let dup = new.try_clone().map_err(Error::io("open", new_path))?;
    let new_key = key_of(&dup.metadata().map_err(Error::io("stat", new_path))?);
    // A file this process just created exclusively: nobody else can hold it.
    if !ofd::try_lock(&dup, kind, 0, 0).map_err(Error::io("lock", new_path))? {
        return Err(in_use(new_path, holder::describe(&dup)));
    }
    let old_file = std::mem::replace(&mut h.file, dup);
    h.key = new_key;
    Ok(Some(CarriedLock {
        old_key: old,
        new_key,
        old_file,
    }))
}

/// A lock moved by [`carry_over`], with what it takes to move it back.
pub(crate) struct CarriedLock {
    old_key: FileKey,
    new_key: FileKey,
    old_file: File,
}

/// Puts a lock moved by [`carry_over`] back on the old file (the rename did not happen).
pub(crate) fn undo_carry_over(c: CarriedLock) {
    let mut held = registry();
    if let Some(h) = held.iter_mut().find(|h| h.key == c.new_key) {
        h.file = c.old_file;
        h.key = c.old_key;
    }
}

#[cfg(test)]
mod tests;
