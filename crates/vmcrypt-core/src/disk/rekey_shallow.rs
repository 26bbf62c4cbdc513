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

use super::Disk;
use crate::keysafe::{KekRef, KeyRing};
use crate::provider::{KeyProvider, KeyPurpose};
use crate::secret::Dek;
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

/// Stage: adds the new wrapping, bound to generation `target`, beside the old ones. A file
/// already staged or committed for this target is left alone (idempotent).
pub(crate) fn stage(disk: &mut Disk, dek: &Dek, new: &KekRef<'_>, target: u64) -> Result<()> {
    let meta = disk.require_encrypted()?.clone();
    let ks = meta.key_safe();
    if ks.is_staged_for(new, target) {
        return Ok(());
    }
    if meta.generation.checked_add(1) != Some(target) {
        return Err(Error::Integrity {
            path: disk.metadata_path().to_path_buf(),
            reason: format!("key generation {} cannot move to {target}", meta.generation),
        });
    }
    let staged = super::EncryptionMeta {
        key_safe: ks.staged(dek, new, target)?,
        rekey_generation: Some(target),
        ..meta.clone()
    };
    disk.write_meta(Some(&staged))
}

/// Commit: keeps only the new wrapping (idempotent). The wrapping kept must hold `dek` under
/// `new` bound to the target generation: a `rekeyGeneration` that was forged (or any target
/// the keySafe is not bound to) is refused here, before the one write that would make the
/// disk unopenable.
pub(crate) fn commit(disk: &mut Disk, new: &KekRef<'_>, dek: &Dek) -> Result<()> {
    let meta = disk.require_encrypted()?.clone();
    let Some(target) = meta.rekey_generation else {
        return Ok(());
    };
    let ks = meta.key_safe();
    ks.check_commit(new, dek, target, disk.metadata_path())?;
    let committed = super::EncryptionMeta {
        key_safe: ks.committed()?,
        generation: target,
        rekey_generation: None,
        ..meta.clone()
    };
    disk.write_meta(Some(&committed))
}

/// Shallow rekey of one disk that is not part of a VM: its DEK re-wrapped under a new KEK from
/// `provider` (or, if an earlier rekey was interrupted, under that rekey's KEK), generation + 1.
/// On any error before the first write the disk is unchanged; after it, running again
/// completes.
pub(crate) fn rekey_shallow(
    path: &Path,
    provider: &dyn KeyProvider,
    ring: &KeyRing<'_>,
) -> Result<RekeyReport> {
    let (_lock, mut disk) = super::open_for_job(path)?;
    rewrap(&mut disk, provider, ring)
}

/// The shallow rekey of `disk`, whose lock the caller holds: offline ([`rekey_shallow`]) or
/// by the process that serves it (the DEK does not change, so its I/O goes on undisturbed).
pub(crate) fn rewrap(
    disk: &mut Disk,
    provider: &dyn KeyProvider,
    ring: &KeyRing<'_>,
) -> Result<RekeyReport> {
    let started = Instant::now();
    let path = disk.path().to_path_buf();
    disk.check_meta_room()?;
    let meta = disk.require_encrypted()?.clone();
    disk.require_settled()?;
    if meta.vm_uuid.is_some() {
        return Err(Error::BelongsToVm {
            path,
            advice: "rekey the VM (`vmcrypt vm rekey VMX --shallow`) so its disks keep one KEK"
                .into(),
        });
    }
    let dek = disk.open_key(ring)?.secret;
    let resumed = meta.rekey_generation.is_some();
    let purpose = KeyPurpose::Disk(meta.identity.uuid.clone());
    let new = match (meta.rekey_generation, meta.key_safe().pending_target()) {
        (Some(_), Some((p, k))) => ring.kek(&p, &k, &purpose)?,
        _ => ring.create_verified(provider, &purpose)?,
    };
    let target = meta.rekey_generation.unwrap_or(meta.generation + 1);
    stage(disk, &dek, &new.as_ref(), target)?;
    commit(disk, &new.as_ref(), &dek)?;
    let generation = disk.encryption().map(|m| m.generation).unwrap_or_default();
    tracing::info!(disk = %path.display(), provider = %new.provider, key_id = %new.key_id, generation, "disk rekeyed (shallow)");
    Ok(RekeyReport {
        provider: new.provider.clone(),
        key_id: new.key_id.clone(),
        generation,
        resumed,
        elapsed: started.elapsed(),
    })
}
