//! Whole-disk operations: encrypt, decrypt, unlock.
//!
//! Everything is checked before the first byte is written: the disk's format and state, the
//! payload size against the metadata, and the new key's round trip through the provider (the
//! KEK is fetched back and the fresh keySafe unwrapped before any data is touched, so a key the
//! provider cannot return never protects data). Outputs are created exclusively and removed
//! again if the job fails. In place, the metadata is written first (state `encrypting` or
//! `decrypting`), so the key is on disk before any sector changes; a cancelled in-place job
//! undoes what it did and restores the metadata.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use subtle::ConstantTimeEq;
use vmcrypt_xts::{Direction, SectorSize};

use super::{Disk, DiskFormat, DiskState, EncryptionMeta, ImageJob, Progress, sidecar_path};
use crate::locator::KeyLocator;
use crate::provider::{KeyId, KeyProvider, KeyPurpose, ProviderLookup};
use crate::reencrypt::Transform;
use crate::secret::{Dek, Kek, random_uuid};
use crate::wrap::{DiskIdentity, WrapContext, our_pairs, unwrap_dek, wrap_dek};
use crate::{Error, Result};

/// Options for [`encrypt_disk`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EncryptOptions {
    /// XTS data unit size (default 4096).
    pub sector_size: SectorSize,
    /// Write the encrypted disk here; `None` encrypts in place.
    pub output: Option<PathBuf>,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Encrypt a file as raw even though its first bytes name another container format
    /// (qcow2, VHD, ...): for a raw image that merely starts with such bytes.
    pub assume_raw: bool,
}

/// Options for [`decrypt_disk`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DecryptOptions {
    /// Write the decrypted disk here; `None` decrypts in place.
    pub output: Option<PathBuf>,
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
}

impl EncryptOptions {
    /// Encrypt in place with defaults.
    pub fn in_place() -> Self {
        Self::default()
    }

    /// Encrypt into `out` with defaults.
    pub fn to_output(out: impl Into<PathBuf>) -> Self {
        EncryptOptions {
            output: Some(out.into()),
            ..Self::default()
        }
    }

    /// Sets the data unit size.
    pub fn sector_size(mut self, s: SectorSize) -> Self {
        self.sector_size = s;
        self
    }

    /// Sets the worker thread count.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Treats the input as raw whatever its first bytes say.
    pub fn assume_raw(mut self, yes: bool) -> Self {
        self.assume_raw = yes;
        self
    }
}

impl DecryptOptions {
    /// Decrypt in place with defaults.
    pub fn in_place() -> Self {
        Self::default()
    }

    /// Decrypt into `out` with defaults.
    pub fn to_output(out: impl Into<PathBuf>) -> Self {
        DecryptOptions {
            output: Some(out.into()),
            ..Self::default()
        }
    }

    /// Sets the worker thread count.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }
}

/// What a disk operation did (no key material).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DiskReport {
    /// The resulting disk (the input when in place).
    pub disk: PathBuf,
    /// Its payload file.
    pub payload: PathBuf,
    /// Its metadata file (sidecar or descriptor), if it is encrypted.
    pub metadata: Option<PathBuf>,
    /// Payload bytes processed.
    pub bytes: u64,
    /// Time spent.
    pub elapsed: Duration,
    /// Provider of the KEK.
    pub provider: String,
    /// Key id of the KEK.
    pub key_id: String,
    /// Data unit size.
    pub sector_size: SectorSize,
}

/// Encrypts a plain disk with a new DEK wrapped under a new KEK from `provider`.
///
/// # Errors
/// [`Error::InvalidInput`] for an encrypted, empty or not-whole-units disk or an existing
/// output; provider errors; [`Error::Io`]. The input is unchanged on every error raised before
/// the job starts.
pub fn encrypt_disk(
    path: &Path,
    provider: &dyn KeyProvider,
    opts: &EncryptOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    let _lock = super::lock_for_job(path)?;
    let (disk, out) = preflight_encrypt(path, opts)?;
    refuse_vm_member(path, opts)?;
    let disk_uuid = random_uuid()?;
    let (key_id, kek) = create_verified_kek(provider, &KeyPurpose::Disk(disk_uuid.clone()))?;
    let kek_ref = KekRef {
        provider: provider.name(),
        key_id: key_id.as_str(),
        kek: &kek,
    };
    encrypt_prepared(disk, out, &kek_ref, disk_uuid, None, opts, progress, cancel)
}

/// A KEK with the names it is filed under.
#[derive(Clone, Copy)]
pub struct KekRef<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// Key id within the provider.
    pub key_id: &'a str,
    /// The key.
    pub kek: &'a Kek,
}

/// Encrypts a plain disk under an existing KEK, as part of a VM (`vm_uuid`): the caller has
/// already checked that the provider returns this KEK.
///
/// # Errors
/// As [`encrypt_disk`].
pub fn encrypt_disk_with(
    path: &Path,
    kek: &KekRef<'_>,
    vm_uuid: Option<&str>,
    opts: &EncryptOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    encrypt_under(path, kek, vm_uuid.map(|u| (u, 1)), opts, progress, cancel)
}

/// Encrypts a plain disk under an existing KEK; for a VM's disk, `vm` is the VM's uuid and key
/// generation (1 for a new VM; the VM's own when `resume VMX` repairs a VM one of whose disks
/// was decrypted on its own).
pub(crate) fn encrypt_under(
    path: &Path,
    kek: &KekRef<'_>,
    vm: Option<(&str, u64)>,
    opts: &EncryptOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    let _lock = super::lock_for_job(path)?;
    let (disk, out) = preflight_encrypt(path, opts)?;
    encrypt_prepared(disk, out, kek, random_uuid()?, vm, opts, progress, cancel)
}

#[allow(clippy::too_many_arguments)]
fn encrypt_prepared(
    disk: Disk,
    out: Option<OutputPaths>,
    kek: &KekRef<'_>,
    disk_uuid: String,
    vm: Option<(&str, u64)>,
    opts: &EncryptOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    let unit = opts.sector_size;
    let len = disk.payload_len();
    // In place, the payload moves up by one window while it is encrypted, so that each byte
    // is written once (docs/crash-safety.md); into a new file it stays at 0.
    let payload_offset = match out {
        None => super::inplace::shift_for_encrypt(&disk)?,
        Some(_) => 0,
    };
    let identity = DiskIdentity {
        uuid: disk_uuid,
        payload_size: len,
        sector_size: unit,
        payload_offset,
    };
    let (vm_uuid, generation) = match vm {
        Some((u, g)) => (Some(u), g),
        None => (None, 1),
    };
    let dek = Dek::generate_xts()?;
    let ctx = WrapContext {
        provider: kek.provider,
        key_id: kek.key_id,
        vm_uuid,
        disk: &identity,
        generation,
    };
    let key_safe = KeyLocator::List(vec![wrap_dek(kek.kek, &dek, &ctx)?]);
    // The fresh keySafe must open before it protects data.
    let locked = our_pairs(&key_safe)
        .first()
        .map(|p| p.2.to_vec())
        .ok_or(Error::UnwrapFailed)?;
    let back = unwrap_dek(kek.kek, &locked, &ctx)?;
    if !bool::from(back.expose_secret().ct_eq(dek.expose_secret())) {
        return Err(Error::UnwrapFailed);
    }
    let meta = EncryptionMeta {
        identity: identity.clone(),
        generation,
        rekey_generation: None,
        vm_uuid: vm_uuid.map(str::to_string),
        key_safe,
        state: DiskState::Encrypted,
        job: None,
        rekey_payload_offset: None,
    };
    let job = JobPlan {
        dek: &dek,
        dir: Direction::Encrypt,
        src_offset: 0,
        len,
        unit,
        threads: super::worker_threads(opts.threads),
    };
    let running = EncryptionMeta {
        state: DiskState::Encrypting,
        ..meta.clone()
    };
    let (stats, result_disk) = job.run(disk, out, &running, Some(&meta), progress, cancel)?;
    tracing::info!(disk = %result_disk.path().display(), provider = kek.provider, key_id = kek.key_id, "disk encrypted");
    Ok(DiskReport {
        disk: result_disk.path().to_path_buf(),
        payload: result_disk.payload_path().to_path_buf(),
        metadata: Some(result_disk.metadata_path().to_path_buf()),
        bytes: stats.bytes,
        elapsed: stats.elapsed,
        provider: kek.provider.to_string(),
        key_id: kek.key_id.to_string(),
        sector_size: unit,
    })
}

/// Checks everything [`encrypt_disk`] checks before it asks the provider for a key, without
/// touching anything: callers that create a provider on first use call this first, so a
/// request that would fail leaves no trace. The disk's lock is taken and released again, so
/// a disk in use is refused before a key is made for it ([`encrypt_disk`] takes it again).
///
/// # Errors
/// As [`encrypt_disk`] for the disk and the output.
pub fn check_encrypt(path: &Path, opts: &EncryptOptions) -> Result<()> {
    check_encrypt_vm_disk(path, opts)?;
    refuse_vm_member(path, opts)
}

/// [`check_encrypt`] for a disk a VM job encrypts: the VM that lists it is the one asking.
pub(crate) fn check_encrypt_vm_disk(path: &Path, opts: &EncryptOptions) -> Result<()> {
    let _lock = super::lock_for_job(path)?;
    preflight(path, opts).map(|_| ())
}

/// Refuses to encrypt, on its own, a plain disk that an encrypted (or encrypting) VM in the
/// same folder lists: `vm encrypt` owns it, with the VM's KEK and uuid. An encrypted copy
/// elsewhere (`--output`) leaves the VM as it is.
fn refuse_vm_member(path: &Path, opts: &EncryptOptions) -> Result<()> {
    if opts.output.is_some() {
        return Ok(());
    }
    if let Some(vmx) = crate::vm::encrypted_vm_listing(path) {
        return Err(Error::input(format!(
            "{} is a disk of the encrypted VM {}: run `vmcrypt vm encrypt {}` (or `vmcrypt resume {}`) instead",
            path.display(),
            vmx.display(),
            vmx.display(),
            vmx.display()
        )));
    }
    Ok(())
}

/// The checks of an encryption under the disk's lock, after clearing what a job that never
/// started left behind (in place only: only then does the job use the journal).
fn preflight_encrypt(path: &Path, opts: &EncryptOptions) -> Result<(Disk, Option<OutputPaths>)> {
    if opts.output.is_none() {
        super::inplace::clear_unrecorded_job(path)?;
    }
    preflight(path, opts)
}

fn preflight(path: &Path, opts: &EncryptOptions) -> Result<(Disk, Option<OutputPaths>)> {
    let disk = Disk::open(path)?;
    if let Some(e) = disk.encryption() {
        return Err(Error::input(match e.state {
            DiskState::Encrypted => format!("{} is already encrypted", path.display()),
            s => format!(
                "{} has an interrupted job (state {}): run `vmcrypt resume` to finish it first",
                path.display(),
                s.as_str()
            ),
        }));
    }
    if let Some(c) = disk.container()
        && !opts.assume_raw
    {
        return Err(Error::Unsupported { what: c.hint(path) });
    }
    disk.check_payload()?;
    disk.check_meta_room()?;
    let unit = opts.sector_size;
    let len = disk.payload_len();
    if len == 0 {
        return Err(Error::input(format!(
            "{} has no payload to encrypt",
            path.display()
        )));
    }
    if len % unit.bytes() as u64 != 0 {
        return Err(Error::input(format!(
            "{}: payload of {len} bytes is not a whole number of {}-byte sectors{}",
            path.display(),
            unit.bytes(),
            if len % 512 == 0 {
                "; use --sector-size 512"
            } else {
                ""
            }
        )));
    }
    let out = opts
        .output
        .as_deref()
        .map(|o| OutputPaths::plan(&disk, o))
        .transpose()?;
    Ok((disk, out))
}

/// Decrypts an encrypted disk, getting its KEK from the provider named in its keySafe.
///
/// # Errors
/// [`Error::InvalidInput`] for a plain disk or an existing output; [`Error::UnwrapFailed`] or
/// [`Error::Integrity`] when the key or metadata do not match; provider errors; [`Error::Io`].
pub fn decrypt_disk(
    path: &Path,
    lookup: &ProviderLookup<'_>,
    opts: &DecryptOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    decrypt_disk_of(path, lookup, opts, progress, cancel, false)
}

/// [`decrypt_disk`]; `vm_disk` allows a disk of a VM (the VM job decrypts all its disks).
pub(crate) fn decrypt_disk_of(
    path: &Path,
    lookup: &ProviderLookup<'_>,
    opts: &DecryptOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    vm_disk: bool,
) -> Result<DiskReport> {
    let _lock = super::lock_for_job(path)?;
    if opts.output.is_none() {
        super::inplace::clear_unrecorded_job(path)?;
    }
    let disk = Disk::open(path)?;
    let meta = disk
        .encryption()
        .cloned()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", path.display())))?;
    if meta.vm_uuid.is_some() && !vm_disk && opts.output.is_none() {
        // A lone decrypt in place would leave the VM's keySafe and sealed entries beside a
        // plain disk: decrypt the VM. (A decrypted copy elsewhere leaves the VM as it is.)
        return Err(Error::input(format!(
            "{} belongs to an encrypted VM: decrypt the VM (`vmcrypt vm decrypt VMX`), or decrypt a copy with --output",
            path.display()
        )));
    }
    let out = opts
        .output
        .as_deref()
        .map(|o| OutputPaths::plan(&disk, o))
        .transpose()?;
    let (dek, provider, key_id) = unlock_with(&disk, lookup)?;
    let unit = meta.identity.sector_size;
    let len = meta.identity.payload_size;
    let job = JobPlan {
        dek: &dek,
        dir: Direction::Decrypt,
        src_offset: meta.identity.payload_offset,
        len,
        unit,
        threads: super::worker_threads(opts.threads),
    };
    let running = EncryptionMeta {
        state: DiskState::Decrypting,
        ..meta.clone()
    };
    let (stats, result_disk) = job.run(disk, out, &running, None, progress, cancel)?;
    tracing::info!(disk = %result_disk.path().display(), "disk decrypted");
    Ok(DiskReport {
        disk: result_disk.path().to_path_buf(),
        payload: result_disk.payload_path().to_path_buf(),
        metadata: None,
        bytes: stats.bytes,
        elapsed: stats.elapsed,
        provider,
        key_id,
        sector_size: unit,
    })
}

/// Unwraps the DEK of an encrypted disk after checking its state and payload size.
///
/// # Errors
/// [`Error::InvalidInput`] for a plain or interrupted disk; [`Error::Integrity`];
/// [`Error::UnwrapFailed`]; provider errors.
pub fn unlock(disk: &Disk, lookup: &ProviderLookup<'_>) -> Result<Dek> {
    unlock_with(disk, lookup).map(|(dek, _, _)| dek)
}

fn unlock_with(disk: &Disk, lookup: &ProviderLookup<'_>) -> Result<(Dek, String, String)> {
    let meta = disk
        .encryption()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", disk.path().display())))?;
    if meta.state != DiskState::Encrypted {
        return Err(Error::input(format!(
            "{} has an interrupted in-place job (state {}): run `vmcrypt resume {}` to finish it",
            disk.path().display(),
            meta.state.as_str(),
            disk.path().display()
        )));
    }
    unwrap_disk_key(disk, lookup)
}

/// Unwraps a disk's DEK whatever its job state, after checking the payload size. During a
/// shallow rekey the keySafe holds the old and the new wrapping: each pair is tried with the
/// current and the pending generation.
pub(crate) fn unwrap_disk_key(
    disk: &Disk,
    lookup: &ProviderLookup<'_>,
) -> Result<(Dek, String, String)> {
    let meta = disk
        .encryption()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", disk.path().display())))?;
    disk.check_payload()?;
    let pairs = our_pairs(&meta.key_safe);
    if pairs.is_empty() {
        return Err(Error::Unsupported {
            what: "the keySafe has no AES-256-GCM key vmcrypt can open".into(),
        });
    }
    let mut last = Error::UnwrapFailed;
    for (provider_name, key_id, locked) in pairs {
        let attempt = (|| {
            let provider = lookup(provider_name)?;
            let kek = provider.fetch_kek(&KeyId::new(key_id)?)?;
            let mut result = Err(Error::UnwrapFailed);
            for generation in std::iter::once(meta.generation).chain(meta.rekey_generation) {
                let ctx = WrapContext {
                    provider: provider_name,
                    key_id,
                    vm_uuid: meta.vm_uuid.as_deref(),
                    disk: &meta.identity,
                    generation,
                };
                result = unwrap_dek(&kek, locked, &ctx);
                if result.is_ok() {
                    break;
                }
            }
            result
        })();
        match attempt {
            Ok(dek) => return Ok((dek, provider_name.to_string(), key_id.to_string())),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Creates a KEK for `purpose` and proves the provider gives it back before it protects any
/// data (a key the provider cannot return would lose what it wraps).
///
/// # Errors
/// The provider's errors; [`Error::KeyService`] if it returns another key.
pub fn create_verified_kek(
    provider: &dyn KeyProvider,
    purpose: &KeyPurpose,
) -> Result<(KeyId, Kek)> {
    let (id, kek) = provider.create_kek(purpose)?;
    verify_kek(provider, &id, &kek)?;
    Ok((id, kek))
}

/// Fetches a just-created KEK back from its provider and compares it.
///
/// # Errors
/// The provider's error, or [`Error::KeyService`] if it returns another key.
pub fn verify_kek(provider: &dyn KeyProvider, id: &KeyId, kek: &Kek) -> Result<()> {
    let back = provider.fetch_kek(id)?;
    if !bool::from(back.expose_secret().ct_eq(kek.expose_secret())) {
        return Err(Error::KeyService {
            provider: provider.name().to_string(),
            reason: format!("key {id} came back different from the key just created"),
        });
    }
    Ok(())
}

/// A payload job and the metadata around it.
struct JobPlan<'a> {
    dek: &'a Dek,
    dir: Direction,
    /// Where the payload starts in the source file.
    src_offset: u64,
    len: u64,
    unit: SectorSize,
    threads: usize,
}

impl JobPlan<'_> {
    fn builder(&self, src: &Path) -> super::ImageJobBuilder<'_> {
        ImageJob::builder(src, self.dek)
            .length(self.len)
            .sector_size(self.unit)
            .direction(self.dir)
            .threads(self.threads)
    }

    /// Runs the job in place, crash-safely (metadata `running` while it runs, then `after`;
    /// resumable if it stops), or into a new disk (which gets `after`; removed again on
    /// failure).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        disk: Disk,
        out: Option<OutputPaths>,
        running: &EncryptionMeta,
        after: Option<&EncryptionMeta>,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<(super::JobStats, Disk)> {
        match out {
            None => {
                let mut disk = disk;
                // Check the job before anything changes.
                self.builder(disk.payload_path())
                    .length(self.len + self.src_offset)
                    .build()?;
                let transform = match self.dir {
                    Direction::Encrypt => Transform::Encrypt(self.dek),
                    _ => Transform::Decrypt(self.dek),
                };
                let stats = super::inplace::run_new(
                    &mut disk,
                    transform,
                    running.clone(),
                    after,
                    self.threads,
                    progress,
                    cancel,
                )?;
                Ok((stats, disk))
            }
            Some(out) => {
                let mut guard = Cleanup(out.created.clone());
                let mut out_disk = out.disk;
                let ran = self
                    .builder(disk.payload_path())
                    .source_offset(self.src_offset)
                    .output(out_disk.payload_path())
                    .build()
                    .and_then(|job| job.run(progress, cancel));
                let stats = match ran {
                    // Another process created the output first (after our check that it did
                    // not exist): it is that process's file, not ours to remove.
                    Err(e) if created_by_another(&e, out_disk.payload_path()) => {
                        guard.0.clear();
                        return Err(e);
                    }
                    other => other?,
                };
                out_disk.write_meta(after)?;
                guard.0.clear();
                Ok((stats, out_disk))
            }
        }
    }
}

/// Where an output disk goes, planned and checked before any work.
struct OutputPaths {
    disk: Disk,
    created: Vec<PathBuf>,
}

impl OutputPaths {
    fn plan(src: &Disk, out: &Path) -> Result<OutputPaths> {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        };
        let exists = |p: &Path| -> Result<()> {
            if p.exists() || p.symlink_metadata().is_ok() {
                return Err(Error::input(format!(
                    "{} already exists; not overwriting it",
                    p.display()
                )));
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
        match src.format() {
            DiskFormat::Raw => {
                let meta_path = sidecar_path(out);
                check_free(out)?;
                check_free(&meta_path)?;
                exists(out)?;
                exists(&meta_path)?;
                let disk = Disk {
                    path: out.to_path_buf(),
                    format: DiskFormat::Raw,
                    payload: out.to_path_buf(),
                    payload_len: src.payload_len(),
                    meta_path: meta_path.clone(),
                    settings: None,
                    extent: None,
                    encryption: None,
                    container: None,
                };
                Ok(OutputPaths {
                    disk,
                    created: vec![out.to_path_buf(), meta_path],
                })
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
                check_free(out)?;
                check_free(&flat)?;
                exists(out)?;
                exists(&flat)?;
                let (settings, extent) = src
                    .descriptor()
                    .ok_or_else(|| Error::input("descriptor not loaded"))?;
                let mut settings = settings.clone();
                settings.replace_line(extent.line, &extent.render_with_file(&flat_name))?;
                settings.remove(super::KEYSAFE_KEY);
                settings.remove_prefix("ddb.vmcrypt.");
                let extent = super::vmdk::Extent {
                    file: flat_name,
                    ..extent.clone()
                };
                let disk = Disk {
                    path: out.to_path_buf(),
                    format: DiskFormat::VmdkFlat,
                    payload: flat.clone(),
                    payload_len: src.payload_len(),
                    meta_path: out.to_path_buf(),
                    settings: Some(settings),
                    extent: Some(extent),
                    encryption: None,
                    container: None,
                };
                Ok(OutputPaths {
                    disk,
                    created: vec![out.to_path_buf(), flat],
                })
            }
        }
    }
}

/// A path with its folder resolved (symlinks, `.`, `..`), for comparing names of files that
/// may not exist yet.
fn resolved(p: &Path) -> Option<PathBuf> {
    let dir = crate::fsutil::parent_dir(p).canonicalize().ok()?;
    Some(dir.join(p.file_name()?))
}

/// Whether `e` says that creating `p` failed because the file exists.
fn created_by_another(e: &Error, p: &Path) -> bool {
    matches!(e, Error::Io { op: "create", path, source }
        if path == p && source.kind() == std::io::ErrorKind::AlreadyExists)
}

/// Removes partial outputs unless cleared.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
