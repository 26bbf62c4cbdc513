//! Encrypt a plain disk: a new DEK, wrapped under a KEK, in place or into a new disk.
//!
//! Everything is checked before the first byte is written: the disk's format and state, the
//! payload size against the container, and the new keySafe's round trip (the KEK is fetched
//! back from the provider and the fresh keySafe opened before any data is touched, so a key
//! the provider cannot return never protects data). Outputs are created exclusively and
//! removed again if the job fails. In place, the metadata is written first (state
//! `encrypting`), so the key is on disk before any sector changes.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use vmcrypt_xts::Direction;

use super::job::{DiskReport, JobOptions};
use super::output::OutputPaths;
use super::transform::WholeDisk;
use super::{Disk, DiskState, EncryptionMeta};
use crate::keysafe::{DiskBinding, KekRef, KeyRing, KeySafe};
use crate::progress::Progress;
use crate::provider::{KeyProvider, KeyPurpose};
use crate::secret::{Dek, random_uuid};
use crate::wrap::DiskIdentity;
use crate::{Error, Result};

/// A plain disk under its lock, checked, ready to be encrypted.
struct Prepared {
    _lock: crate::lock::DiskLock,
    disk: Disk,
    out: Option<OutputPaths>,
}

/// Locks the disk and runs every check of an encryption.
fn prepare(path: &Path, opts: &JobOptions) -> Result<Prepared> {
    let (lock, disk) = super::open_for_job(path)?;
    let (disk, out) = preflight_encrypt(disk, opts)?;
    Ok(Prepared {
        _lock: lock,
        disk,
        out,
    })
}

/// Who the new DEK is wrapped for: the KEK, the disk's new uuid, and for a VM's disk the VM's
/// uuid and key generation.
struct Owner<'a> {
    kek: &'a KekRef<'a>,
    disk_uuid: String,
    vm: Option<(&'a str, u64)>,
}

/// Encrypts a plain disk with a new DEK wrapped under a new KEK from `provider`.
pub(crate) fn encrypt_new_kek(
    path: &Path,
    provider: &dyn KeyProvider,
    ring: &KeyRing<'_>,
    opts: &JobOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    let prepared = prepare(path, opts)?;
    refuse_vm_member(path, opts)?;
    let disk_uuid = random_uuid()?;
    let kek = ring.create_verified(provider, &KeyPurpose::Disk(disk_uuid.clone()))?;
    let owner = Owner {
        kek: &kek.as_ref(),
        disk_uuid,
        vm: None,
    };
    prepared.encrypt(&owner, opts, progress, cancel)
}

/// Encrypts a plain disk under an existing KEK; for a VM's disk, `vm` is the VM's uuid and key
/// generation (1 for a new VM; the VM's own when `resume VMX` repairs a VM one of whose disks
/// was decrypted on its own).
pub(crate) fn encrypt_under(
    path: &Path,
    kek: &KekRef<'_>,
    vm: Option<(&str, u64)>,
    opts: &JobOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<DiskReport> {
    let prepared = prepare(path, opts)?;
    let owner = Owner {
        kek,
        disk_uuid: random_uuid()?,
        vm,
    };
    prepared.encrypt(&owner, opts, progress, cancel)
}

impl Prepared {
    fn encrypt(
        self,
        owner: &Owner<'_>,
        opts: &JobOptions,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<DiskReport> {
        let Prepared { _lock, disk, out } = self;
        let (kek, vm) = (owner.kek, owner.vm);
        let disk_uuid = owner.disk_uuid.clone();
        let unit = opts.sector_size;
        let len = disk.payload_len();
        // In place, the payload moves up by one window while it is encrypted, so that each byte
        // is written once (docs/crash-safety.md); into a new file it stays at 0.
        let payload_offset = match out {
            None => super::inplace::shift_for_encrypt(&disk, &opts.tuning)?,
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
        let binding = DiskBinding {
            vm_uuid,
            disk: &identity,
        };
        let key_safe = KeySafe::seal(&binding, kek, &dek, generation)?;
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
        let job = WholeDisk {
            dek: &dek,
            dir: Direction::Encrypt,
            src_offset: 0,
            len,
            unit,
            threads: opts.worker_threads(),
            tuning: opts.tuning,
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
}

/// Checks everything an encryption checks before it asks a provider for a key, without
/// touching anything. The disk's lock is taken and released again, so a disk in use is
/// refused before a key is made for it.
pub(crate) fn check_encrypt(path: &Path, opts: &JobOptions) -> Result<()> {
    check_encrypt_vm_disk(path, opts)?;
    refuse_vm_member(path, opts)
}

/// [`check_encrypt`] for a disk a VM job encrypts: the VM that lists it is the one asking.
pub(crate) fn check_encrypt_vm_disk(path: &Path, opts: &JobOptions) -> Result<()> {
    let (_lock, disk) = super::open_for_job(path)?;
    preflight(disk, opts).map(|_| ())
}

/// Refuses to encrypt, on its own, a plain disk that an encrypted (or encrypting) VM in the
/// same folder lists: `vm encrypt` owns it, with the VM's KEK and uuid. An encrypted copy
/// elsewhere (`--output`) leaves the VM as it is.
fn refuse_vm_member(path: &Path, opts: &JobOptions) -> Result<()> {
    if opts.output.is_some() {
        return Ok(());
    }
    refuse_vm_member_in_place(path)
}

/// [`refuse_vm_member`] for an encryption in place (offline, or by the disk's server).
pub(crate) fn refuse_vm_member_in_place(path: &Path) -> Result<()> {
    match crate::vm::encrypted_vm_listing(path) {
        Some(vmx) => Err(Error::BelongsToVm {
            path: path.to_path_buf(),
            advice: format!(
                "it is a disk of the encrypted VM {}: run `vmcrypt vm encrypt {}` (or `vmcrypt resume {}`) instead",
                vmx.display(),
                vmx.display(),
                vmx.display()
            ),
        }),
        None => Ok(()),
    }
}

/// The checks of an encryption under the disk's lock, after clearing what a job that never
/// started left behind (in place only: only then does the job use the journal).
fn preflight_encrypt(disk: Disk, opts: &JobOptions) -> Result<(Disk, Option<OutputPaths>)> {
    let disk = match opts.output {
        None => super::cleanup::clear_unrecorded_job(disk)?,
        Some(_) => disk,
    };
    preflight(disk, opts)
}

fn preflight(disk: Disk, opts: &JobOptions) -> Result<(Disk, Option<OutputPaths>)> {
    let path = &disk.path().to_path_buf();
    if let Some(e) = disk.encryption() {
        return Err(match e.state {
            DiskState::Encrypted => Error::AlreadyEncrypted {
                path: path.to_path_buf(),
            },
            s => Error::job_under_way(path, s.as_str()),
        });
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
    if !len.is_multiple_of(unit.bytes() as u64) {
        return Err(Error::input(format!(
            "{}: payload of {len} bytes is not a whole number of {}-byte sectors{}",
            path.display(),
            unit.bytes(),
            if len.is_multiple_of(512) {
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
