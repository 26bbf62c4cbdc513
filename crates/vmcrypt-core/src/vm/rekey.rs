//! `vm rekey`: shallow (a new KEK for the VM and every disk; no data sector touched) and deep
//! (a new DEK for every disk, re-encrypted in place, under the VM's KEK). A shallow rekey
//! stages every file, the VMX last, before it commits any (the protocol of
//! [`crate::disk`]'s shallow rekey), so a crash leaves every file openable with the old or the
//! new KEK; a deep rekey stages the VMX for the next generation first, so the VM is consistent
//! at every instant. Running either again after an interruption finishes it.

use std::path::Path;
use std::time::Instant;

use super::job::{Ctx, Held};
use super::keys::{VmReport, open_encrypted_vm, open_vm_disks};
use super::resume::resume_disks_in;
use super::served::served_disks;
use super::{Vm, VmMeta};
use crate::disk::{DiskState, rekey_commit, rekey_stage};
use crate::keysafe::{KekRef, Opened};
use crate::provider::KeyPurpose;
use crate::report::Report;
use crate::secret::ConfigKey;
use crate::{Error, Result};

/// Shallow rekey of a VM; an interrupted one is completed with its own target KEK.
pub(crate) fn shallow(vmx: &Path, ctx: &Ctx<'_>) -> Result<Report> {
    let _held = Held::begin(vmx)?;
    let started = Instant::now();
    let open = open_encrypted_vm(vmx, ctx.ring)?;
    let (mut vm, meta) = (open.vm, open.meta);
    let mut disks = open_vm_disks(&vm, &meta, ctx.ring, false, &[])?;
    // A rekey under way (in the VMX or any disk) is finished with its own target.
    let pending = std::iter::once((meta.rekey_generation, meta.key_safe().pending_target()))
        .chain(disks.iter().filter_map(|(d, _)| {
            d.encryption()
                .map(|e| (e.rekey_generation, e.key_safe().pending_target()))
        }))
        .find_map(|(g, target)| g.and(target));
    let resumed = pending.is_some();
    let new = match pending {
        Some((p, k)) => ctx
            .ring
            .kek(&p, &k, &KeyPurpose::Vm(meta.vm_uuid.clone()))?,
        None => {
            let name = match &ctx.opts.provider {
                Some(n) => n.clone(),
                None => open.key.kek.provider.clone(),
            };
            let provider = ctx.ring.provider(&name)?;
            ctx.ring
                .create_verified(provider.as_ref(), &KeyPurpose::Vm(meta.vm_uuid.clone()))?
        }
    };
    let target = meta.rekey_generation.unwrap_or(meta.generation + 1);
    // Stage every file, then commit every file; the VMX last each time.
    let mut step = 0;
    for (disk, dek) in &mut disks {
        rekey_stage(disk, dek, &new.as_ref(), target)?;
        crate::failpoint::hit(&format!("vm-rekey-{step}"));
        step += 1;
    }
    let staged = stage_vm(&meta, &open.key.secret, &new.as_ref(), target)?;
    vm.write_meta(&staged)?;
    crate::failpoint::hit(&format!("vm-rekey-{step}"));
    step += 1;
    for (disk, dek) in &mut disks {
        rekey_commit(disk, &new.as_ref(), dek)?;
        crate::failpoint::hit(&format!("vm-rekey-{step}"));
        step += 1;
    }
    let committed = commit_vm(&mut vm, staged, &open.key.secret, &new.as_ref(), target)?;
    tracing::info!(vmx = %vmx.display(), provider = %new.provider, key_id = %new.key_id, generation = target, "VM rekeyed (shallow)");
    Ok(VmReport {
        operation: "rekeyed (shallow)",
        vm: &vm,
        meta: &committed,
        provider: &new.provider,
        key_id: &new.key_id,
        bytes: 0,
        resumed,
        started,
    }
    .report())
}

/// Deep rekey of a VM, or the rest of an interrupted one. The disks a server holds (the VM
/// runs) are rekeyed online by their servers (vm::served), the others offline.
pub(crate) fn deep(vmx: &Path, ctx: &Ctx<'_>) -> Result<Report> {
    let served = served_disks(&Vm::open(vmx)?, ctx.served);
    let _held = Held::begin_except(vmx, &served)?;
    let started = Instant::now();
    let open = open_encrypted_vm(vmx, ctx.ring)?;
    let (mut vm, meta) = (open.vm, open.meta);
    // Finish any disk job a crash interrupted (a server takes up its own), then check the
    // whole VM.
    resume_disks_in(
        &vm,
        &[DiskState::Rekeying, DiskState::RekeyingOnline],
        &served,
        ctx,
    )?;
    let disks = open_vm_disks(&vm, &meta, ctx.ring, false, &served)?;
    let resumed = meta.rekey_generation.is_some();
    let target = meta.rekey_generation.unwrap_or(meta.generation + 1);
    let Opened {
        secret: config_key,
        kek,
    } = open.key;
    if meta.rekey_generation.is_none() {
        let staged = stage_vm(&meta, &config_key, &kek.as_ref(), target)?;
        vm.write_meta(&staged)?;
    }
    let mut bytes = 0;
    for (disk, _) in &disks {
        let at = disk.encryption().map(|e| e.generation).unwrap_or(target);
        if at < target && served.contains(&disk.path().to_path_buf()) {
            if let Some(s) = ctx.served {
                bytes += s.deep_rekey(disk.path(), vmx)?;
            }
            at_target(disk.path(), target)?;
        } else if at < target {
            let (stats, _) = crate::disk::rekey_deep(
                disk.path(),
                ctx.ring,
                ctx.opts.worker_threads(),
                &ctx.opts.tuning,
                ctx.progress,
                ctx.cancel,
                true,
            )?;
            bytes += stats.bytes;
        }
    }
    let staged = vm
        .meta()
        .cloned()
        .ok_or_else(|| Error::input("metadata vanished"))?;
    let committed = commit_vm(&mut vm, staged, &config_key, &kek.as_ref(), target)?;
    tracing::info!(vmx = %vmx.display(), generation = target, "VM rekeyed (deep)");
    Ok(VmReport {
        operation: "rekeyed (deep)",
        vm: &vm,
        meta: &committed,
        provider: &kek.provider,
        key_id: &kek.key_id,
        bytes,
        resumed,
        started,
    }
    .report())
}

/// Checks that a disk a server rekeyed online ended at generation `target`, settled, before
/// the VMX commits to it.
fn at_target(disk: &Path, target: u64) -> Result<()> {
    let d = crate::disk::Disk::open(disk)?;
    match d.encryption() {
        Some(e) if e.state == DiskState::Encrypted && e.generation == target => Ok(()),
        e => Err(Error::Integrity {
            path: disk.to_path_buf(),
            reason: format!(
                "its server ended its online rekey, but the disk is at {} and not at generation {target}: the VM is left staged; run the rekey again",
                e.map_or("no encryption".to_string(), |e| format!(
                    "generation {} ({})",
                    e.generation,
                    e.state.as_str()
                ))
            ),
        }),
    }
}

/// The VM keySafe staged with the new wrapping (idempotent).
fn stage_vm(
    meta: &VmMeta,
    config_key: &ConfigKey,
    new: &KekRef<'_>,
    target: u64,
) -> Result<VmMeta> {
    let ks = meta.key_safe();
    if meta.rekey_generation.is_some() && ks.is_staged_for(new, target) {
        return Ok(meta.clone());
    }
    Ok(VmMeta {
        key_safe: ks.staged(config_key, new, target)?,
        rekey_generation: Some(target),
        ..meta.clone()
    })
}

/// The VM's last rekey step: only the newest configuration-key pair is kept, at `target`. The
/// newest pair must hold `config_key` under `new`, bound to `target`: a forged
/// `rekeyGeneration` is refused before the write that would make the VM unopenable.
fn commit_vm(
    vm: &mut Vm,
    staged: VmMeta,
    config_key: &ConfigKey,
    new: &KekRef<'_>,
    target: u64,
) -> Result<VmMeta> {
    let ks = staged.key_safe();
    ks.check_commit(new, config_key, target, vm.path())?;
    let committed = VmMeta {
        key_safe: ks.committed()?,
        generation: target,
        rekey_generation: None,
        ..staged.clone()
    };
    vm.write_meta(&committed)?;
    Ok(committed)
}
