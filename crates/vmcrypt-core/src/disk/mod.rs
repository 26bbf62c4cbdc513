//! Disks: raw images with a sidecar, and flat VMDKs whose descriptor carries the keys.
//!
//! Where the metadata lives:
//! - raw image `IMAGE`: the sidecar settings file `IMAGE.vmcrypt`, keys prefixed `vmcrypt.`;
//! - VMDK: the descriptor itself, keys prefixed `ddb.vmcrypt.` (the disk database section).
//!
//! Both hold `encryptionKeys` (the keySafe locator) and, in clear, what the keySafe is bound to:
//! format version, cipher, data unit size, payload size, disk uuid, key generation and job state.

mod inplace;
mod job;
mod ops;
pub mod probe;
mod rekey;
pub mod vmdk;

use std::path::{Path, PathBuf};

use vmcrypt_xts::SectorSize;

pub use inplace::{
    JOURNAL_EXT, ResumeReport, chunk_size, journal_path, rekey_disk_deep, resume_disk,
};
pub(crate) use inplace::{ResumeAs, rekey_deep, resume_as};
pub use job::{
    DEFAULT_CHUNK, ImageJob, ImageJobBuilder, JobStats, NoProgress, Progress, worker_threads,
};
pub use ops::{
    DecryptOptions, DiskReport, EncryptOptions, KekRef, check_encrypt, create_verified_kek,
    decrypt_disk, encrypt_disk, encrypt_disk_with, unlock, verify_kek,
};
pub(crate) use ops::{check_encrypt_vm_disk, decrypt_disk_of, encrypt_under, unwrap_disk_key};
pub use rekey::{RekeyReport, rekey_disk_shallow};
pub(crate) use rekey::{commit as rekey_commit, pending_target, stage as rekey_stage};

use crate::locator::KeyLocator;
use crate::settings::{Flavor, Settings};
use crate::wrap::{DISK_CIPHER, DiskIdentity, our_pairs};
use crate::{Error, Result};
use probe::Container;
use vmdk::{DESCRIPTOR_MAGIC, Extent};

/// The settings key holding the keySafe (the name VMware uses in descriptors).
pub const KEYSAFE_KEY: &str = "encryptionKeys";
/// Extension appended to a raw image's name for its sidecar.
pub const SIDECAR_EXT: &str = "vmcrypt";
const SIDECAR_MAGIC: &str = "# vmcrypt metadata";
const FORMAT_VERSION: &str = "1";
/// Room a job needs in a metadata file: a keySafe of two pairs is under 1 KiB, the other
/// entries a few hundred bytes; 16 KiB leaves a wide margin.
const META_ROOM: usize = 16 * 1024;

/// The container format of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskFormat {
    /// A raw image; metadata in a sidecar.
    Raw,
    /// A VMDK descriptor with one flat extent.
    VmdkFlat,
}

impl DiskFormat {
    /// A short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::VmdkFlat => "vmdk-flat",
        }
    }
}

/// State of an encrypted disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskState {
    /// Fully encrypted.
    Encrypted,
    /// An in-place encryption was started and did not finish.
    Encrypting,
    /// An in-place decryption was started and did not finish.
    Decrypting,
    /// An in-place deep rekey was started and did not finish.
    Rekeying,
}

impl DiskState {
    /// The name written in the metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::Encrypted => "encrypted",
            DiskState::Encrypting => "encrypting",
            DiskState::Decrypting => "decrypting",
            DiskState::Rekeying => "rekeying",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "encrypted" => Some(DiskState::Encrypted),
            "encrypting" => Some(DiskState::Encrypting),
            "decrypting" => Some(DiskState::Decrypting),
            "rekeying" => Some(DiskState::Rekeying),
            _ => None,
        }
    }
}

/// The encryption metadata of a disk (no key material; the DEK is wrapped in `key_safe`).
#[derive(Debug, Clone)]
pub struct EncryptionMeta {
    /// What the keySafe is bound to.
    pub identity: DiskIdentity,
    /// Key generation (1 on first encryption).
    pub generation: u64,
    /// During a shallow rekey: the generation of the new wrapping (the last pair of the
    /// keySafe), which coexists with the old one until the rekey commits.
    pub rekey_generation: Option<u64>,
    /// The VM this disk belongs to, if any.
    pub vm_uuid: Option<String>,
    /// The keySafe.
    pub key_safe: KeyLocator,
    /// Job state.
    pub state: DiskState,
    /// Id of the in-place job under way (hex), which names its journal.
    pub job: Option<String>,
    /// During a deep rekey that moves the payload: where the payload goes (the new DEK is
    /// bound to this offset; `identity.payload_offset` is where it comes from).
    pub rekey_payload_offset: Option<u64>,
}

impl EncryptionMeta {
    /// The (provider, key id) pairs the keySafe can be opened with.
    pub fn keys(&self) -> Vec<(String, String)> {
        our_pairs(&self.key_safe)
            .into_iter()
            .map(|(p, k, _)| (p.to_string(), k.to_string()))
            .collect()
    }
}

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
    /// Opens a raw image or a VMDK descriptor and reads its metadata.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidSettings`], [`Error::Unsupported`] and
    /// [`Error::InvalidInput`] for inputs that are not disks vmcrypt handles.
    pub fn open(path: &Path) -> Result<Disk> {
        let meta = std::fs::metadata(path).map_err(Error::io("open", path))?;
        if !meta.is_file() {
            return Err(Error::input(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let file = crate::fsutil::open_regular(path)?;
        let mut head = [0u8; 64];
        let n = {
            use std::io::Read;
            let mut n = 0;
            while n < head.len() {
                match (&file)
                    .read(&mut head[n..])
                    .map_err(Error::io("read", path))?
                {
                    0 => break,
                    k => n += k,
                }
            }
            n
        };
        let head = &head[..n];
        if head.starts_with(DESCRIPTOR_MAGIC) {
            return Disk::open_vmdk(path);
        }
        let container = probe::probe(&file, meta.len()).map_err(Error::io("read", path))?;
        if container == Some(Container::VmdkSparse) {
            return Err(Error::Unsupported {
                what: Container::VmdkSparse.hint(path),
            });
        }
        let is_sidecar_name = path
            .to_str()
            .and_then(|s| s.strip_suffix(&format!(".{SIDECAR_EXT}")))
            .is_some_and(|image| Path::new(image).is_file());
        if head.starts_with(SIDECAR_MAGIC.as_bytes()) || is_sidecar_name {
            return Err(Error::input(format!(
                "{} is vmcrypt metadata, not a disk; name the image beside it",
                path.display()
            )));
        }
        Disk::open_raw(path, meta.len(), container)
    }

    fn open_raw(path: &Path, len: u64, container: Option<Container>) -> Result<Disk> {
        let meta_path = sidecar_path(path);
        let settings = if meta_path.exists() {
            Some(Settings::read(&meta_path, Flavor::Vmx)?)
        } else {
            None
        };
        let encryption = match &settings {
            Some(s) => Some(read_meta(s, "vmcrypt.", &meta_path)?),
            None => None,
        };
        // An encrypted image's payload may not fill the file (it moved, or a job is moving
        // it): the metadata says how long it is, and check_payload compares it with the file.
        let payload_len = encryption.as_ref().map_or(len, |e| e.identity.payload_size);
        // An image with a sidecar is vmcrypt's: its payload's first bytes say nothing.
        let container = container.filter(|_| settings.is_none());
        Ok(Disk {
            path: path.to_path_buf(),
            format: DiskFormat::Raw,
            payload: path.to_path_buf(),
            payload_len,
            meta_path,
            settings,
            extent: None,
            encryption,
            container,
        })
    }

    fn open_vmdk(path: &Path) -> Result<Disk> {
        let s = Settings::read(path, Flavor::Descriptor)?;
        let extent = vmdk::flat_extent(&s, path)?;
        let payload = path.with_file_name(&extent.file);
        check_inside_folder(&payload, path)?;
        let payload_len = extent
            .sectors
            .checked_mul(512)
            .ok_or_else(|| Error::settings(path, Some(extent.line + 1), "extent size overflows"))?;
        let encryption = if s.get(KEYSAFE_KEY).is_some() {
            Some(read_meta(&s, "ddb.vmcrypt.", path)?)
        } else {
            None
        };
        Ok(Disk {
            path: path.to_path_buf(),
            format: DiskFormat::VmdkFlat,
            payload,
            payload_len,
            meta_path: path.to_path_buf(),
            settings: Some(s),
            extent: Some(extent),
            encryption,
            container: None,
        })
    }

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
                s.check_room(&self.meta_path, 0)?;
                let mode = file_mode(&self.meta_path).unwrap_or(0o644);
                crate::fsutil::write_atomic(&self.meta_path, s.render().as_bytes(), mode)?;
            }
        }
        self.encryption = meta.cloned();
        Ok(())
    }

    /// The descriptor settings of a VMDK (with the extent), for writing a copy elsewhere.
    pub(crate) fn descriptor(&self) -> Option<(&Settings, &Extent)> {
        match (&self.settings, &self.extent) {
            (Some(s), Some(e)) if self.format == DiskFormat::VmdkFlat => Some((s, e)),
            _ => None,
        }
    }
}

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
    use crate::lock::{Access, DiskLock};
    let disk = Disk::open(path)?;
    let mut files = vec![(disk.payload_path(), Access::Write)];
    let meta = disk.metadata_path();
    if meta != disk.payload_path() && meta.exists() {
        files.push((meta, Access::Write));
    }
    DiskLock::acquire(&files)
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

fn apply_meta(s: &mut Settings, prefix: &str, m: &EncryptionMeta) -> Result<()> {
    s.set(KEYSAFE_KEY, &m.key_safe.render())?;
    s.set(&format!("{prefix}version"), FORMAT_VERSION)?;
    s.set(&format!("{prefix}cipher"), DISK_CIPHER)?;
    s.set(
        &format!("{prefix}sectorSize"),
        &m.identity.sector_size.bytes().to_string(),
    )?;
    s.set(
        &format!("{prefix}payloadSize"),
        &m.identity.payload_size.to_string(),
    )?;
    s.set(&format!("{prefix}diskUuid"), &m.identity.uuid)?;
    s.set(&format!("{prefix}keyGeneration"), &m.generation.to_string())?;
    match m.rekey_generation {
        Some(g) => s.set(&format!("{prefix}rekeyGeneration"), &g.to_string())?,
        None => {
            s.remove(&format!("{prefix}rekeyGeneration"));
        }
    }
    match &m.vm_uuid {
        Some(v) => s.set(&format!("{prefix}vmUuid"), v)?,
        None => {
            s.remove(&format!("{prefix}vmUuid"));
        }
    }
    match &m.job {
        Some(j) => s.set(&format!("{prefix}job"), j)?,
        None => {
            s.remove(&format!("{prefix}job"));
        }
    }
    match m.identity.payload_offset {
        0 => {
            s.remove(&format!("{prefix}payloadOffset"));
        }
        o => s.set(&format!("{prefix}payloadOffset"), &o.to_string())?,
    }
    match m.rekey_payload_offset {
        Some(o) => s.set(&format!("{prefix}rekeyPayloadOffset"), &o.to_string())?,
        None => {
            s.remove(&format!("{prefix}rekeyPayloadOffset"));
        }
    }
    s.set(&format!("{prefix}state"), m.state.as_str())
}

fn read_meta(s: &Settings, prefix: &str, path: &Path) -> Result<EncryptionMeta> {
    let get = |k: &str| {
        s.get(&format!("{prefix}{k}"))
            .ok_or_else(|| Error::settings(path, None, format!("missing {prefix}{k}")))
    };
    let num = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .map_err(|_| Error::settings(path, None, format!("{prefix}{k} is not a number")))
    };
    if get("version")? != FORMAT_VERSION {
        return Err(Error::Unsupported {
            what: format!(
                "vmcrypt metadata version {:?} in {}",
                get("version")?,
                path.display()
            ),
        });
    }
    if get("cipher")? != DISK_CIPHER {
        return Err(Error::Unsupported {
            what: format!("disk cipher {:?} in {}", get("cipher")?, path.display()),
        });
    }
    let offset = |o: u64| -> Result<u64> {
        if o.is_multiple_of(4096) {
            Ok(o)
        } else {
            Err(Error::settings(
                path,
                None,
                format!("{prefix}payloadOffset is not a multiple of 4096"),
            ))
        }
    };
    let sector_size = SectorSize::from_bytes(num("sectorSize")?)
        .map_err(|e| Error::settings(path, None, e.to_string()))?;
    let key_safe = KeyLocator::parse(
        s.get(KEYSAFE_KEY)
            .ok_or_else(|| Error::settings(path, None, format!("missing {KEYSAFE_KEY}")))?,
    )?;
    let uuid = get("diskUuid")?.to_string();
    let state = DiskState::parse(get("state")?)
        .ok_or_else(|| Error::settings(path, None, format!("unknown {prefix}state")))?;
    Ok(EncryptionMeta {
        identity: DiskIdentity {
            uuid,
            payload_size: num("payloadSize")?,
            sector_size,
            payload_offset: match s.get(&format!("{prefix}payloadOffset")) {
                Some(_) => offset(num("payloadOffset")?)?,
                None => 0,
            },
        },
        generation: num("keyGeneration")?,
        rekey_generation: match s.get(&format!("{prefix}rekeyGeneration")) {
            Some(_) => Some(num("rekeyGeneration")?),
            None => None,
        },
        vm_uuid: s.get(&format!("{prefix}vmUuid")).map(str::to_string),
        key_safe,
        state,
        job: s.get(&format!("{prefix}job")).map(str::to_string),
        rekey_payload_offset: match s.get(&format!("{prefix}rekeyPayloadOffset")) {
            Some(_) => Some(offset(num("rekeyPayloadOffset")?)?),
            None => None,
        },
    })
}
