//! `vm decrypt`: every disk in place, then the VMX back to its original bytes. Nothing changes
//! before every key has been unwrapped; the VMX is marked `decrypting` first, so running the
//! job again finishes it.

use std::path::Path;
use std::time::Instant;

use super::job::{Ctx, Held};
use super::keys::{VmReport, open_vm_disks, open_vm_key, require_meta};
use super::resume::resume_disks_in;
use super::{Vm, VmMeta, VmState};
use crate::Result;
use crate::disk::DiskState;
use crate::report::Report;

/// Decrypts a VM, or finishes an interrupted decryption.
pub(crate) fn decrypt(vmx: &Path, ctx: &Ctx<'_>) -> Result<Report> {
    let _held = Held::begin(vmx)?;
    let started = Instant::now();
    let mut vm = Vm::open(vmx)?;
    let meta = require_meta(&vm)?.clone();
    let key = open_vm_key(&vm, &meta, ctx.ring)?;
    let sealed = vm.open_config(&key.secret, &meta.vm_uuid)?;
    if meta.state == VmState::Decrypting {
        // A disk whose decryption was cut short is finished first.
        resume_disks_in(&vm, &[DiskState::Decrypting], &[], ctx)?;
    }
    let disks = open_vm_disks(&vm, &meta, ctx.ring, meta.state != VmState::Encrypted, &[])?;
    vm.write_meta(&VmMeta {
        state: VmState::Decrypting,
        ..meta.clone()
    })?;
    let mut bytes = 0;
    let opts = super::job::disk_options(ctx.opts);
    for (disk, _) in &disks {
        if disk.encryption().is_some() {
            bytes +=
                crate::disk::decrypt(disk.path(), ctx.ring, &opts, ctx.progress, ctx.cancel, true)?
                    .bytes;
        }
    }
    vm.restore_config(&sealed)?;
    tracing::info!(vmx = %vmx.display(), "VM decrypted");
    Ok(VmReport {
        operation: "decrypted",
        vm: &vm,
        meta: &meta,
        provider: &key.kek.provider,
        key_id: &key.kek.key_id,
        bytes,
        resumed: meta.state != VmState::Encrypted,
        started,
    }
    .report())
}
