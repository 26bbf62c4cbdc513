//! Opening a VM's keys: its configuration key (the VM keySafe) and every disk's DEK, with the
//! checks that the VMX and its disks belong together at a consistent key generation.

use std::path::Path;
use std::time::Instant;

use super::{Vm, VmMeta, VmState};
use crate::disk::{Disk, DiskState};
use crate::keysafe::{KeyRing, KeySafe, Opened, VmBinding};
use crate::report::Report;
use crate::secret::{ConfigKey, Dek};
use crate::{Error, Result};

impl VmMeta {
    /// The VM keySafe with what it is bound to.
    pub(crate) fn key_safe(&self) -> KeySafe<'_, VmBinding<'_>> {
        KeySafe {
            locator: &self.key_safe,
            binding: VmBinding {
                vm_uuid: &self.vm_uuid,
            },
            generation: self.generation,
            rekey_generation: self.rekey_generation,
        }
    }
}

/// An encrypted VM with no VM job under way, its configuration key unwrapped and
/// `encryption.data` checked.
pub(crate) struct OpenVm {
    pub vm: Vm,
    pub meta: VmMeta,
    pub key: Opened<ConfigKey>,
}

/// Opens an encrypted VM with no VM job under way; see [`OpenVm`].
pub(crate) fn open_encrypted_vm(vmx: &Path, ring: &KeyRing<'_>) -> Result<OpenVm> {
    let vm = Vm::open(vmx)?;
    let meta = require_meta(&vm)?.clone();
    if meta.state != VmState::Encrypted {
        return Err(Error::job_under_way(vmx, meta.state.as_str()));
    }
    let key = open_vm_key(&vm, &meta, ring)?;
    vm.open_config(&key.secret, &meta.vm_uuid)?;
    Ok(OpenVm { vm, meta, key })
}

/// The metadata of a VM that must be encrypted.
pub(crate) fn require_meta(vm: &Vm) -> Result<&VmMeta> {
    vm.meta().ok_or_else(|| Error::not_encrypted(vm.path()))
}

/// Unwraps the VM configuration key, with the KEK that opened it.
pub(crate) fn open_vm_key(vm: &Vm, meta: &VmMeta, ring: &KeyRing<'_>) -> Result<Opened<ConfigKey>> {
    meta.key_safe().open(ring).map_err(|e| match e {
        Error::Unsupported { .. } => Error::Unsupported {
            what: format!(
                "the keySafe of {} has no key vmcrypt can open",
                vm.path().display()
            ),
        },
        other => other,
    })
}

/// Opens every disk of the VM and unwraps its DEK, checking it belongs to this VM and agrees on
/// the key generation. Plain disks are allowed only while a VM job was interrupted. A disk in
/// `served` may be in the middle of its online deep rekey (its server goes on with it): both
/// its keys are unwrapped, and the old one is given.
pub(crate) fn open_vm_disks(
    vm: &Vm,
    meta: &VmMeta,
    ring: &KeyRing<'_>,
    interrupted: bool,
    served: &[std::path::PathBuf],
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
        let online = e.state == DiskState::RekeyingOnline && served.contains(&d.path);
        if e.state != DiskState::Encrypted && !online {
            return Err(Error::JobUnderWay {
                path: d.path.clone(),
                state: e.state.as_str(),
                resume: vm.path().to_path_buf(),
            });
        }
        gens.push((e.generation, e.rekey_generation));
        let dek = if online {
            disk.check_payload()?;
            crate::disk::rekey_keys(&e, ring)?.0
        } else {
            disk.open_key(ring)?.secret
        };
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
pub(crate) fn generations_agree(gens: &[(u64, Option<u64>)]) -> bool {
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

/// The report of a VM job.
pub(crate) struct VmReport<'a> {
    pub operation: &'static str,
    pub vm: &'a Vm,
    pub meta: &'a VmMeta,
    pub provider: &'a str,
    pub key_id: &'a str,
    pub bytes: u64,
    pub resumed: bool,
    pub started: Instant,
}

impl VmReport<'_> {
    pub fn report(self) -> Report {
        Report {
            operation: self.operation,
            vmx: Some(self.vm.path().to_path_buf()),
            vm_uuid: Some(self.meta.vm_uuid.clone()),
            provider: Some(self.provider.to_string()),
            key_id: Some(self.key_id.to_string()),
            generation: Some(self.meta.generation),
            disks: Some(self.vm.disks().iter().map(|d| d.path.clone()).collect()),
            bytes: self.bytes,
            resumed: Some(self.resumed),
            elapsed: self.started.elapsed(),
            ..Report::default()
        }
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
