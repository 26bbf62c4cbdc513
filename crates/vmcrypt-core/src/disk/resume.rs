//! `resume`: finish an interrupted in-place job (encrypt, decrypt or deep rekey).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::inplace::{job_id_of, journal_path, movement, record_result, resumable};
use super::rekey_deep::{rekey_keys, rekey_result};
use super::{DiskState, EncryptionMeta};
use crate::engine::inplace::Spec;
use crate::engine::{InPlace, Transform};
use crate::keysafe::KeyRing;
use crate::progress::Progress;
use crate::secret::Dek;
use crate::{Error, Result};

/// What `resume` did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResumeReport {
    /// The state the disk was in.
    pub was: Option<DiskState>,
    /// Bytes processed by this run (0 when there was nothing to do).
    pub bytes: u64,
    /// Where the job continued.
    pub from: u64,
}

/// Finishes an interrupted in-place job (encrypt, decrypt or deep rekey), with the KEKs of
/// the job it is part of. Harmless on a disk with no job under way.
///
/// # Errors
/// [`Error::Integrity`] for a journal that is missing, altered or does not match the image
/// (nothing is written then); unwrap, provider and I/O errors.
pub(crate) fn resume_with(
    path: &Path,
    ring: &KeyRing<'_>,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ResumeReport> {
    let (_lock, disk) = super::open_for_job(path)?;
    let mut disk = super::cleanup::clear_unrecorded_job(disk)?;
    let nothing = |was| ResumeReport {
        was,
        bytes: 0,
        from: 0,
    };
    let Some(meta) = disk.encryption().cloned() else {
        return Ok(nothing(None));
    };
    if meta.state == DiskState::Encrypted {
        return Ok(nothing(Some(meta.state)));
    }
    if meta.state.is_online() {
        drop((_lock, disk));
        return finish_online(path, ring, meta.state, progress, cancel);
    }
    let job_id = job_id_of(&meta, path)?;
    disk.check_payload()?;
    let (old, new): (Option<Dek>, Option<Dek>) = match meta.state {
        DiskState::Encrypting => (None, Some(disk.open_key(ring)?.secret)),
        DiskState::Decrypting => (Some(disk.open_key(ring)?.secret), None),
        _ => {
            let (o, n) = rekey_keys(&meta, ring)?;
            (Some(o), Some(n))
        }
    };
    let transform = match (&old, &new) {
        (None, Some(n)) => Transform::Encrypt(n),
        (Some(o), None) => Transform::Decrypt(o),
        (Some(o), Some(n)) => Transform::Rekey { old: o, new: n },
        (None, None) => return Err(Error::input("no key for the job")),
    };
    let spec = Spec {
        transform,
        job_id,
        len: meta.identity.payload_size,
        unit: meta.identity.sector_size,
        movement: movement(&meta),
        threads,
    };
    let jpath = journal_path(disk.payload_path());
    let (inplace, from) = InPlace::recover(disk.payload_path(), &jpath, spec)?;
    tracing::info!(disk = %path.display(), from, "resuming in-place job");
    let stats = inplace
        .run(from, progress, cancel)
        .map_err(|e| resumable(path, e))?;
    let after = match meta.state {
        DiskState::Encrypting => Some(EncryptionMeta {
            state: DiskState::Encrypted,
            job: None,
            ..meta.clone()
        }),
        DiskState::Decrypting => None,
        _ => Some(rekey_result(&meta)?),
    };
    let from = inplace.bytes_done(from);
    record_result(&mut disk, after.as_ref(), inplace)?;
    Ok(ResumeReport {
        was: Some(meta.state),
        bytes: stats.bytes.saturating_sub(from),
        from,
    })
}

/// Finishes offline an online job (in state `was`) whose server stopped: the disk is opened
/// as a server would (which takes the job up from its journal) and its windows are done here.
fn finish_online(
    path: &Path,
    ring: &KeyRing<'_>,
    was: DiskState,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ResumeReport> {
    let disk = crate::EncryptedDisk::open_with(path, ring)?;
    let from = disk.job().map_or(0, |j| j.done);
    tracing::info!(disk = %path.display(), from, state = was.as_str(), "finishing an online job offline");
    progress.start(disk.len());
    progress.advance(from);
    let mut done = from;
    let result = loop {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            break Err(Error::Cancelled {
                done,
                restored: false,
            });
        }
        match disk.job_step() {
            Ok(more) => {
                let now = disk.job().map_or(disk.len(), |j| j.done);
                progress.advance(now - done);
                done = now;
                if !more {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    progress.finish();
    result.map_err(|e| super::inplace::resumable(path, e))?;
    Ok(ResumeReport {
        was: Some(was),
        bytes: done - from,
        from,
    })
}
