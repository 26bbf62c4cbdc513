//! In-place jobs on a disk: the disk's metadata recorded around an [`InPlace`] job of
//! [`crate::engine`]:
//! - the data-shift engine whenever the payload can move: encryption moves it up by one
//!   window, decryption moves it back to 0, a deep rekey moves it either way. Each byte is
//!   written once.
//! - the journaled engine otherwise (decrypting a payload that starts at 0, a flat file with
//!   bytes after the payload, or [`Tuning::journal_only`]). Each byte is written twice.
//!
//! Order of durable steps for every in-place job:
//! 1. moving up, the payload file is extended with zeros to hold the moved payload (a full
//!    file system fails here); the journal `PAYLOAD.vmcrypt-journal` is created with its
//!    header and fsynced: a crash here leaves a stale journal and an untouched disk
//!    ([`super::cleanup`] clears it);
//! 2. the metadata records the job (`state` = encrypting / decrypting / rekeying, `job` = its
//!    id, and where the payload goes) with every key it needs (for a deep rekey both DEKs stay
//!    wrapped) — atomic, durable;
//! 3. the engine rewrites the payload window by window (or chunk by chunk), recording durable
//!    progress after each;
//! 4. moving up, the bytes below the payload are zeroed; moving down, the file is cut after it;
//! 5. the metadata records the result (encrypted, or removed after a decrypt);
//! 6. the journal is removed.
//!
//! `resume` ([`super::resume`]) continues a job from steps 3-5 after a crash, a kill, an I/O
//! error or a cancel; running it again after the job finished does nothing. Every other
//! command refuses a disk with a job under way and says to resume.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::{Disk, DiskState, EncryptionMeta};
use crate::engine::inplace::Spec;
use crate::engine::{InPlace, Movement, Transform, Tuning};
use crate::progress::{JobStats, Progress};
use crate::secret::random_fill;
use crate::{Error, Result};

/// Suffix of a payload's journal file.
pub const JOURNAL_EXT: &str = "vmcrypt-journal";

/// The journal of a payload.
pub fn journal_path(payload: &Path) -> PathBuf {
    let mut s = payload.as_os_str().to_os_string();
    s.push(".");
    s.push(JOURNAL_EXT);
    PathBuf::from(s)
}

/// Whether in-place jobs may move the payload: the payload file must hold exactly the payload
/// (no bytes after it that moving would overwrite), and the tuning must not ask for the
/// journaled engine.
pub(crate) fn can_move(disk: &Disk, offset: u64, len: u64, tuning: &Tuning) -> Result<bool> {
    if tuning.journal_only {
        return Ok(false);
    }
    let actual = std::fs::metadata(disk.payload_path())
        .map_err(Error::io("open payload", disk.payload_path()))?
        .len();
    Ok(actual == offset + len)
}

/// Where an in-place encryption of this plain disk puts the payload: one window up, or 0 when
/// it cannot move (see [`can_move`]).
pub(crate) fn shift_for_encrypt(disk: &Disk, tuning: &Tuning) -> Result<u64> {
    let len = disk.payload_len();
    Ok(if can_move(disk, 0, len, tuning)? {
        tuning.window(len)
    } else {
        0
    })
}

/// Where a job recorded in `meta` moves the payload, if it moves it.
pub(crate) fn movement(meta: &EncryptionMeta) -> Option<Movement> {
    let at = meta.identity.payload_offset;
    let (src, dst) = match meta.state {
        DiskState::Encrypting if at != 0 => (0, at),
        DiskState::Decrypting if at != 0 => (at, 0),
        DiskState::Rekeying => (at, meta.rekey_payload_offset.filter(|to| *to != at)?),
        _ => return None,
    };
    Some(Movement { src, dst })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The id of the job recorded in `meta`.
pub(crate) fn job_id_of(meta: &EncryptionMeta, path: &Path) -> Result<[u8; 16]> {
    let h = meta.job.as_deref().ok_or_else(|| Error::Integrity {
        path: path.to_path_buf(),
        reason: "a job is under way but its id is missing".into(),
    })?;
    let bytes: Option<Vec<u8>> = (0..h.len())
        .step_by(2)
        .map(|i| h.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok()))
        .collect();
    bytes
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| Error::Integrity {
            path: path.to_path_buf(),
            reason: "malformed job id".into(),
        })
}

/// What a new in-place job is: its transform, the metadata while it runs (its `job` field is
/// filled in here), the metadata when it ends (`None` removes it), threads and tuning.
pub(crate) struct NewJob<'a> {
    pub transform: Transform<'a>,
    pub running: EncryptionMeta,
    pub after: Option<EncryptionMeta>,
    pub threads: usize,
    pub tuning: Tuning,
}

/// Steps 1-6 for a new job. The caller holds the disk's lock ([`super::lock_for_job`]).
pub(crate) fn run_new(
    disk: &mut Disk,
    job: NewJob<'_>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<JobStats> {
    let mut job_id = [0u8; 16];
    random_fill(&mut job_id)?;
    let running = EncryptionMeta {
        job: Some(hex(&job_id)),
        ..job.running
    };
    let jpath = journal_path(disk.payload_path());
    let spec = Spec {
        transform: job.transform,
        job_id,
        len: running.identity.payload_size,
        unit: running.identity.sector_size,
        movement: movement(&running),
        threads: job.threads,
    };
    let inplace = InPlace::begin(disk.payload_path(), &jpath, spec, &job.tuning)?;
    disk.write_meta(Some(&running))?;
    crate::failpoint::hit("inplace-job-recorded");
    let stats = inplace
        .run(0, progress, cancel)
        .map_err(|e| resumable(disk.path(), e))?;
    record_result(disk, job.after.as_ref(), inplace)?;
    Ok(stats)
}

/// Steps 5 and 6: the result into the metadata, then the journal away.
pub(crate) fn record_result(
    disk: &mut Disk,
    after: Option<&EncryptionMeta>,
    inplace: InPlace<'_>,
) -> Result<()> {
    disk.write_meta(after)?;
    crate::failpoint::hit("inplace-meta-final");
    inplace.finish()
}

thread_local! {
    /// What `resume` must be given to finish the job under way on this thread: the VMX while a
    /// VM job runs its disks' jobs (resuming one disk alone would not finish the VM job).
    static RESUME_TARGET: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// While this guard lives, hints to resume an interrupted disk job on this thread name `vmx`.
pub(crate) struct ResumeAs(Option<PathBuf>);

/// Names `vmx` in the resume hints of the disk jobs this thread runs until the guard drops.
pub(crate) fn resume_as(vmx: &Path) -> ResumeAs {
    ResumeAs(RESUME_TARGET.with(|t| t.replace(Some(vmx.to_path_buf()))))
}

impl Drop for ResumeAs {
    fn drop(&mut self) {
        let previous = self.0.take();
        RESUME_TARGET.with(|t| *t.borrow_mut() = previous);
    }
}

/// Logs how to finish a job that stopped, and marks a cancel as not undone.
pub(crate) fn resumable(disk: &Path, e: Error) -> Error {
    let target = RESUME_TARGET
        .with(|t| t.borrow().clone())
        .unwrap_or_else(|| disk.to_path_buf());
    let path = target.as_path();
    match e {
        Error::Cancelled { done, .. } => {
            tracing::warn!(
                "{} is part way through an in-place job: run `vmcrypt resume {}` to finish it",
                path.display(),
                path.display()
            );
            Error::Cancelled {
                done,
                restored: false,
            }
        }
        other => {
            tracing::error!(
                "the in-place job on {} stopped; nothing is lost: run `vmcrypt resume {}` to finish it",
                path.display(),
                path.display()
            );
            other
        }
    }
}
