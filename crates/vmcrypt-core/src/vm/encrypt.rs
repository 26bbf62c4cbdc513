//! `vm encrypt`: one KEK for the VM, a configuration key sealing the VMX's private entries,
//! every disk in place under its own DEK. The VMX is marked `encrypting` before any disk is
//! touched, so running the job again continues it with the same KEK.

use std::path::Path;
use std::time::Instant;

use super::job::{Ctx, Held};
use super::keys::{VmReport, open_vm_key, require_meta};
use super::{Vm, VmMeta, VmState};
use crate::disk::{Disk, DiskState};
use crate::keysafe::{KeySafe, VmBinding};
use crate::provider::KeyPurpose;
use crate::report::Report;
use crate::secret::{ConfigKey, random_uuid};
use crate::{Error, Result};

/// Encrypts a VM, or continues an interrupted encryption. Nothing is written before every
/// disk passed its checks.
pub(crate) fn encrypt(vmx: &Path, ctx: &Ctx<'_>) -> Result<Report> {
    let _held = Held::begin(vmx)?;
    let started = Instant::now();
    let mut vm = Vm::open(vmx)?;
    let disk_opts = super::job::disk_options(ctx.opts);
    let resumed = match vm.meta() {
        None => false,
        Some(m) if m.state == VmState::Encrypting => true,
        Some(m) => {
            return Err(match m.state {
                VmState::Encrypted => Error::AlreadyEncrypted {
                    path: vmx.to_path_buf(),
                },
                s => Error::job_under_way(vmx, s.as_str()),
            });
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
    let (meta, kek) = if resumed {
        let meta = require_meta(&vm)?.clone();
        let kek = open_vm_key(&vm, &meta, ctx.ring)?.kek;
        (meta, kek)
    } else {
        let name = ctx
            .opts
            .provider
            .as_deref()
            .ok_or_else(|| Error::input("no key provider named for the VM's new KEK"))?;
        let provider = ctx.ring.provider(name)?;
        let vm_uuid = random_uuid()?;
        let kek = ctx
            .ring
            .create_verified(provider.as_ref(), &KeyPurpose::Vm(vm_uuid.clone()))?;
        let config_key = ConfigKey::generate()?;
        let binding = VmBinding { vm_uuid: &vm_uuid };
        let key_safe = KeySafe::seal(&binding, &kek.as_ref(), &config_key, 1)?;
        vm.seal_config(&config_key, &vm_uuid)?;
        let meta = VmMeta {
            vm_uuid,
            generation: 1,
            rekey_generation: None,
            key_safe,
            state: VmState::Encrypting,
        };
        vm.write_meta(&meta)?;
        (meta, kek)
    };
    let mut bytes = 0;
    for d in vm.disks().to_vec() {
        match Disk::open(&d.path)?.encryption().map(|e| e.state) {
            None => {
                let vm_at = Some((meta.vm_uuid.as_str(), 1));
                bytes += crate::disk::encrypt_under(
                    &d.path,
                    &kek.as_ref(),
                    vm_at,
                    &disk_opts,
                    ctx.progress,
                    ctx.cancel,
                )?
                .bytes;
            }
            Some(DiskState::Encrypting) => {
                bytes += crate::disk::resume_with(
                    &d.path,
                    ctx.ring,
                    ctx.opts.worker_threads(),
                    ctx.progress,
                    ctx.cancel,
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
    Ok(VmReport {
        operation: "encrypted",
        vm: &vm,
        meta: &done,
        provider: &kek.provider,
        key_id: &kek.key_id,
        bytes,
        resumed,
        started,
    }
    .report())
}
