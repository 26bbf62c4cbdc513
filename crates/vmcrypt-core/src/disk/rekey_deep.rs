//! Deep rekey: a new DEK, wrapped under the disk's current KEK, and every sector re-encrypted
//! in place, crash-safely (an in-place job, [`super::inplace`]). While it runs the keySafe
//! holds both DEKs: the old one at the current generation, the new one (its last pair) at the
//! next, bound to where the payload is going.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::inplace::{NewJob, can_move, run_new};
use super::{DiskState, EncryptionMeta};
use crate::engine::{Transform, Tuning};
use crate::keysafe::{Binding, KeyRing, KeySafe};
use crate::progress::{JobStats, Progress};
use crate::secret::Dek;
use crate::wrap::DiskIdentity;
use crate::{Error, Result};

/// Deep rekey; `vm_disk` allows a disk of a VM (the VM job keeps the generations in step).
pub(crate) fn rekey_deep(
    path: &Path,
    ring: &KeyRing<'_>,
    threads: usize,
    tuning: &Tuning,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    vm_disk: bool,
) -> Result<(JobStats, u64)> {
    let (_lock, disk) = super::open_for_job(path)?;
    let mut disk = super::cleanup::clear_unrecorded_job(disk)?;
    disk.check_meta_room()?;
    let meta = disk
        .encryption()
        .cloned()
        .ok_or_else(|| Error::input(format!("{} is not encrypted", path.display())))?;
    if meta.state != DiskState::Encrypted || meta.rekey_generation.is_some() {
        return Err(Error::input(format!(
            "{} has a job or a rekey under way: run `vmcrypt resume` or finish the rekey first",
            path.display()
        )));
    }
    if meta.vm_uuid.is_some() && !vm_disk {
        return Err(Error::BelongsToVm {
            path: path.to_path_buf(),
            advice: "rekey the VM (`vmcrypt vm rekey VMX --deep`)".into(),
        });
    }
    let old = disk.open_key(ring)?;
    let new = Dek::generate_xts()?;
    let target = meta.generation + 1;
    // The payload moves (up by a window from 0, back to 0 otherwise) so each byte is written
    // once; where it cannot, it stays and the journaled engine runs.
    let at = meta.identity.payload_offset;
    let len = meta.identity.payload_size;
    let to = if can_move(&disk, at, len, tuning)? {
        if at == 0 { tuning.window(len) } else { 0 }
    } else {
        at
    };
    let moved = DiskIdentity {
        payload_offset: to,
        ..meta.identity.clone()
    };
    let ks = meta.key_safe();
    let new_pair = crate::keysafe::DiskBinding {
        disk: &moved,
        ..ks.binding
    }
    .wrap(&old.kek.as_ref(), &new, target)?;
    let running = EncryptionMeta {
        key_safe: ks.with_newest(new_pair),
        rekey_generation: Some(target),
        state: DiskState::Rekeying,
        rekey_payload_offset: (to != at).then_some(to),
        ..meta.clone()
    };
    let after = rekey_result(&running)?;
    let job = NewJob {
        transform: Transform::Rekey {
            old: &old.secret,
            new: &new,
        },
        running,
        after: Some(after),
        threads,
        tuning: *tuning,
    };
    let stats = run_new(&mut disk, job, progress, cancel)?;
    Ok((stats, target))
}

/// The metadata after a deep rekey: only the new pair, at the new generation, at the payload's
/// new place.
pub(crate) fn rekey_result(meta: &EncryptionMeta) -> Result<EncryptionMeta> {
    let target = meta
        .rekey_generation
        .ok_or_else(|| Error::input("deep rekey without a target generation"))?;
    Ok(EncryptionMeta {
        key_safe: meta.key_safe().committed()?,
        generation: target,
        rekey_generation: None,
        state: DiskState::Encrypted,
        job: None,
        identity: moved_identity(meta),
        rekey_payload_offset: None,
        ..meta.clone()
    })
}

fn moved_identity(meta: &EncryptionMeta) -> DiskIdentity {
    DiskIdentity {
        payload_offset: meta
            .rekey_payload_offset
            .unwrap_or(meta.identity.payload_offset),
        ..meta.identity.clone()
    }
}

/// The old DEK (first pair, current generation) and the new one (last pair, target
/// generation, bound to the payload's new place) of a deep rekey under way.
pub(crate) fn rekey_keys(meta: &EncryptionMeta, ring: &KeyRing<'_>) -> Result<(Dek, Dek)> {
    let target = meta
        .rekey_generation
        .ok_or_else(|| Error::input("deep rekey without a target generation"))?;
    let ks = meta.key_safe();
    let pairs = ks.pairs();
    let (Some(first), Some(last)) = (pairs.first(), pairs.last()) else {
        return Err(Error::UnwrapFailed);
    };
    if pairs.len() < 2 {
        return Err(Error::UnwrapFailed);
    }
    let moved = moved_identity(meta);
    let new_ks = KeySafe {
        binding: crate::keysafe::DiskBinding {
            disk: &moved,
            ..ks.binding
        },
        ..meta.key_safe()
    };
    Ok((
        ks.open_pair(first, meta.generation, ring)?,
        new_ks.open_pair(last, target, ring)?,
    ))
}
