//! Disks: raw images with a sidecar, and flat VMDKs whose descriptor carries the keys.
//!
//! Where the metadata lives:
//! - raw image `IMAGE`: the sidecar settings file `IMAGE.vmcrypt`, keys prefixed `vmcrypt.`;
//! - VMDK: the descriptor itself, keys prefixed `ddb.vmcrypt.` (the disk database section).
//!
//! Both hold `encryptionKeys` (the keySafe locator) and, in clear, what the keySafe is bound to:
//! format version, cipher, data unit size, payload size, disk uuid, key generation and job state.
//!
//! `open` reads a disk; one file per verb: `encrypt`, `decrypt`, `rekey_shallow`, `rekey_deep`, `resume` and
//! `cleanup`, over `inplace` (metadata around an engine's in-place job), `transform` (one pass
//! over a whole payload), `output` (planning a copy) and `meta` (the metadata codec). `job` is
//! the front door: [`DiskJob`] and its report. `live` is the disk a server reads and writes by
//! offset ([`EncryptedDisk`]).

mod cleanup;
mod decrypt;
mod encrypt;
mod inplace;
mod job;
mod live;
mod meta;
mod open;
mod output;
mod owner;
pub mod probe;
mod recover;
mod rekey_deep;
mod rekey_shallow;
mod resume;
mod transform;
pub mod vmdk;

use std::path::{Path, PathBuf};

pub use crate::wrap::DiskIdentity;
pub use inplace::{JOURNAL_EXT, journal_path};
pub(crate) use inplace::{ResumeAs, resume_as};
pub use job::DiskJob;
pub(crate) use job::{JobOptions, common_setters};
#[cfg(feature = "guest-memory")]
pub use live::Sealed;
pub use live::{
    CONTROL_EXT, EncryptedDisk, JobKind, JobStatus, MIN_BLOCK, ONLINE_WINDOW, Route, Scratch,
    control_path,
};
#[doc(hidden)]
pub use live::{Files, OnDisk, Store};
pub use meta::{DiskFormat, DiskState, EncryptionMeta};
pub(crate) use owner::{check_inside_folder, lock_files, open_for_job};
pub use owner::{dangerous_allow_outside_folder, lock_for_job};
pub use recover::{DmTable, dm_table};
pub use rekey_shallow::RekeyReport;
pub use resume::ResumeReport;

pub(crate) use decrypt::decrypt;
pub(crate) use encrypt::{check_encrypt_vm_disk, encrypt_under};
pub(crate) use rekey_deep::{rekey_deep, rekey_keys};
pub(crate) use rekey_shallow::{commit as rekey_commit, stage as rekey_stage};
pub(crate) use resume::resume_with;

use crate::keysafe::{KeyRing, Opened};
use crate::secret::Dek;
use crate::settings::{Flavor, Settings};
use crate::{Error, Result};
use meta::apply_meta;
use probe::Container;
use vmdk::Extent;

/// The settings key holding the keySafe (the name VMware uses in descriptors).
pub const KEYSAFE_KEY: &str = "encryptionKeys";
/// Extension appended to a raw image's name for its sidecar.
pub const SIDECAR_EXT: &str = "vmcrypt";
const SIDECAR_MAGIC: &str = "# vmcrypt metadata";
/// Room a job needs in a metadata file: a keySafe of two pairs is under 1 KiB, the other
/// entries a few hundred bytes; 16 KiB leaves a wide margin.
const META_ROOM: usize = 16 * 1024;

/// An opened disk: its format, payload file and metadata, all validated.
#[derive(Debug, Clone)]
pub struct Disk {
    path: PathBuf,
    format: DiskFormat,
    payload: PathBuf,
    payload_len: u64,
    meta_path: PathBuf,
    settings: Option<Settings>,
    extent: Option<Extent>,
    encryption: Option<EncryptionMeta>,
    /// A plain "raw" file whose magic says it is another container format.
    container: Option<Container>,
}

impl Disk {
    /// The path that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> DiskFormat {
        self.format
    }

    /// The file holding the (encrypted or plain) payload.
    pub fn payload_path(&self) -> &Path {
        &self.payload
    }

    /// Payload length in bytes, as the container describes it.
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// The file holding the encryption metadata (sidecar or descriptor).
    pub fn metadata_path(&self) -> &Path {
        &self.meta_path
    }

    /// The encryption metadata, if the disk is (being) encrypted.
    pub fn encryption(&self) -> Option<&EncryptionMeta> {
        self.encryption.as_ref()
    }

    /// For a plain file opened as raw: the container format its magic names, if any (such a
    /// file is encrypted only when the caller insists it is raw).
    pub fn container(&self) -> Option<Container> {
        self.container
    }

    /// Checks that the payload file really holds what the metadata records (no truncation).
    ///
    /// # Errors
    /// [`Error::Integrity`] on a mismatch; [`Error::Io`].
    pub fn check_payload(&self) -> Result<()> {
        let actual = std::fs::metadata(&self.payload)
            .map_err(Error::io("open payload", &self.payload))?
            .len();
        let (want, offset, settled) = match &self.encryption {
            Some(e) => (
                e.identity.payload_size,
                e.identity.payload_offset,
                e.state == DiskState::Encrypted,
            ),
            None => (self.payload_len, 0, true),
        };
        let end = want.saturating_add(offset);
        // While a job moves the payload the file also holds the room it moves into; the job's
        // own checks (its journal) cover that state.
        let ok = match (self.format, settled) {
            (DiskFormat::Raw, true) => actual == end,
            (DiskFormat::VmdkFlat, true) => actual >= end,
            // Moving down, the last step cuts the file to the payload's new end before the
            // metadata records the new offset.
            (_, false) => actual >= want,
        };
        if !ok || want != self.payload_len {
            let why = if actual > end {
                "swapped, or an in-place job was interrupted before it started: `vmcrypt resume` cleans that up"
            } else {
                "truncated or swapped?"
            };
            return Err(Error::Integrity {
                path: self.payload.clone(),
                reason: format!(
                    "the metadata records {want} bytes of payload at offset {offset}, the container {} and the file holds {actual} ({why})",
                    self.payload_len
                ),
            });
        }
        Ok(())
    }

    /// Where the payload starts in its file (0 unless an in-place job moved it).
    pub fn payload_offset(&self) -> u64 {
        self.encryption
            .as_ref()
            .map_or(0, |e| e.identity.payload_offset)
    }

    /// Checks that the metadata file has room for what a job adds (a keySafe with two pairs and
    /// the job's entries), before the job starts.
    ///
    /// # Errors
    /// [`Error::InvalidSettings`] for a descriptor or sidecar too close to the reader's cap.
    pub fn check_meta_room(&self) -> Result<()> {
        match &self.settings {
            Some(s) => s.check_room(&self.meta_path, META_ROOM),
            None => Ok(()),
        }
    }

    /// Writes (or with `None` removes) the encryption metadata, atomically and durably.
    pub(crate) fn write_meta(&mut self, meta: Option<&EncryptionMeta>) -> Result<()> {
        match self.format {
            DiskFormat::Raw => match meta {
                Some(m) => {
                    let mut s = self.settings.take().unwrap_or_else(|| {
                        Settings::new(
                            Flavor::Vmx,
                            &[
                                "vmcrypt metadata: the wrapped key of the image beside this file.",
                                "Without this file the image cannot be decrypted. Do not edit.",
                            ],
                        )
                    });
                    apply_meta(&mut s, "vmcrypt.", m)?;
                    s.check_room(&self.meta_path, 0)?;
                    crate::fsutil::write_atomic(&self.meta_path, s.render().as_bytes(), 0o644)?;
                    self.settings = Some(s);
                }
                None => {
                    if self.meta_path.exists() {
                        crate::fsutil::remove_followed(&self.meta_path)?;
                    }
                    self.settings = None;
                }
            },
            DiskFormat::VmdkFlat => {
                let s = self
                    .settings
                    .as_mut()
                    .ok_or_else(|| Error::input("descriptor not loaded"))?;
                match meta {
                    Some(m) => apply_meta(s, "ddb.vmcrypt.", m)?,
                    None => {
                        s.remove(KEYSAFE_KEY);
                        s.remove_prefix("ddb.vmcrypt.");
                    }
                }
                // The extent line follows the payload, in the same atomic write, so that a
                // tool copying the VMDK by its extent (qemu-img convert, a backup) copies the
                // payload wherever an in-place job moved it. While a job moves it, the line
                // keeps its last settled place.
                if let Some(extent) = self.extent.as_mut() {
                    let offset = match meta {
                        Some(m) if m.state == DiskState::Encrypted => {
                            m.identity.payload_offset / 512
                        }
                        Some(_) => extent.offset,
                        None => 0,
                    };
                    if offset != extent.offset {
                        s.replace_line(extent.line, &extent.render_with(&extent.file, offset))?;
                        extent.offset = offset;
                    }
                }
                s.check_room(&self.meta_path, 0)?;
                let mode = file_mode(&self.meta_path).unwrap_or(0o644);
                crate::fsutil::write_atomic(&self.meta_path, s.render().as_bytes(), mode)?;
            }
        }
        self.encryption = meta.cloned();
        Ok(())
    }

    /// What a change to the disk's files shows in: the metadata file's identity, size and
    /// change time, and the payload file's size.
    pub(crate) fn stamp(&self) -> Option<(u64, u64, u64, i64, i64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let payload = std::fs::metadata(&self.payload).ok()?.len();
        let m = std::fs::metadata(&self.meta_path).ok();
        Some(match m {
            Some(m) => (
                m.dev(),
                m.ino(),
                m.len(),
                m.ctime(),
                m.ctime_nsec(),
                payload,
            ),
            None => (0, 0, 0, 0, 0, payload),
        })
    }

    /// A raw image yet to be written at `path`, of `len` payload bytes, with no metadata.
    pub(crate) fn new_raw(path: &Path, len: u64) -> Disk {
        Disk {
            path: path.to_path_buf(),
            format: DiskFormat::Raw,
            payload: path.to_path_buf(),
            payload_len: len,
            meta_path: sidecar_path(path),
            settings: None,
            extent: None,
            encryption: None,
            container: None,
        }
    }

    /// A copy of this VMDK's descriptor, yet to be written at `path`, naming the flat extent
    /// `flat_name` beside it, with no encryption metadata.
    pub(crate) fn copy_descriptor(&self, path: &Path, flat_name: &str) -> Result<Disk> {
        let (Some(settings), Some(extent)) = (&self.settings, &self.extent) else {
            return Err(Error::input("descriptor not loaded"));
        };
        let mut settings = settings.clone();
        // The new flat file holds the payload from its first byte.
        settings.replace_line(extent.line, &extent.render_with(flat_name, 0))?;
        settings.remove(KEYSAFE_KEY);
        settings.remove_prefix("ddb.vmcrypt.");
        Ok(Disk {
            path: path.to_path_buf(),
            format: DiskFormat::VmdkFlat,
            payload: path.with_file_name(flat_name),
            payload_len: self.payload_len,
            meta_path: path.to_path_buf(),
            settings: Some(settings),
            extent: Some(Extent {
                file: flat_name.to_string(),
                offset: 0,
                ..extent.clone()
            }),
            encryption: None,
            container: None,
        })
    }

    /// The encryption metadata of a disk that must be encrypted.
    ///
    /// # Errors
    /// [`Error::NotEncrypted`].
    pub(crate) fn require_encrypted(&self) -> Result<&EncryptionMeta> {
        self.encryption
            .as_ref()
            .ok_or_else(|| Error::not_encrypted(&self.path))
    }

    /// Checks that the disk is encrypted with no in-place job under way.
    ///
    /// # Errors
    /// [`Error::NotEncrypted`]; [`Error::JobUnderWay`].
    pub(crate) fn require_settled(&self) -> Result<&EncryptionMeta> {
        let meta = self.require_encrypted()?;
        if meta.state != DiskState::Encrypted {
            return Err(Error::job_under_way(&self.path, meta.state.as_str()));
        }
        Ok(meta)
    }

    /// Unwraps the disk's DEK, whatever its job state, after checking the payload size:
    /// during a rekey each pair is tried at the current and the pending generation. Returns
    /// the KEK that opened it too.
    ///
    /// # Errors
    /// [`Error::NotEncrypted`]; [`Error::Integrity`]; [`Error::UnwrapFailed`]; provider
    /// errors.
    pub(crate) fn open_key(&self, ring: &KeyRing<'_>) -> Result<Opened<Dek>> {
        let meta = self.require_encrypted()?;
        self.check_payload()?;
        meta.key_safe().open(ring)
    }
}

/// `IMAGE.vmcrypt` for `IMAGE`.
pub fn sidecar_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_os_string();
    s.push(".");
    s.push(SIDECAR_EXT);
    PathBuf::from(s)
}

fn file_mode(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(test)]
pub(crate) mod tests {
    thread_local! {
        /// Disks this thread opened ([`super::Disk::open`]), for tests that count them.
        pub(crate) static OPENS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
}
