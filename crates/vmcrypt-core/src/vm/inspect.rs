//! `vm inspect`: what a VM and its disks say about themselves, with no key needed, and what
//! is inconsistent between them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::keys::generations_agree;
use super::{Vm, VmMeta, VmState};
use crate::Result;
use crate::disk::{Disk, DiskState};

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
/// [`crate::Error::Io`], [`crate::Error::InvalidSettings`] for the VMX itself.
pub fn vm_inspect(vmx: &Path) -> Result<VmInfo> {
    let vm = Vm::open(vmx)?;
    let meta = vm.meta().cloned();
    let keys = meta
        .as_ref()
        .map(|m| crate::keysafe::names(&m.key_safe))
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

/// A (provider, key id) pair as the JSON documents name it.
#[derive(Serialize)]
struct KeyName<'a> {
    provider: &'a str,
    key_id: &'a str,
}

fn key_names(keys: &[(String, String)]) -> Vec<KeyName<'_>> {
    keys.iter()
        .map(|(p, k)| KeyName {
            provider: p,
            key_id: k,
        })
        .collect()
}

#[derive(Serialize)]
struct DiskView<'a> {
    key: &'a str,
    path: &'a Path,
    encrypted: bool,
    state: Option<&'static str>,
    key_generation: Option<u64>,
    rekey_generation: Option<u64>,
    belongs_to_vm: bool,
    error: &'a Option<String>,
    keys: Vec<KeyName<'a>>,
}

#[derive(Serialize)]
struct InfoView<'a> {
    vmx: &'a Path,
    encrypted: bool,
    state: Option<&'static str>,
    vm_uuid: Option<&'a str>,
    key_generation: Option<u64>,
    rekey_generation: Option<u64>,
    keys: Vec<KeyName<'a>>,
    disks: Vec<DiskView<'a>>,
    consistent: bool,
    problems: &'a [String],
}

/// The `vm inspect --json` document (docs/cli.md): the VM's clear metadata, its disks, and
/// what is inconsistent.
impl Serialize for VmInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let m = self.meta.as_ref();
        InfoView {
            vmx: &self.vmx,
            encrypted: m.is_some(),
            state: m.map(|m| m.state.as_str()),
            vm_uuid: m.map(|m| m.vm_uuid.as_str()),
            key_generation: m.map(|m| m.generation),
            rekey_generation: m.and_then(|m| m.rekey_generation),
            keys: key_names(&self.keys),
            disks: self
                .disks
                .iter()
                .map(|d| DiskView {
                    key: &d.key,
                    path: &d.path,
                    encrypted: d.state.is_some(),
                    state: d.state.map(|s| s.as_str()),
                    key_generation: d.generation,
                    rekey_generation: d.rekey_generation,
                    belongs_to_vm: d.belongs,
                    error: &d.error,
                    keys: key_names(&d.keys),
                })
                .collect(),
            consistent: self.consistent,
            problems: &self.problems,
        }
        .serialize(s)
    }
}
