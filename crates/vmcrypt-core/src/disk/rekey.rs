//! Shallow rekey: re-wrap a disk's DEK under a new KEK; no data sector is touched.
//!
//! The protocol has two durable steps per metadata file, so that a crash at any point leaves
//! every file openable with the old or the new KEK:
//! 1. **stage**: the keySafe becomes `[old pairs..., new pair]`, the new pair bound to
//!    generation g+1, and `rekeyGeneration = g+1` records that a rekey is under way; the last
//!    pair of the list is its target.
//! 2. **commit**: the keySafe becomes `[new pair]`, `keyGeneration = g+1`.
//!
//! A VM stages all its files before it commits any. Both steps are idempotent, so running the
//! rekey again after a crash completes it with the same target KEK.

use std::path::Path;
use std::time::{Duration, Instant};

use super::ops::{KekRef, unwrap_disk_key};
use super::{Disk, DiskState};
use crate::locator::KeyLocator;
use crate::provider::{KeyId, KeyProvider, KeyPurpose, ProviderLookup};
use crate::secret::Dek;
use crate::wrap::{WrapContext, our_pairs, wrap_dek};
use crate::{Error, Result};

/// What a shallow rekey did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RekeyReport {
    /// Provider of the new KEK.
    pub provider: String,
    /// Key id of the new KEK.
    pub key_id: String,
    /// The new key generation.
    pub generation: u64,
    /// Whether this run finished a rekey an earlier run had started.
    pub resumed: bool,
    /// Time spent.
    pub elapsed: Duration,
}

/// The target of a rekey that was staged and not committed: the last pair of the keySafe.
pub(crate) fn pending_target(key_safe: &KeyLocator) -> Option<(String, String)> {
    our_pairs(key_safe)
        .last()
        .map(|(p, k, _)| (p.to_string(), k.to_string()))
}

/// Stage: adds the new wrapping, bound to generation `target`, beside the old ones. A file
/// already staged or committed for this target is left alone (idempotent).
pub(crate) fn stage(disk: &mut Disk, dek: &Dek, new: &KekRef<'_>, target: u64) -> Result<()> {
    let meta = disk
        .encryption()
        .cloned()
        .ok_or_else(|| Error::input("not encrypted"))?;
    let pairs = our_pairs(&meta.key_safe);
    let ends_with_new = pairs
        .last()
        .is_some_and(|(p, k, _)| *p == new.provider && *k == new.key_id);
    let staged = meta.rekey_generation == Some(target);
    let committed = meta.rekey_generation.is_none() && meta.generation == target;
    if ends_with_new && (staged || committed) {
        return Ok(());
    }
    if meta.generation.checked_add(1) != Some(target) {
        return Err(Error::Integrity {
            path: disk.metadata_path().to_path_buf(),
            reason: format!("key generation {} cannot move to {target}", meta.generation),
        });
    }
    let ctx = WrapContext {
        provider: new.provider,
        key_id: new.key_id,
        vm_uuid: meta.vm_uuid.as_deref(),
        disk: &meta.identity,
        generation: target,
    };
    let new_pair = wrap_dek(new.kek, dek, &ctx)?;
    let staged = super::EncryptionMeta {
        key_safe: crate::wrap::rewrapped(&meta.key_safe, new_pair, new.provider, new.key_id),
        rekey_generation: Some(target),
        ..meta
    };
    disk.write_meta(Some(&staged))
}

/// Commit: keeps only the new wrapping (idempotent). The wrapping kept must hold `dek` under
/// `new` bound to the target generation: a `rekeyGeneration` that was forged (or any target
/// the keySafe is not bound to) is refused here, before the one write that would make the
/// disk unopenable.
pub(crate) fn commit(disk: &mut Disk, new: &KekRef<'_>, dek: &Dek) -> Result<()> {
    let meta = disk
        .encryption()
        .cloned()
        .ok_or_else(|| Error::input("not encrypted"))?;
    let Some(target) = meta.rekey_generation else {
        return Ok(());
    };
    let bound = our_pairs(&meta.key_safe)
        .last()
        .is_some_and(|(p, k, locked)| {
            let ctx = WrapContext {
                provider: p,
                key_id: k,
                vm_uuid: meta.vm_uuid.as_deref(),
                disk: &meta.identity,
                generation: target,
            };
            *p == new.provider
                && *k == new.key_id
                && crate::wrap::unwrap_dek(new.kek, locked, &ctx).is_ok_and(|d| {
                    bool::from(subtle::ConstantTimeEq::ct_eq(
                        &d.expose_secret()[..],
                        &dek.expose_secret()[..],
                    ))
                })
        });
    if !bound {
        return Err(Error::Integrity {
            path: disk.metadata_path().to_path_buf(),
            reason: format!(
                "rekeyGeneration {target} is not what the keySafe's newest key is bound to (altered metadata?); refusing to commit, nothing changed"
            ),
        });
    }
    let newest = crate::wrap::newest_only(&meta.key_safe)?;
    let committed = super::EncryptionMeta {
        key_safe: newest,
        generation: target,
        rekey_generation: None,
        ..meta
    };
    disk.write_meta(Some(&committed))
}

/// Shallow rekey of one disk: its DEK re-wrapped under a new KEK from `provider` (or, if an
/// earlier rekey was interrupted, under that rekey's KEK), generation + 1.
///
/// # Errors
/// [`Error::InvalidInput`] for a plain or interrupted disk; unwrap and provider errors. On any
/// error before the first write the disk is unchanged; after it, running again completes.
pub fn rekey_disk_shallow(
    path: &Path,
    provider: &dyn KeyProvider,
    lookup: &ProviderLookup<'_>,
) -> Result<RekeyReport> {
    let started = Instant::now();
    let _lock = super::lock_for_job(path)?;
    let mut disk = Disk::open(path)?;
    disk.check_meta_room()?;
    let meta = disk
        .encryption()
        .cloned()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", path.display())))?;
    if meta.state != DiskState::Encrypted {
        return Err(Error::input(format!(
            "{} has an interrupted in-place job (state {})",
            path.display(),
            meta.state.as_str()
        )));
    }
    if meta.vm_uuid.is_some() {
        return Err(Error::input(format!(
            "{} belongs to a VM: rekey the VM (`vmcrypt vm rekey VMX --shallow`) so its disks keep one KEK",
            path.display()
        )));
    }
    let (dek, _, _) = unwrap_disk_key(&disk, lookup)?;
    let resumed = meta.rekey_generation.is_some();
    let (prov_name, key_id, kek) = match (meta.rekey_generation, pending_target(&meta.key_safe)) {
        (Some(_), Some((p, k))) => {
            let kek = lookup(&p)?.fetch_kek(&KeyId::new(k.clone())?)?;
            (p, k, kek)
        }
        _ => {
            let purpose = KeyPurpose::Disk(meta.identity.uuid.clone());
            let (id, kek) = super::ops::create_verified_kek(provider, &purpose)?;
            (provider.name().to_string(), id.to_string(), kek)
        }
    };
    let new = KekRef {
        provider: &prov_name,
        key_id: &key_id,
        kek: &kek,
    };
    let target = meta.rekey_generation.unwrap_or(meta.generation + 1);
    stage(&mut disk, &dek, &new, target)?;
    commit(&mut disk, &new, &dek)?;
    let generation = disk.encryption().map(|m| m.generation).unwrap_or_default();
    tracing::info!(disk = %path.display(), provider = %prov_name, key_id = %key_id, generation, "disk rekeyed (shallow)");
    Ok(RekeyReport {
        provider: prov_name,
        key_id,
        generation,
        resumed,
        elapsed: started.elapsed(),
    })
}
