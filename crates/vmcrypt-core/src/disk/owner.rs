//! Who may touch a disk: the lock a job holds on its files ([`crate::lock`]), and the rule
//! that a descriptor or VMX names only files in its own folder.

use std::path::Path;

use super::Disk;
use crate::{Error, Result};

/// Locks the disk at `path` for a job ([`crate::lock`]): its payload file, then its metadata
/// file (descriptor or sidecar) if that exists and is another file. Taken before the job reads
/// anything it relies on; the job opens the disk again under the lock.
///
/// # Errors
/// [`Error::InUse`] when another job or program holds the disk; the errors of
/// [`Disk::open`].
pub fn lock_for_job(path: &Path) -> Result<crate::lock::DiskLock> {
    let lock = lock_files(path)?;
    crate::failpoint::pause("locked");
    Ok(lock)
}

/// The locks of [`lock_for_job`], for a job that locks more files.
pub(crate) fn lock_files(path: &Path) -> Result<crate::lock::DiskLock> {
    lock_disk(&Disk::open(path)?)
}

fn lock_disk(disk: &Disk) -> Result<crate::lock::DiskLock> {
    use crate::lock::{Access, DiskLock};
    let mut files = vec![(disk.payload_path(), Access::Write)];
    let meta = disk.metadata_path();
    if meta != disk.payload_path() && meta.exists() {
        files.push((meta, Access::Write));
    }
    DiskLock::acquire(&files)
}

/// Opens the disk at `path` for a job and locks it, as [`lock_for_job`] does, reading it once:
/// the disk read to find its files is the one the job uses, unless its files changed between
/// the read and the lock (another job finished meanwhile), when it is read again under the
/// lock.
///
/// # Errors
/// As [`lock_for_job`].
pub(crate) fn open_for_job(path: &Path) -> Result<(crate::lock::DiskLock, Disk)> {
    let disk = Disk::open(path)?;
    let before = disk.stamp();
    let lock = lock_disk(&disk)?;
    crate::failpoint::pause("locked");
    let disk = if disk.stamp() == before {
        disk
    } else {
        Disk::open(path)?
    };
    Ok((lock, disk))
}

static OUTSIDE_FOLDER_ALLOWED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Lets a VMDK's flat extent, and a VMX's disks, resolve (through a symlink or an absolute
/// path) outside the folder of the file that names them. Refused by default: a hostile
/// descriptor or VMX must not point a job run by root at any file of the host. Process-wide.
pub fn dangerous_allow_outside_folder(yes: bool) {
    OUTSIDE_FOLDER_ALLOWED.store(yes, std::sync::atomic::Ordering::Relaxed);
}

/// Checks that `file`, named by `namer`, resolves inside `namer`'s folder, unless
/// [`dangerous_allow_outside_folder`] allowed otherwise.
///
/// # Errors
/// [`Error::InvalidInput`] for a file outside; [`Error::Io`] when a path cannot be resolved.
pub(crate) fn check_inside_folder(file: &Path, namer: &Path) -> Result<()> {
    if OUTSIDE_FOLDER_ALLOWED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let folder = crate::fsutil::parent_dir(namer);
    let folder = folder
        .canonicalize()
        .map_err(Error::io("resolve", &folder))?;
    let real = file.canonicalize().map_err(Error::io("resolve", file))?;
    if real.parent() != Some(folder.as_path()) {
        return Err(Error::input(format!(
            "{} (named by {}) resolves to {}, outside {}: refused, since a descriptor or VMX could point a job at any file; pass --allow-outside-folder if this layout is intended",
            file.display(),
            namer.display(),
            real.display(),
            folder.display()
        )));
    }
    Ok(())
}
