//! Durable file updates: write a temp file in the same directory, fsync it, rename it over the
//! target, fsync the directory. A reader sees the old file or the new one, never a mix, and
//! after the call returns the new one survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Atomically replaces (or creates) `path` with `bytes`, with permission `mode`.
///
/// # Errors
/// [`Error::Io`]; the target is then unchanged and the temp file removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 6];
    crate::secret::random_fill(&mut rnd)?;
    let tag: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.vmcrypt-tmp-{tag}"));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(Error::io("create", &tmp))?;
        f.write_all(bytes).map_err(Error::io("write", &tmp))?;
        f.sync_all().map_err(Error::io("fsync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io("rename into place", path))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes a file and makes the removal durable.
///
/// # Errors
/// [`Error::Io`].
pub fn remove_durable(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(Error::io("remove", path))?;
    sync_dir(&parent_dir(path))
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

/// The directory holding `path` (`.` for a bare file name).
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
