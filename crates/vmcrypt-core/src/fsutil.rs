//! Durable file updates: write a temp file in the same directory, fsync it, rename it over the
//! target, fsync the directory. A reader sees the old file or the new one, never a mix, and
//! after the call returns the new one survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Atomically replaces (or creates) `path` with `bytes`, with permission `mode`. A lock this
/// process holds on `path` ([`crate::lock`]) moves to the new file.
///
/// # Errors
/// [`Error::Io`]; the target is then unchanged and the temp file removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    // A symlink is followed: its target is what gets rewritten, in the target's folder, and
    // the link stays a link (docs/threat-model.md, "Symlinks").
    let resolved;
    let path = if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = path
            .canonicalize()
            .map_err(Error::io("resolve symlink", path))?;
        resolved.as_path()
    } else {
        path
    };
    let dir = parent_dir(path);
    let tmp = temp_name(path)?;
    let result = (|| {
        let f = write_temp(&tmp, bytes, mode)?;
        // A job that holds `path` locked keeps it locked: the new file is locked before it
        // takes the name.
        let carried = crate::lock::carry_over(path, &f, &tmp)?;
        if let Err(e) = std::fs::rename(&tmp, path) {
            if let Some(c) = carried {
                crate::lock::undo_carry_over(c);
            }
            return Err(Error::io("rename into place", path)(e));
        }
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a folder (and its missing parents) with mode 0700 whatever the umask: folders
/// vmcrypt makes hold keystores and configuration. An existing folder is left as it is.
///
/// # Errors
/// [`Error::Io`].
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("create directory", dir))?;
    // The umask may have taken bits away; never added any. Make it exactly 0700.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(Error::io("chmod", dir))
}

/// Creates `path` with `bytes` (permission `mode`), durably, and only if no file has that name:
/// two processes creating the same file at once cannot replace each other's (a keystore
/// replaced under a job that already encrypted with it would lose that disk). The file appears
/// whole or not at all.
///
/// # Errors
/// [`Error::Exists`] if `path` exists; [`Error::Io`].
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_name(path)?;
    let result = (|| {
        drop(write_temp(&tmp, bytes, mode)?);
        // link(2) fails when the name exists, where rename(2) would replace it.
        std::fs::hard_link(&tmp, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                Error::io("create", path)(e)
            }
        })?;
        std::fs::remove_file(&tmp).map_err(Error::io("remove", &tmp))?;
        sync_dir(&parent_dir(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh temp name beside `path`.
fn temp_name(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 6];
    crate::secret::random_fill(&mut rnd)?;
    let tag: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    Ok(parent_dir(path).join(format!(".{name}.vmcrypt-tmp-{tag}")))
}

/// Creates `tmp` (which must not exist) with `bytes` and fsyncs it.
fn write_temp(tmp: &Path, bytes: &[u8], mode: u32) -> Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(Error::io("create", tmp))?;
    f.write_all(bytes).map_err(Error::io("write", tmp))?;
    f.sync_all().map_err(Error::io("fsync", tmp))?;
    Ok(f)
}

/// Opens a file for reading without blocking (a FIFO or a device beside an image must not hang
/// the open) and checks that it is a regular file (following symlinks, as every reader does).
///
/// # Errors
/// [`Error::Io`]; [`Error::NotRegularFile`] for anything but a regular file.
pub fn open_regular(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(Error::io("open", path))?;
    regular(f, path)
}

/// `f`, if it is a regular file.
fn regular(f: File, path: &Path) -> Result<File> {
    let meta = f.metadata().map_err(Error::io("stat", path))?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(f)
}

/// Opens a log for appending (created with `mode` if missing, its missing parent directories
/// 0700): never through a symlink, and only a regular file. Each `write` of a line on it lands
/// whole at the end, whoever else appends (`O_APPEND`).
///
/// # Errors
/// [`Error::Io`] (a symlink is `ELOOP`); [`Error::NotRegularFile`].
pub fn open_append(path: &Path, mode: u32) -> Result<File> {
    let dir = parent_dir(path);
    if !dir.exists() {
        create_private_dir(&dir)?;
    }
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(Error::io("open", path))?;
    regular(f, path)
}

/// Reads a whole metadata file of at most `cap` bytes, opened as [`open_regular`] does; a
/// longer file is refused without reading more than `cap + 1` bytes, whatever its size says
/// (a file can grow while it is read).
///
/// # Errors
/// [`Error::Io`]; [`Error::NotRegularFile`]; [`Error::InvalidInput`] for a file too large.
pub fn read_bounded(path: &Path, cap: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = open_regular(path)?;
    let mut out = Vec::new();
    f.take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Error::io("read", path))?;
    if out.len() > cap {
        return Err(Error::input(format!(
            "{} is larger than {cap} bytes; not a vmcrypt metadata file",
            path.display()
        )));
    }
    Ok(out)
}

/// Removes a file and makes the removal durable. A symlink is removed itself, never its
/// target (see [`remove_followed`]).
///
/// # Errors
/// [`Error::Io`].
pub fn remove_durable(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(Error::io("remove", path))?;
    sync_dir(&parent_dir(path))
}

/// Removes a metadata file that may be a symlink: its target, then the link, each durably
/// (metadata symlinks are followed for every read and write, docs/threat-model.md).
///
/// # Errors
/// [`Error::Io`].
pub fn remove_followed(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && let Ok(target) = path.canonicalize()
    {
        remove_durable(&target)?;
    }
    remove_durable(path)
}

/// fsyncs a directory so that renames and creations in it are durable.
///
/// # Errors
/// [`Error::Io`].
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// Starts writing `file`'s dirty pages to its disk without waiting, and lets the kernel drop
/// those already written (`posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file).
///
/// For a file a job creates and does not read back. Why not an fdatasync per step: on ext4 each
/// one commits the journal (the new blocks) and flushes the disk's cache, and a new-file job
/// that did so every 16 MiB took 3.0-4.3 s for 2 GiB where this took 0.61-0.84 s
/// (docs/performance.md, "New files"). Dropping the written pages keeps a job over a large
/// disk from pushing the host's other files out of the page cache. It guarantees nothing: the
/// job's final fsync still makes the file durable, and reports any error the background
/// writeback met.
///
/// # Errors
/// The call's error (`EBADF`, `ESPIPE` for a pipe); none for a short or missing range.
pub fn start_writeback(file: &File) -> std::io::Result<()> {
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).map_err(Into::into)
}

/// Whether a file lives in memory (tmpfs, ramfs), where flushing it to a disk does nothing.
pub fn memory_backed(file: &std::fs::File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::fstatfs(file).is_ok_and(|s| {
        // f_type's integer type differs between architectures.
        #[allow(clippy::unnecessary_cast)]
        let t = s.f_type as i64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_a_new_file_never_replaces_one_even_in_a_race() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("native.keystore");
        for round in 0..20u8 {
            let _ = std::fs::remove_file(&p);
            let results: Vec<(u8, Result<()>)> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4u8)
                    .map(|i| {
                        let p = &p;
                        s.spawn(move || (i, write_new(p, &[round, i], 0o600)))
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            let won: Vec<u8> = results
                .iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(i, _)| *i)
                .collect();
            assert_eq!(won.len(), 1, "exactly one creates the file");
            assert_eq!(
                std::fs::read(&p).expect("read"),
                vec![round, won[0]],
                "the winner's bytes"
            );
            for (_, r) in &results {
                if let Err(e) = r {
                    assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
                }
            }
        }
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn started_writeback_keeps_every_byte_and_reports_a_pipe() {
        use std::io::{Read, Seek};
        // A file on the checkout's disk and one in memory: the bytes survive the dropped pages.
        let dirs = [env!("CARGO_MANIFEST_DIR"), "/dev/shm"];
        let data: Vec<u8> = (0..4 * 1024 * 1024 + 512)
            .map(|i| (i % 251) as u8)
            .collect();
        for dir in dirs {
            let mut f = tempfile::tempfile_in(dir).expect("temp file");
            f.write_all(&data[..data.len() / 2]).expect("write");
            start_writeback(&f).expect("start writeback");
            f.write_all(&data[data.len() / 2..]).expect("write");
            start_writeback(&f).expect("start writeback");
            f.sync_all().expect("fsync");
            let mut back = Vec::new();
            f.rewind().expect("seek");
            f.read_to_end(&mut back).expect("read");
            assert!(back == data, "{dir}: bytes changed");
        }
        let (r, _w) = std::io::pipe().expect("pipe");
        let pipe = File::from(std::os::fd::OwnedFd::from(r));
        assert!(
            start_writeback(&pipe).is_err(),
            "a pipe has no pages to write back"
        );
    }

    #[test]
    fn tmpfs_is_memory_backed() {
        let f = tempfile::tempfile_in("/dev/shm").expect("a file in /dev/shm (tmpfs on Linux)");
        assert!(memory_backed(&f));
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f.vmx");
        write_atomic(&p, b"one", 0o600).expect("write");
        write_atomic(&p, b"two", 0o600).expect("rewrite");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 1);
    }

    #[test]
    fn failure_leaves_target_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("missing-dir").join("f");
        assert!(write_atomic(&p, b"x", 0o600).is_err());
    }
}
