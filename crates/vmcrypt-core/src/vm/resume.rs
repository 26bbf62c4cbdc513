//! `resume VMX`: finish whatever VM job was interrupted, and repair an encrypted VM one of
//! whose disks was decrypted on its own.

use std::path::Path;
use std::time::Instant;

use super::job::{Ctx, Held};
use super::keys::{VmReport, open_encrypted_vm};
use super::{Vm, VmState};
use crate::Result;
use crate::disk::{Disk, DiskState};
use crate::report::Report;

/// Finishes whatever VM job was interrupted: `vm encrypt`, `vm decrypt`, or a shallow or deep
/// `vm rekey`. Harmless when nothing is under way: the report says `resumed: false`.
pub(crate) fn resume(vmx: &Path, ctx: &Ctx<'_>) -> Result<Report> {
    let vm = Vm::open(vmx)?;
    let served = super::served::served_disks(&vm, ctx.served);
    let _held = Held::begin_except(vmx, &served)?;
    let nothing = || Report {
        operation: "resume",
        vmx: Some(vmx.to_path_buf()),
        resumed: Some(false),
        ..Report::default()
    };
    let Some(meta) = vm.meta().cloned() else {
        return Ok(nothing());
    };
    let state_of = |d: &super::VmDisk| {
        Disk::open(&d.path)
            .ok()
            .and_then(|x| x.encryption().cloned())
    };
    let done = match meta.state {
        VmState::Encrypting => super::encrypt::encrypt(vmx, ctx)?,
        VmState::Decrypting => super::decrypt::decrypt(vmx, ctx)?,
        _ if meta.rekey_generation.is_none() && has_plain_disk(&vm) => {
            repair_plain_disks(vmx, ctx)?
        }
        _ => {
            let disk_mid_job = vm.disks().iter().any(|d| {
                state_of(d).is_some_and(|e| {
                    matches!(e.state, DiskState::Rekeying | DiskState::RekeyingOnline)
                })
            });
            let pairs = meta.key_safe().pairs();
            let same_key = pairs.len() > 1
                && pairs.first().map(|p| (p.provider, p.key_id))
                    == pairs.last().map(|p| (p.provider, p.key_id));
            if disk_mid_job || (meta.rekey_generation.is_some() && same_key) {
                super::rekey::deep(vmx, ctx)?
            } else {
                let staged = meta.rekey_generation.is_some()
                    || vm
                        .disks()
                        .iter()
                        .any(|d| state_of(d).is_some_and(|e| e.rekey_generation.is_some()));
                if !staged {
                    return Ok(nothing());
                }
                super::rekey::shallow(vmx, ctx)?
            }
        }
    };
    Ok(Report {
        operation: "resume",
        resumed: Some(true),
        ..done
    })
}

/// Resumes every disk of the VM whose in-place job stopped in one of `states`, but for the
/// disks in `served` (their servers take their own jobs up).
pub(crate) fn resume_disks_in(
    vm: &Vm,
    states: &[DiskState],
    served: &[std::path::PathBuf],
    ctx: &Ctx<'_>,
) -> Result<()> {
    for d in vm.disks() {
        if served.contains(&d.path) {
            continue;
        }
        if Disk::open(&d.path)?
            .encryption()
            .is_some_and(|e| states.contains(&e.state))
        {
            crate::disk::resume_with(
                &d.path,
                ctx.ring,
                ctx.opts.worker_threads(),
                ctx.progress,
                ctx.cancel,
            )?;
        }
    }
    Ok(())
}

fn has_plain_disk(vm: &Vm) -> bool {
    vm.disks()
        .iter()
        .any(|d| Disk::open(&d.path).is_ok_and(|x| x.encryption().is_none()))
}

/// An encrypted VM with a plain disk (decrypted on its own, by an earlier version that let a
/// lone `decrypt` do so): the disk is encrypted again under the VM's KEK, uuid and key
/// generation, so the VM opens and decrypts as a whole again.
fn repair_plain_disks(vmx: &Path, ctx: &Ctx<'_>) -> Result<Report> {
    let started = Instant::now();
    let open = open_encrypted_vm(vmx, ctx.ring)?;
    let kek = open.key.kek.as_ref();
    let disk_opts = super::job::disk_options(ctx.opts);
    let mut bytes = 0;
    for d in open.vm.disks() {
        if Disk::open(&d.path)?.encryption().is_none() {
            tracing::warn!(disk = %d.path.display(), vmx = %vmx.display(), "a disk of the encrypted VM is plain: encrypting it again under the VM's key");
            let vm_at = Some((open.meta.vm_uuid.as_str(), open.meta.generation));
            bytes += crate::disk::encrypt_under(
                &d.path,
                &kek,
                vm_at,
                &disk_opts,
                ctx.progress,
                ctx.cancel,
            )?
            .bytes;
        }
    }
    Ok(VmReport {
        operation: "resume",
        vm: &open.vm,
        meta: &open.meta,
        provider: kek.provider,
        key_id: kek.key_id,
        bytes,
        resumed: true,
        started,
    }
    .report())
}
