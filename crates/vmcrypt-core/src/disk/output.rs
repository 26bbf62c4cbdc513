//! Output planning: where a copy of a disk goes (its payload and metadata files), checked
//! before any work, and removed again if the job fails.

use std::path::{Path, PathBuf};

use super::{Disk, DiskFormat, sidecar_path};
use crate::{Error, Result};

/// Where an output disk goes, planned and checked before any work.
pub(crate) struct OutputPaths {
    /// The disk to be (its files do not exist yet).
    pub disk: Disk,
    /// The files the job creates, removed again if it fails.
    pub created: Vec<PathBuf>,
}

impl OutputPaths {
    /// Plans a copy of `src` at `out`: a raw image and its sidecar, or a VMDK descriptor and
    /// its flat extent beside it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an output that exists, is the input, or takes a name the
    /// input's own files use; a VMDK output not named `*.vmdk`.
    pub fn plan(src: &Disk, out: &Path) -> Result<OutputPaths> {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        };
        let exists = |p: &Path| -> Result<()> {
            if p.exists() || p.symlink_metadata().is_ok() {
                return Err(Error::Exists {
                    path: p.to_path_buf(),
                });
            }
            Ok(())
        };
        if same(src.path(), out) || same(src.payload_path(), out) {
            return Err(Error::input("input and output are the same file"));
        }
        // Names the input's own files take or may take: its sidecar, its journal, its
        // descriptor and payload under another spelling of the path.
        let reserved: Vec<PathBuf> = [
            src.path().to_path_buf(),
            src.payload_path().to_path_buf(),
            src.metadata_path().to_path_buf(),
            sidecar_path(src.path()),
            super::journal_path(src.payload_path()),
        ]
        .iter()
        .filter_map(|p| resolved(p))
        .collect();
        let check_free = |p: &Path| -> Result<()> {
            if resolved(p).is_some_and(|r| reserved.contains(&r)) {
                return Err(Error::input(format!(
                    "{} is a name the input's own files use (its metadata, journal or payload); choose another output",
                    p.display()
                )));
            }
            Ok(())
        };
        let (disk, second) = match src.format() {
            DiskFormat::Raw => {
                let meta_path = sidecar_path(out);
                (Disk::new_raw(out, src.payload_len()), meta_path)
            }
            DiskFormat::VmdkFlat => {
                let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let stem = name
                    .strip_suffix(".vmdk")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        Error::input(format!(
                            "output {} of a VMDK must be a file name ending in .vmdk",
                            out.display()
                        ))
                    })?;
                let flat_name = format!("{stem}-flat.vmdk");
                let flat = out.with_file_name(&flat_name);
                (src.copy_descriptor(out, &flat_name)?, flat)
            }
        };
        for p in [out, second.as_path()] {
            check_free(p)?;
        }
        for p in [out, second.as_path()] {
            exists(p)?;
        }
        Ok(OutputPaths {
            disk,
            created: vec![out.to_path_buf(), second],
        })
    }
}

/// A path with its folder resolved (symlinks, `.`, `..`), for comparing names of files that
/// may not exist yet.
fn resolved(p: &Path) -> Option<PathBuf> {
    let dir = crate::fsutil::parent_dir(p).canonicalize().ok()?;
    Some(dir.join(p.file_name()?))
}

/// Whether `e` says that creating `p` failed because the file exists.
pub(crate) fn created_by_another(e: &Error, p: &Path) -> bool {
    matches!(e, Error::Io { op: "create", path, source }
        if path == p && source.kind() == std::io::ErrorKind::AlreadyExists)
}

/// Removes partial outputs unless cleared.
pub(crate) struct Cleanup(pub Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
