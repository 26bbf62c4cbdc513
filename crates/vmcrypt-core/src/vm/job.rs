//! The front door for VM jobs: [`VmJob`], built then run like a [`crate::DiskJob`], giving one
//! [`Report`]; and what every VM job holds while it runs (the VM's locks, the resume hint).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::Vm;
use crate::Result;
use crate::disk::JobOptions;
use crate::keysafe::KeyRing;
use crate::progress::Progress;
use crate::provider::ProviderRegistry;
use crate::report::Report;

/// What each disk of a VM job is encrypted with: in place, the VM job's data unit, threads
/// and tuning.
pub(crate) fn disk_options(opts: &JobOptions) -> JobOptions {
    JobOptions {
        output: None,
        assume_raw: false,
        ..opts.clone()
    }
}

/// What a VM job runs with: the job's KEKs, its options, progress and cancel flag, and the
/// servers of the disks of a running VM, if the caller can reach them.
pub(crate) struct Ctx<'a> {
    pub ring: &'a KeyRing<'a>,
    pub opts: &'a JobOptions,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
    pub served: Option<&'a dyn super::ServedDisks>,
}

/// Locks a VM for a job ([`crate::lock`]): its VMX, then each disk it lists as
/// [`crate::disk::lock_for_job`] does. The disk jobs a VM job runs take their disk's lock
/// again, which the same thread may.
///
/// # Errors
/// [`crate::Error::InUse`] when another job or program holds the VMX or a disk; open errors.
pub fn lock_vm(vmx: &Path) -> Result<crate::lock::DiskLock> {
    lock_vm_except(vmx, &[])
}

/// [`lock_vm`] but for the disks in `served`, which their servers hold.
fn lock_vm_except(vmx: &Path, served: &[PathBuf]) -> Result<crate::lock::DiskLock> {
    use crate::lock::{Access, DiskLock};
    let mut lock = DiskLock::acquire(&[(vmx, Access::Write)])?;
    for d in Vm::open(vmx)?.disks() {
        if !served.contains(&d.path) {
            lock.extend(crate::disk::lock_files(&d.path)?);
        }
    }
    crate::failpoint::pause("locked");
    Ok(lock)
}

/// What a VM job holds while it runs: the VM's locks, and the hint that names the VMX when
/// one of its disk jobs is interrupted.
pub(crate) struct Held {
    _lock: crate::lock::DiskLock,
    _resume: crate::disk::ResumeAs,
}

impl Held {
    pub fn begin(vmx: &Path) -> Result<Held> {
        Self::begin_except(vmx, &[])
    }

    /// Holds the VM but for the disks in `served` (their servers hold them).
    pub fn begin_except(vmx: &Path, served: &[PathBuf]) -> Result<Held> {
        Ok(Held {
            _lock: lock_vm_except(vmx, served)?,
            _resume: crate::disk::resume_as(vmx),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Encrypt,
    Decrypt,
    RekeyShallow,
    RekeyDeep,
    Resume,
}

/// A job on a whole VM (its VMX and every disk it lists), configured then run. Every check
/// happens before the first write; every VM job is resumable ([`VmJob::resume`]).
#[derive(Debug, Clone)]
#[must_use = "a job does nothing until it is run"]
pub struct VmJob {
    verb: Verb,
    vmx: PathBuf,
    opts: JobOptions,
}

impl VmJob {
    fn new(verb: Verb, vmx: impl Into<PathBuf>) -> Self {
        VmJob {
            verb,
            vmx: vmx.into(),
            opts: JobOptions::default(),
        }
    }

    /// Encrypt a VM: one KEK from [`VmJob::provider`], a configuration key for the VMX's
    /// sealed entries, and every disk in place under its own DEK. Run again on a VM whose
    /// encryption was interrupted, it continues with the same KEK.
    pub fn encrypt(vmx: impl Into<PathBuf>) -> Self {
        Self::new(Verb::Encrypt, vmx)
    }

    /// Decrypt a VM: every disk in place, then the VMX back to its original bytes (entries the
    /// operator changed while it was encrypted keep their new values).
    pub fn decrypt(vmx: impl Into<PathBuf>) -> Self {
        Self::new(Verb::Decrypt, vmx)
    }

    /// Shallow rekey: a new KEK (from [`VmJob::provider`], else the VM's own provider) wraps
    /// the configuration key and every DEK; no data sector is touched.
    pub fn rekey_shallow(vmx: impl Into<PathBuf>) -> Self {
        Self::new(Verb::RekeyShallow, vmx)
    }

    /// Deep rekey: every disk gets a new DEK and is re-encrypted in place, under the VM's KEK.
    pub fn rekey_deep(vmx: impl Into<PathBuf>) -> Self {
        Self::new(Verb::RekeyDeep, vmx)
    }

    /// [`VmJob::resume`] with the options of the disk job that named the VMX.
    pub(crate) fn resume_with(vmx: impl Into<PathBuf>, opts: JobOptions) -> Self {
        VmJob {
            opts,
            ..Self::new(Verb::Resume, vmx)
        }
    }

    /// Finish whatever VM job was interrupted (harmless when none is).
    pub fn resume(vmx: impl Into<PathBuf>) -> Self {
        Self::new(Verb::Resume, vmx)
    }

    crate::disk::common_setters!();

    /// Runs the job. Each provider is asked for each KEK once, whatever the number of disks.
    ///
    /// # Errors
    /// [`crate::Error::InUse`]; typed input errors; [`crate::Error::UnwrapFailed`] or
    /// [`crate::Error::Integrity`] for tampered, swapped or rolled-back metadata; provider and
    /// I/O errors; [`crate::Error::Cancelled`] (resumable).
    pub fn run(
        &self,
        registry: &dyn ProviderRegistry,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<Report> {
        self.run_in(registry, progress, cancel, None)
    }

    /// [`VmJob::run`] on a VM whose disks may be served (the VM running): a deep rekey (or
    /// its resume) has the server of each served disk rekey it online, through `served`,
    /// and rekeys the others offline. Other jobs meet a served disk as a disk in use.
    ///
    /// # Errors
    /// As [`VmJob::run`]; a server's refusal or failure (the VM stays staged, and the job
    /// run again goes on).
    pub fn run_served(
        &self,
        registry: &dyn ProviderRegistry,
        progress: &dyn Progress,
        cancel: &AtomicBool,
        served: &dyn super::ServedDisks,
    ) -> Result<Report> {
        self.run_in(registry, progress, cancel, Some(served))
    }

    fn run_in(
        &self,
        registry: &dyn ProviderRegistry,
        progress: &dyn Progress,
        cancel: &AtomicBool,
        served: Option<&dyn super::ServedDisks>,
    ) -> Result<Report> {
        let ring = KeyRing::new(registry);
        let ctx = Ctx {
            ring: &ring,
            opts: &self.opts,
            progress,
            cancel,
            served,
        };
        let vmx = &self.vmx;
        match self.verb {
            Verb::Encrypt => super::encrypt::encrypt(vmx, &ctx),
            Verb::Decrypt => super::decrypt::decrypt(vmx, &ctx),
            Verb::RekeyShallow => super::rekey::shallow(vmx, &ctx),
            Verb::RekeyDeep => super::rekey::deep(vmx, &ctx),
            Verb::Resume => super::resume::resume(vmx, &ctx),
        }
    }
}
