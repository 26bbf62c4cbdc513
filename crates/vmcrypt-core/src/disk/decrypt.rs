//! Decrypt an encrypted disk, in place or into a new disk, with the KEK its keySafe names.
//! Nothing changes before the DEK has been unwrapped; in place, the metadata records the job
//! (state `decrypting`) before any sector changes, and is removed when it ends.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use vmcrypt_xts::Direction;

use super::job::{DiskReport, JobOptions};
use super::output::OutputPaths;
use super::transform::WholeDisk;
use super::{DiskState, EncryptionMeta};
use crate::keysafe::KeyRing;
use crate::progress::Progress;
use crate::{Error, Result};

/// Decrypts a disk; `vm_disk` allows a disk of a VM (the VM job decrypts all its disks).
pub(crate) fn decrypt(
    path: &Path,
    ring: &KeyRing<'_>,
    opts: &JobOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    vm_disk: bool,
) -> Result<DiskReport> {
    let (_lock, disk) = super::open_for_job(path)?;
    let disk = match opts.output {
        None => super::cleanup::clear_unrecorded_job(disk)?,
        Some(_) => disk,
    };
    let meta = disk
        .encryption()
        .cloned()
        .ok_or_else(|| Error::not_encrypted(path))?;
    if meta.vm_uuid.is_some() && !vm_disk && opts.output.is_none() {
        // A lone decrypt in place would leave the VM's keySafe and sealed entries beside a
        // plain disk: decrypt the VM. (A decrypted copy elsewhere leaves the VM as it is.)
        return Err(Error::BelongsToVm {
            path: path.to_path_buf(),
            advice: "decrypt the VM (`vmcrypt vm decrypt VMX`), or decrypt a copy with --output"
                .into(),
        });
    }
    let out = opts
        .output
        .as_deref()
        .map(|o| OutputPaths::plan(&disk, o))
        .transpose()?;
    disk.require_settled()?;
    let key = disk.open_key(ring)?;
    let unit = meta.identity.sector_size;
    let job = WholeDisk {
        dek: &key.secret,
        dir: Direction::Decrypt,
        src_offset: meta.identity.payload_offset,
        len: meta.identity.payload_size,
        unit,
        threads: opts.worker_threads(),
        tuning: opts.tuning,
    };
    let running = EncryptionMeta {
        state: DiskState::Decrypting,
        ..meta.clone()
    };
    let (stats, result_disk) = job.run(disk, out, &running, None, progress, cancel)?;
    tracing::info!(disk = %result_disk.path().display(), "disk decrypted");
    Ok(DiskReport {
        disk: result_disk.path().to_path_buf(),
        payload: result_disk.payload_path().to_path_buf(),
        metadata: None,
        bytes: stats.bytes,
        elapsed: stats.elapsed,
        provider: key.kek.provider,
        key_id: key.kek.key_id,
        sector_size: unit,
    })
}
