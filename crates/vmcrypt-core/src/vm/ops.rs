//! VM operations: encrypt, decrypt, inspect and shallow rekey of a VMX and all its disks.
//!
//! Every check happens before the first write: the VM key and every disk key are unwrapped,
//! `encryption.data` is opened, and the disks are checked to belong to this VM at a consistent
//! key generation. VM jobs are resumable at the file level: `vm encrypt` and `vm decrypt` mark
//! the VMX (`encrypting` / `decrypting`) before touching the disks and can be run again;
//! a shallow rekey stages every file before it commits any (see [`crate::disk`]'s rekey
//! protocol), so a crash leaves every file openable with the old or the new KEK and running the
//! rekey again completes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::{Vm, VmMeta, VmState};
use crate::disk::{
    DecryptOptions, Disk, DiskState, EncryptOptions, KekRef, Progress, create_verified_kek,
    decrypt_disk_of, encrypt_disk_with, pending_target, rekey_commit, rekey_stage, unwrap_disk_key,
};
use crate::locator::KeyLocator;
use crate::provider::{KeyId, KeyProvider, KeyPurpose, ProviderLookup};
use crate::secret::{ConfigKey, Dek, Kek, random_uuid};
use crate::wrap::{VmKeyContext, our_pairs, unwrap_config_key, wrap_config_key};
use crate::{Error, Result, SectorSize};

/// Options for VM jobs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VmOptions {
    /// Data unit size for newly encrypted disks.
    pub sector_size: SectorSize,
    /// Worker threads.
    pub threads: Option<usize>,
}

impl VmOptions {
    /// Sets the data unit size for newly encrypted disks.
    pub fn sector_size(mut self, s: SectorSize) -> Self {
        self.sector_size = s;
        self
    }

    /// Sets the worker thread count.
    pub fn threads(mut self, n: Option<usize>) -> Self {
        self.threads = n;
        self
    }
}

impl VmOptions {
    /// The thread count to use: the one set, else every core.
    /// What each disk of a VM job is encrypted with: in place, this data unit and threads.
    fn disk_options(&self) -> EncryptOptions {
        EncryptOptions {
            sector_size: self.sector_size,
            output: None,
            threads: self.threads,
            assume_raw: false,
        }
    }

    fn worker_threads(&self) -> usize {
        crate::disk::worker_threads(self.threads)
    }
}

/// Locks a VM for a job ([`crate::lock`]): its VMX, then each disk it lists as
/// [`crate::disk::lock_for_job`] does. The disk jobs a VM job runs take their disk's lock
/// again, which the same thread may.
///
/// # Errors
/// [`Error::InUse`] when another job or program holds the VMX or a disk; open errors.
pub fn lock_vm(vmx: &Path) -> Result<crate::lock::DiskLock> {
    use crate::lock::{Access, DiskLock};
    let mut lock = DiskLock::acquire(&[(vmx, Access::Write)])?;
    for d in Vm::open(vmx)?.disks() {
        lock.extend(crate::disk::lock_files(&d.path)?);
    }
    crate::failpoint::pause("locked");
    Ok(lock)
}

/// What a VM job holds while it runs: the VM's locks, and the hint that names the VMX when
/// one of its disk jobs is interrupted.
struct VmJob {
    _lock: crate::lock::DiskLock,
    _resume: crate::disk::ResumeAs,
}

impl VmJob {
    fn begin(vmx: &Path) -> Result<VmJob> {
        Ok(VmJob {
            _lock: lock_vm(vmx)?,
            _resume: crate::disk::resume_as(vmx),
        })
    }
}

/// Resumes every disk of the VM whose in-place job stopped in `state`.
fn resume_disks_in(
    vm: &Vm,
    state: DiskState,
    lookup: &ProviderLookup<'_>,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    for d in vm.disks() {
        if Disk::open(&d.path)?
            .encryption()
            .is_some_and(|e| e.state == state)
        {
            crate::disk::resume_disk(&d.path, lookup, threads, progress, cancel)?;
        }
    }
    Ok(())
}

/// What a VM job did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VmReport {
    /// The VMX.
    pub vmx: PathBuf,
    /// The VM's vmcrypt uuid.
    pub vm_uuid: String,
    /// Provider of the VM's KEK.
    pub provider: String,
    /// Key id of the VM's KEK.
    pub key_id: String,
    /// Key generation after the job.
    pub generation: u64,
    /// The disks, in VMX order.
    pub disks: Vec<PathBuf>,
    /// Payload bytes processed (0 for a shallow rekey).
    pub bytes: u64,
    /// Whether the job finished an interrupted earlier run.
    pub resumed: bool,
    /// Time spent.
    pub elapsed: Duration,
}

/// One disk as `vm inspect` sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VmDiskInfo {
    /// VMX key.
    pub key: String,
    /// Descriptor path.
    pub path: PathBuf,
    /// Encryption state, or None for a plain disk.
    pub state: Option<DiskState>,
    /// Key generation.
    pub generation: Option<u64>,
    /// Pending rekey generation.
    pub rekey_generation: Option<u64>,
    /// (provider, key id) of its wrappings.
    pub keys: Vec<(String, String)>,
    /// Whether the disk names this VM.
    pub belongs: bool,
    /// A problem opening it.
    pub error: Option<String>,
}

/// `vm inspect`: no key needed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VmInfo {
    /// The VMX.
    pub vmx: PathBuf,
    /// The clear VM metadata, if encrypted.
    pub meta: Option<VmMeta>,
    /// (provider, key id) of the VM keySafe.
    pub keys: Vec<(String, String)>,
    /// The disks.
    pub disks: Vec<VmDiskInfo>,
    /// Whether the VMX and its disks agree (VM uuid, generations), every disk can be read,
    /// and an encrypted VM has no plain disk.
    pub consistent: bool,
    /// What is wrong, one line each, when not consistent.
    pub problems: Vec<String>,
}

/// Describes a VM without unwrapping anything.
///
/// # Errors
/// [`Error::Io`], [`Error::InvalidSettings`] for the VMX itself.
pub fn vm_inspect(vmx: &Path) -> Result<VmInfo> {
    let vm = Vm::open(vmx)?;
    let meta = vm.meta().cloned();
    let keys = meta
        .as_ref()
        .map(|m| pairs(&m.key_safe))
        .unwrap_or_default();
    let mut disks = Vec::new();
    for d in vm.disks() {
        let mut info = VmDiskInfo {
            key: d.key.clone(),
            path: d.path.clone(),
            state: None,
            generation: None,
            rekey_generation: None,
            keys: vec![],
            belongs: false,
            error: None,
        };
        match Disk::open(&d.path) {
            Ok(disk) => {
                if let Some(e) = disk.encryption() {
                    info.state = Some(e.state);
                    info.generation = Some(e.generation);
                    info.rekey_generation = e.rekey_generation;
                    info.keys = e.keys();
                    info.belongs = meta
                        .as_ref()
                        .is_some_and(|m| e.vm_uuid.as_deref() == Some(m.vm_uuid.as_str()));
                }
            }
            Err(e) => info.error = Some(e.to_string()),
        }
        disks.push(info);
    }
    let mut problems = Vec::new();
    for d in &disks {
        let name = d.path.display();
        if let Some(e) = &d.error {
            problems.push(format!("{name} cannot be read: {e}"));
        }
    }
    match &meta {
        None => {
            for d in disks.iter().filter(|d| d.state.is_some()) {
                problems.push(format!(
                    "{} is encrypted but the VM is not",
                    d.path.display()
                ));
            }
        }
        Some(m) => {
            for d in disks.iter().filter(|d| d.error.is_none()) {
                let name = d.path.display();
                match d.state {
                    Some(_) if !d.belongs => {
                        problems.push(format!("{name} is encrypted for another VM, or on its own"))
                    }
                    // Mid `vm encrypt` or `vm decrypt`, some disks are plain: `resume` finishes.
                    None if m.state == VmState::Encrypted => problems.push(format!(
                        "{name} is not encrypted while the VM is (decrypted on its own?)"
                    )),
                    _ => {}
                }
            }
            let gens: Vec<(u64, Option<u64>)> = std::iter::once((m.generation, m.rekey_generation))
                .chain(
                    disks
                        .iter()
                        .filter_map(|d| d.generation.map(|g| (g, d.rekey_generation))),
                )
                .collect();
            if !generations_agree(&gens) {
                problems.push("the key generations of the VMX and its disks disagree".into());
            }
        }
    }
    let consistent = problems.is_empty();
    Ok(VmInfo {
        vmx: vmx.to_path_buf(),
        meta,
        keys,
        disks,
        consistent,
        problems,
    })
}

/// Encrypts a VM: one KEK from `provider`, a configuration key for the VMX's sealed entries,
/// and every disk in place under its own DEK. Running it again on a VM whose encryption was
/// interrupted continues with the same KEK.
///
/// # Errors
/// [`Error::InvalidInput`] for an encrypted VM or a disk that cannot be encrypted; provider,
/// unwrap and I/O errors. Nothing is written before every disk passed its checks.
pub fn vm_encrypt(
    vmx: &Path,
    provider: &dyn KeyProvider,
    lookup: &ProviderLookup<'_>,
    opts: &VmOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<VmReport> {
    let _job = VmJob::begin(vmx)?;
    let started = Instant::now();
    let mut vm = Vm::open(vmx)?;
    let disk_opts = opts.disk_options();
    let resumed = match vm.meta() {
        None => false,
        Some(m) if m.state == VmState::Encrypting => true,
        Some(m) => {
            return Err(Error::input(format!(
                "{} is already encrypted (state {})",
                vmx.display(),
                m.state.as_str()
            )));
        }
    };
    // Check every disk first. The VMX keeps its clear entries and gains the sealed rest as
    // base64 (4/3 of its size) and the keySafe.
    vm.settings
        .check_room(vmx, vm.settings.render().len() / 3 + 16 * 1024)?;
    for d in vm.disks() {
        let disk = Disk::open(&d.path)?;
        match disk.encryption() {
            None => crate::disk::check_encrypt_vm_disk(&d.path, &disk_opts)?,
            Some(e)
                if resumed
                    && e.vm_uuid.as_deref() == vm.meta().map(|m| m.vm_uuid.as_str())
                    && matches!(e.state, DiskState::Encrypted | DiskState::Encrypting) => {}
            Some(_) => {
                return Err(Error::input(format!(
                    "{} is already encrypted on its own; decrypt it first",
                    d.path.display()
                )));
            }
        }
    }
    let (meta, provider_name, key_id, kek) = if resumed {
        let meta = vm
            .meta()
            .cloned()
            .ok_or_else(|| Error::input("metadata vanished"))?;
        let (_, p, k, kek) = unwrap_vm_key(&vm, &meta, lookup)?;
        (meta, p, k, kek)
    } else {
        let vm_uuid = random_uuid()?;
        let (id, kek) = create_verified_kek(provider, &KeyPurpose::Vm(vm_uuid.clone()))?;
        let config_key = ConfigKey::generate()?;
        let ctx = VmKeyContext {
            provider: provider.name(),
            key_id: id.as_str(),
            vm_uuid: &vm_uuid,
            generation: 1,
        };
        let key_safe = KeyLocator::List(vec![wrap_config_key(&kek, &config_key, &ctx)?]);
        let locked = our_pairs(&key_safe)
            .first()
            .map(|p| p.2.to_vec())
            .ok_or(Error::UnwrapFailed)?;
        unwrap_config_key(&kek, &locked, &ctx)?;
        vm.seal_config(&config_key, &vm_uuid)?;
        let meta = VmMeta {
            vm_uuid,
            generation: 1,
            rekey_generation: None,
            key_safe,
            state: VmState::Encrypting,
        };
        vm.write_meta(&meta)?;
        (meta, provider.name().to_string(), id.to_string(), kek)
    };
    let kek_ref = KekRef {
        provider: &provider_name,
        key_id: &key_id,
        kek: &kek,
    };
    let mut bytes = 0;
    for d in vm.disks().to_vec() {
        match Disk::open(&d.path)?.encryption().map(|e| e.state) {
            None => {
                bytes += encrypt_disk_with(
                    &d.path,
                    &kek_ref,
                    Some(&meta.vm_uuid),
                    &disk_opts,
                    progress,
                    cancel,
                )?
                .bytes;
            }
            Some(DiskState::Encrypting) => {
                bytes += crate::disk::resume_disk(
                    &d.path,
                    lookup,
                    opts.worker_threads(),
                    progress,
                    cancel,
                )?
                .bytes;
            }
            Some(_) => {}
        }
    }
    let done = VmMeta {
        state: VmState::Encrypted,
        ..meta
    };
    vm.write_meta(&done)?;
    tracing::info!(vmx = %vmx.display(), disks = vm.disks().len(), "VM encrypted");
    Ok(report(
        &vm,
        &done,
        provider_name,
        key_id,
        bytes,
        resumed,
        started,
    ))
}

/// Decrypts a VM: every disk in place, then the VMX back to its original bytes (entries the
/// operator changed while it was encrypted keep their new values).
///
/// # Errors
/// [`Error::UnwrapFailed`] or [`Error::Integrity`] for tampered, swapped or rolled-back
/// metadata; provider and I/O errors. Nothing changes before every key has been unwrapped.
pub fn vm_decrypt(
    vmx: &Path,
    lookup: &ProviderLookup<'_>,
    opts: &VmOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<VmReport> {
    let _job = VmJob::begin(vmx)?;
    let started = Instant::now();
    let mut vm = Vm::open(vmx)?;
    let meta = vm
        .meta()
        .cloned()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", vmx.display())))?;
    let (config_key, provider_name, key_id, _) = unwrap_vm_key(&vm, &meta, lookup)?;
    let sealed = vm.open_config(&config_key, &meta.vm_uuid)?;
    if meta.state == VmState::Decrypting {
        // A disk whose decryption was cut short is finished first.
        resume_disks_in(
            &vm,
            DiskState::Decrypting,
            lookup,
            opts.worker_threads(),
            progress,
            cancel,
        )?;
    }
    let disks = open_vm_disks(&vm, &meta, lookup, meta.state != VmState::Encrypted)?;
    vm.write_meta(&VmMeta {
        state: VmState::Decrypting,
        ..meta.clone()
    })?;
    let mut bytes = 0;
    let dopts = DecryptOptions {
        output: None,
        threads: opts.threads,
    };
    for (disk, _) in &disks {
        if disk.encryption().is_some() {
            bytes += decrypt_disk_of(disk.path(), lookup, &dopts, progress, cancel, true)?.bytes;
        }
    }
    vm.restore_config(&sealed)?;
    tracing::info!(vmx = %vmx.display(), "VM decrypted");
    Ok(report(
        &vm,
        &meta,
        provider_name,
        key_id,
        bytes,
        meta.state != VmState::Encrypted,
        started,
    ))
}

/// Shallow rekey of a VM: a new KEK (from `provider`, or the VM's own provider when `None`)
/// wraps the configuration key and every DEK; no data sector is touched. An interrupted rekey
/// is completed with its own target KEK.
///
/// # Errors
/// As [`vm_decrypt`] for the checks; provider errors.
pub fn vm_rekey_shallow(
    vmx: &Path,
    provider: Option<&dyn KeyProvider>,
    lookup: &ProviderLookup<'_>,
) -> Result<VmReport> {
    let _job = VmJob::begin(vmx)?;
    let started = Instant::now();
    let (mut vm, meta, config_key, _, _, _) = open_encrypted_vm(vmx, lookup)?;
    let mut disks = open_vm_disks(&vm, &meta, lookup, false)?;
    // A rekey under way (in the VMX or any disk) is finished with its own target.
    let pending = std::iter::once((meta.rekey_generation, meta.key_safe.clone()))
        .chain(disks.iter().filter_map(|(d, _)| {
            d.encryption()
                .map(|e| (e.rekey_generation, e.key_safe.clone()))
        }))
        .find_map(|(g, ks)| g.and_then(|_| pending_target(&ks)));
    let resumed = pending.is_some();
    let (prov_name, key_id, kek) = match pending {
        Some((p, k)) => {
            let kek = lookup(&p)?.fetch_kek(&KeyId::new(k.clone())?)?;
            (p, k, kek)
        }
        None => {
            let owned;
            let provider = match provider {
                Some(p) => p,
                None => {
                    let current = pairs(&meta.key_safe)
                        .first()
                        .map(|(p, _)| p.clone())
                        .ok_or_else(|| Error::input("empty VM keySafe"))?;
                    owned = lookup(&current)?;
                    owned.as_ref()
                }
            };
            let (id, kek) = create_verified_kek(provider, &KeyPurpose::Vm(meta.vm_uuid.clone()))?;
            (provider.name().to_string(), id.to_string(), kek)
        }
    };
    let new = KekRef {
        provider: &prov_name,
        key_id: &key_id,
        kek: &kek,
    };
    let target = meta.rekey_generation.unwrap_or(meta.generation + 1);
    // Stage every file, then commit every file; the VMX last each time.
    let mut step = 0;
    for (disk, dek) in &mut disks {
        rekey_stage(disk, dek, &new, target)?;
        crate::failpoint::hit(&format!("vm-rekey-{step}"));
        step += 1;
    }
    let staged = stage_vm(&meta, &config_key, &new, target)?;
    vm.write_meta(&staged)?;
    crate::failpoint::hit(&format!("vm-rekey-{step}"));
    step += 1;
    for (disk, dek) in &mut disks {
        rekey_commit(disk, &new, dek)?;
        crate::failpoint::hit(&format!("vm-rekey-{step}"));
        step += 1;
    }
    check_vm_bound(&vm, &staged, &config_key, &new, target)?;
    let committed = commit_vm(&mut vm, staged, target)?;
    tracing::info!(vmx = %vmx.display(), provider = %prov_name, key_id = %key_id, generation = target, "VM rekeyed (shallow)");
    Ok(report(
        &vm, &committed, prov_name, key_id, 0, resumed, started,
    ))
}

/// Before the VM's commit: the newest pair of its keySafe must hold `config_key` under `new`,
/// bound to `target` (a forged `rekeyGeneration` is refused before the write that would make
/// the VM unopenable).
fn check_vm_bound(
    vm: &Vm,
    staged: &VmMeta,
    config_key: &ConfigKey,
    new: &KekRef<'_>,
    target: u64,
) -> Result<()> {
    let bound = our_pairs(&staged.key_safe)
        .last()
        .is_some_and(|(p, k, locked)| {
            let ctx = VmKeyContext {
                provider: p,
                key_id: k,
                vm_uuid: &staged.vm_uuid,
                generation: target,
            };
            *p == new.provider
                && *k == new.key_id
                && unwrap_config_key(new.kek, locked, &ctx).is_ok_and(|c| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        &c.expose_secret()[..],
                        &config_key.expose_secret()[..],
                    ))
                })
        });
    if bound {
        Ok(())
    } else {
        Err(Error::Integrity {
            path: vm.path().to_path_buf(),
            reason: format!(
                "rekeyGeneration {target} is not what the VM keySafe's newest key is bound to (altered metadata?); refusing to commit"
            ),
        })
    }
}

/// The VM's last rekey step: only the newest configuration-key pair is kept, at `target`.
fn commit_vm(vm: &mut Vm, staged: VmMeta, target: u64) -> Result<VmMeta> {
    let committed = VmMeta {
        key_safe: crate::wrap::newest_only(&staged.key_safe)?,
        generation: target,
        rekey_generation: None,
        ..staged
    };
    vm.write_meta(&committed)?;
    Ok(committed)
}

/// Deep rekey of a VM: every disk gets a new DEK and is re-encrypted in place (crash-safely,
/// each with its journal), under the VM's current KEK, and the VM moves to the next key
/// generation. The VMX is staged for the new generation first, so the VM stays consistent at
/// every instant; running it again after an interruption finishes it.
///
/// # Errors
/// As [`vm_decrypt`] for the checks; provider and I/O errors; [`Error::Cancelled`] (resumable).
pub fn vm_rekey_deep(
    vmx: &Path,
    lookup: &ProviderLookup<'_>,
    opts: &VmOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<VmReport> {
    let _job = VmJob::begin(vmx)?;
    let started = Instant::now();
    let (mut vm, meta, config_key, prov, key_id, kek) = open_encrypted_vm(vmx, lookup)?;
    let threads = opts.worker_threads();
    // Finish any disk job a crash interrupted, then check the whole VM.
    resume_disks_in(&vm, DiskState::Rekeying, lookup, threads, progress, cancel)?;
    let disks = open_vm_disks(&vm, &meta, lookup, false)?;
    let resumed = meta.rekey_generation.is_some();
    let target = meta.rekey_generation.unwrap_or(meta.generation + 1);
    let same = KekRef {
        provider: &prov,
        key_id: &key_id,
        kek: &kek,
    };
    if meta.rekey_generation.is_none() {
        let staged = stage_vm(&meta, &config_key, &same, target)?;
        vm.write_meta(&staged)?;
    }
    let mut bytes = 0;
    for (disk, _) in &disks {
        let at = disk.encryption().map(|e| e.generation).unwrap_or(target);
        if at < target {
            bytes += crate::disk::rekey_deep(disk.path(), lookup, threads, progress, cancel, true)?
                .0
                .bytes;
        }
    }
    let staged = vm
        .meta()
        .cloned()
        .ok_or_else(|| Error::input("metadata vanished"))?;
    let committed = commit_vm(&mut vm, staged, target)?;
    tracing::info!(vmx = %vmx.display(), generation = target, "VM rekeyed (deep)");
    Ok(report(
        &vm, &committed, prov, key_id, bytes, resumed, started,
    ))
}

/// Finishes whatever VM job was interrupted: `vm encrypt`, `vm decrypt`, or a shallow or deep
/// `vm rekey`. Harmless when nothing is under way.
///
/// # Errors
/// As the job being finished.
pub fn vm_resume(
    vmx: &Path,
    lookup: &ProviderLookup<'_>,
    opts: &VmOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<Option<VmReport>> {
    let _job = VmJob::begin(vmx)?;
    let vm = Vm::open(vmx)?;
    let Some(meta) = vm.meta().cloned() else {
        return Ok(None);
    };
    let keys = pairs(&meta.key_safe);
    let provider_name = keys
        .first()
        .map(|(p, _)| p.clone())
        .ok_or_else(|| Error::input("empty VM keySafe"))?;
    match meta.state {
        VmState::Encrypting => {
            let provider = lookup(&provider_name)?;
            vm_encrypt(vmx, provider.as_ref(), lookup, opts, progress, cancel).map(Some)
        }
        VmState::Decrypting => vm_decrypt(vmx, lookup, opts, progress, cancel).map(Some),
        _ if meta.rekey_generation.is_none() && has_plain_disk(&vm) => {
            repair_plain_disks(vmx, lookup, opts, progress, cancel).map(Some)
        }
        _ => {
            let disk_mid_job = vm.disks().iter().any(|d| {
                Disk::open(&d.path)
                    .ok()
                    .and_then(|x| x.encryption().map(|e| e.state))
                    == Some(DiskState::Rekeying)
            });
            let same_key = keys.len() > 1 && keys.first() == keys.last();
            if disk_mid_job || (meta.rekey_generation.is_some() && same_key) {
                vm_rekey_deep(vmx, lookup, opts, progress, cancel).map(Some)
            } else {
                let staged = meta.rekey_generation.is_some()
                    || vm.disks().iter().any(|d| {
                        Disk::open(&d.path)
                            .ok()
                            .and_then(|x| x.encryption().and_then(|e| e.rekey_generation))
                            .is_some()
                    });
                if staged {
                    vm_rekey_shallow(vmx, None, lookup).map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }
}

fn has_plain_disk(vm: &Vm) -> bool {
    vm.disks()
        .iter()
        .any(|d| Disk::open(&d.path).is_ok_and(|x| x.encryption().is_none()))
}

/// An encrypted VM with a plain disk (decrypted on its own, by an earlier version that let a
/// lone `decrypt` do so): the disk is encrypted again under the VM's KEK, uuid and key
/// generation, so the VM opens and decrypts as a whole again.
fn repair_plain_disks(
    vmx: &Path,
    lookup: &ProviderLookup<'_>,
    opts: &VmOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<VmReport> {
    let started = Instant::now();
    let (vm, meta, _, prov, key_id, kek) = open_encrypted_vm(vmx, lookup)?;
    let kek_ref = KekRef {
        provider: &prov,
        key_id: &key_id,
        kek: &kek,
    };
    let disk_opts = opts.disk_options();
    let mut bytes = 0;
    for d in vm.disks() {
        if Disk::open(&d.path)?.encryption().is_none() {
            tracing::warn!(disk = %d.path.display(), vmx = %vmx.display(), "a disk of the encrypted VM is plain: encrypting it again under the VM's key");
            let vm_at = Some((meta.vm_uuid.as_str(), meta.generation));
            bytes +=
                crate::disk::encrypt_under(&d.path, &kek_ref, vm_at, &disk_opts, progress, cancel)?
                    .bytes;
        }
    }
    Ok(report(&vm, &meta, prov, key_id, bytes, true, started))
}

/// The VM keySafe staged with the new wrapping (idempotent).
fn stage_vm(
    meta: &VmMeta,
    config_key: &ConfigKey,
    new: &KekRef<'_>,
    target: u64,
) -> Result<VmMeta> {
    if meta.rekey_generation.is_some()
        && pairs(&meta.key_safe)
            .last()
            .is_some_and(|(p, k)| p == new.provider && k == new.key_id)
    {
        return Ok(meta.clone());
    }
    let ctx = VmKeyContext {
        provider: new.provider,
        key_id: new.key_id,
        vm_uuid: &meta.vm_uuid,
        generation: target,
    };
    let pair = wrap_config_key(new.kek, config_key, &ctx)?;
    Ok(VmMeta {
        key_safe: crate::wrap::rewrapped(&meta.key_safe, pair, new.provider, new.key_id),
        rekey_generation: Some(target),
        ..meta.clone()
    })
}

/// Opens an encrypted VM with no VM job under way, unwraps its configuration key and checks
/// `encryption.data`: (VM, metadata, config key, provider, key id, KEK).
#[allow(clippy::type_complexity)]
fn open_encrypted_vm(
    vmx: &Path,
    lookup: &ProviderLookup<'_>,
) -> Result<(Vm, VmMeta, ConfigKey, String, String, Kek)> {
    let vm = Vm::open(vmx)?;
    let meta = vm
        .meta()
        .cloned()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", vmx.display())))?;
    if meta.state != VmState::Encrypted {
        return Err(Error::input(format!(
            "{} has an interrupted VM job (state {}): run `vmcrypt resume {}`",
            vmx.display(),
            meta.state.as_str(),
            vmx.display()
        )));
    }
    let (config_key, prov, key_id, kek) = unwrap_vm_key(&vm, &meta, lookup)?;
    vm.open_config(&config_key, &meta.vm_uuid)?;
    Ok((vm, meta, config_key, prov, key_id, kek))
}

/// Unwraps the VM configuration key: (key, provider, key id, KEK).
fn unwrap_vm_key(
    vm: &Vm,
    meta: &VmMeta,
    lookup: &ProviderLookup<'_>,
) -> Result<(ConfigKey, String, String, Kek)> {
    let candidates = our_pairs(&meta.key_safe);
    if candidates.is_empty() {
        return Err(Error::Unsupported {
            what: format!(
                "the keySafe of {} has no key vmcrypt can open",
                vm.path().display()
            ),
        });
    }
    let mut last = Error::UnwrapFailed;
    for (p, k, locked) in candidates {
        let attempt = (|| {
            let kek = lookup(p)?.fetch_kek(&KeyId::new(k)?)?;
            for generation in std::iter::once(meta.generation).chain(meta.rekey_generation) {
                let ctx = VmKeyContext {
                    provider: p,
                    key_id: k,
                    vm_uuid: &meta.vm_uuid,
                    generation,
                };
                if let Ok(key) = unwrap_config_key(&kek, locked, &ctx) {
                    return Ok((key, kek));
                }
            }
            Err(Error::UnwrapFailed)
        })();
        match attempt {
            Ok((key, kek)) => return Ok((key, p.to_string(), k.to_string(), kek)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Opens every disk of the VM and unwraps its DEK, checking it belongs to this VM and agrees on
/// the key generation. Plain disks are allowed only while a VM job was interrupted.
fn open_vm_disks(
    vm: &Vm,
    meta: &VmMeta,
    lookup: &ProviderLookup<'_>,
    interrupted: bool,
) -> Result<Vec<(Disk, Dek)>> {
    let mut out = Vec::new();
    let mut gens = vec![(meta.generation, meta.rekey_generation)];
    for d in vm.disks() {
        let disk = Disk::open(&d.path)?;
        let Some(e) = disk.encryption().cloned() else {
            if interrupted {
                continue;
            }
            return Err(Error::Integrity {
                path: d.path.clone(),
                reason: "the VM is encrypted but this disk is not".into(),
            });
        };
        if e.vm_uuid.as_deref() != Some(meta.vm_uuid.as_str()) {
            return Err(Error::Integrity {
                path: d.path.clone(),
                reason: "the disk's keySafe belongs to another VM (or to no VM)".into(),
            });
        }
        if e.state != DiskState::Encrypted {
            return Err(Error::input(format!(
                "{} has an interrupted in-place job (state {})",
                d.path.display(),
                e.state.as_str()
            )));
        }
        gens.push((e.generation, e.rekey_generation));
        let (dek, _, _) = unwrap_disk_key(&disk, lookup)?;
        out.push((disk, dek));
    }
    if !generations_agree(&gens) {
        return Err(Error::Integrity {
            path: vm.path().to_path_buf(),
            reason: format!(
                "the VMX and its disks disagree on the key generation ({gens:?}): a file was rolled back or swapped"
            ),
        });
    }
    Ok(out)
}

/// Files agree when all sit at one generation, or (during a rekey) at g and g+1 with the
/// stragglers staged for g+1.
fn generations_agree(gens: &[(u64, Option<u64>)]) -> bool {
    let lo = gens.iter().map(|(g, _)| *g).min().unwrap_or(0);
    let hi = gens.iter().map(|(g, p)| p.unwrap_or(*g)).max().unwrap_or(0);
    let pending = gens.iter().any(|(_, p)| p.is_some());
    if !pending {
        return gens.iter().all(|(g, _)| *g == lo);
    }
    hi == lo + 1
        && gens
            .iter()
            .all(|(g, p)| *g == hi || (*g == lo && (p.is_none() || *p == Some(hi))))
}

fn pairs(ks: &KeyLocator) -> Vec<(String, String)> {
    our_pairs(ks)
        .into_iter()
        .map(|(p, k, _)| (p.to_string(), k.to_string()))
        .collect()
}

fn report(
    vm: &Vm,
    meta: &VmMeta,
    provider: String,
    key_id: String,
    bytes: u64,
    resumed: bool,
    started: Instant,
) -> VmReport {
    VmReport {
        vmx: vm.path().to_path_buf(),
        vm_uuid: meta.vm_uuid.clone(),
        provider,
        key_id,
        generation: meta.generation,
        disks: vm.disks().iter().map(|d| d.path.clone()).collect(),
        bytes,
        resumed,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::generations_agree;

    #[test]
    fn generation_rules() {
        assert!(generations_agree(&[(1, None), (1, None)]));
        assert!(
            !generations_agree(&[(2, None), (1, None)]),
            "rolled back disk"
        );
        assert!(
            generations_agree(&[(1, Some(2)), (1, Some(2)), (2, None)]),
            "mid-rekey"
        );
        assert!(
            generations_agree(&[(1, Some(2)), (1, None)]),
            "VMX staged first is fine too"
        );
        assert!(!generations_agree(&[(1, Some(2)), (3, None)]));
        assert!(!generations_agree(&[(3, Some(4)), (1, None)]));
    }
}
