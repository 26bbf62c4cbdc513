//! In-place jobs on a disk, made crash-safe by one of the two engines of [`crate::reencrypt`]:
//! - the data-shift engine ([`ShiftJob`]), whenever the payload can move: encryption moves it
//!   up by one window, decryption moves it back to 0, a deep rekey moves it either way. Each
//!   byte is written once.
//! - the journaled engine ([`Job`]) otherwise (decrypting a payload that starts at 0, a flat
//!   file with bytes after the payload, or `VMCRYPT_INPLACE_ENGINE=journal`). Each byte is
//!   written twice.
//!
//! Order of durable steps for every in-place job:
//! 1. moving up, the payload file is extended with zeros to hold the moved payload (a full
//!    file system fails here); the journal `PAYLOAD.vmcrypt-journal` is created with its
//!    header and fsynced: a crash here leaves a stale journal and an untouched disk;
//! 2. the metadata records the job (`state` = encrypting / decrypting / rekeying, `job` = its
//!    id, and where the payload goes) with every key it needs (for a deep rekey both DEKs stay
//!    wrapped) — atomic, durable;
//! 3. the engine rewrites the payload window by window (or chunk by chunk), recording durable
//!    progress after each;
//! 4. moving up, the bytes below the payload are zeroed; moving down, the file is cut after it;
//! 5. the metadata records the result (encrypted, or removed after a decrypt);
//! 6. the journal is removed.
//!
//! `resume` continues a job from steps 3-5 after a crash, a kill, an I/O error or a cancel;
//! running it again after the job finished does nothing. Every other command refuses a disk
//! with a job under way and says to resume.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::{Disk, DiskState, EncryptionMeta, JobStats, Progress};
use crate::provider::{KeyId, ProviderLookup};
use crate::reencrypt::{FileStorage, Job, ShiftJob, Storage, Transform};
use crate::secret::{Dek, random_fill};
use crate::wrap::{WrapContext, our_pairs, unwrap_dek, wrap_dek};
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

/// Bytes per journaled chunk: 8 MiB, or `VMCRYPT_CHUNK_BYTES` (a multiple of 4096; a tuning
/// and testing knob: smaller chunks mean more, smaller journal writes).
pub fn chunk_size() -> u64 {
    std::env::var("VMCRYPT_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v >= 4096 && v.is_multiple_of(4096))
        .unwrap_or(super::DEFAULT_CHUNK as u64)
}

/// Default window of the data-shift engine, and so how far an in-place encryption moves the
/// payload: 64 MiB (or less for a smaller payload). Large windows mean few durability
/// barriers; the price is this much more file while the disk is encrypted (zeros).
pub const DEFAULT_SHIFT: u64 = 64 << 20;

/// The window (and shift) for a payload of `len` bytes: [`DEFAULT_SHIFT`], or
/// `VMCRYPT_CHUNK_BYTES` when set (the same tuning and testing knob as the journaled engine's
/// chunk), at most the payload rounded up to 1 MiB.
pub fn shift_size(len: u64) -> u64 {
    let want = std::env::var("VMCRYPT_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v >= 4096 && v.is_multiple_of(4096))
        .unwrap_or(DEFAULT_SHIFT);
    want.min(len.next_multiple_of(1 << 20)).max(4096)
}

/// Whether in-place jobs may move the payload: the payload file must hold exactly the payload
/// (no bytes after it that moving would overwrite), and `VMCRYPT_INPLACE_ENGINE=journal` (a
/// testing and comparison knob) must not ask for the journaled engine.
fn can_move(disk: &Disk, offset: u64, len: u64) -> Result<bool> {
    if std::env::var("VMCRYPT_INPLACE_ENGINE").is_ok_and(|v| v == "journal") {
        return Ok(false);
    }
    let actual = std::fs::metadata(disk.payload_path())
        .map_err(Error::io("open payload", disk.payload_path()))?
        .len();
    Ok(actual == offset + len)
}

/// Where an in-place encryption of this plain disk puts the payload: one window up, or 0 when
/// it cannot move (see [`can_move`]).
pub(crate) fn shift_for_encrypt(disk: &Disk) -> Result<u64> {
    let len = disk.payload_len();
    Ok(if can_move(disk, 0, len)? {
        shift_size(len)
    } else {
        0
    })
}

/// Where a job recorded in `meta` moves the payload from and to, if it moves it.
fn movement(meta: &EncryptionMeta) -> Option<(u64, u64)> {
    let at = meta.identity.payload_offset;
    match meta.state {
        DiskState::Encrypting if at != 0 => Some((0, at)),
        DiskState::Decrypting if at != 0 => Some((at, 0)),
        DiskState::Rekeying => meta
            .rekey_payload_offset
            .filter(|to| *to != at)
            .map(|to| (at, to)),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn job_id_of(meta: &EncryptionMeta, path: &Path) -> Result<[u8; 16]> {
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

/// Steps 1-5 for a new job. The caller holds the disk's lock ([`super::lock_for_job`]), so
/// a journal found here was left by a job that is no longer running. `running` is the metadata with the job's state (its `job` field is
/// filled in here); `after` what to record when it ends (None removes the metadata).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_new(
    disk: &mut Disk,
    transform: Transform<'_>,
    running: EncryptionMeta,
    after: Option<&EncryptionMeta>,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<JobStats> {
    let mut job_id = [0u8; 16];
    random_fill(&mut job_id)?;
    let len = running.identity.payload_size;
    let unit = running.identity.sector_size;
    let jpath = journal_path(disk.payload_path());
    if jpath.exists() {
        // Left by a crash before a job was recorded (step 1 without step 2): nothing used it.
        crate::fsutil::remove_durable(&jpath)?;
    }
    let payload = FileStorage::open(disk.payload_path())?;
    let engine = match movement(&running) {
        Some((src, dst)) => Engine::Shift(ShiftJob::new(
            transform, job_id, len, unit, src, dst, threads,
        )?),
        None => Engine::Journal(Job::new(
            transform,
            job_id,
            len,
            unit,
            chunk_size(),
            threads,
        )?),
    };
    let size_before = payload.size()?;
    let result = (|| {
        // The journal first, then the room: a crash between them leaves a journal that says
        // how much room was made, so that it can be given back (clear_unrecorded_job).
        let journal = FileStorage::create(&jpath)?;
        match &engine {
            Engine::Shift(job) => job.begin(&payload, &journal)?,
            Engine::Journal(job) => job.begin(&payload, &journal)?,
        }
        crate::fsutil::sync_dir(&crate::fsutil::parent_dir(&jpath))?;
        if let Engine::Shift(job) = &engine {
            job.reserve(&payload)?;
            crate::failpoint::hit("inplace-room-made");
        }
        Ok(journal)
    })();
    let journal = match result {
        Ok(j) => j,
        Err(e) => {
            // Nothing recorded the job: give back the room it took, then drop its journal
            // (in that order: the journal is what lets a later run give the room back).
            if payload.size().is_ok_and(|s| s > size_before)
                && payload
                    .set_len(size_before)
                    .and_then(|()| payload.sync())
                    .is_err()
            {
                return Err(e);
            }
            let _ = std::fs::remove_file(&jpath);
            return Err(e);
        }
    };
    let running = EncryptionMeta {
        job: Some(hex(&job_id)),
        ..running
    };
    disk.write_meta(Some(&running))?;
    crate::failpoint::hit("inplace-job-recorded");
    let stats = engine
        .run(&payload, &journal, None, progress, cancel)
        .map_err(|e| resumable(disk.path(), e))?;
    finish(disk, after, &jpath)?;
    Ok(stats)
}

/// The engine of one job.
enum Engine<'a> {
    Shift(ShiftJob<'a>),
    Journal(Job<'a>),
}

impl Engine<'_> {
    /// Runs the job from `resume_from` (None: from the start) to its end, including the
    /// engine's own last step. Returns the stats of this run.
    fn run(
        &self,
        payload: &FileStorage,
        journal: &FileStorage,
        resume_from: Option<u64>,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<JobStats> {
        let from = resume_from.unwrap_or(0);
        match self {
            Engine::Shift(job) => {
                let stats = job.run(payload, journal, from, progress, cancel)?;
                job.finish(payload)?;
                crate::failpoint::hit("inplace-moved");
                Ok(stats)
            }
            Engine::Journal(job) => job.run(payload, journal, from, progress, cancel),
        }
    }
}

fn finish(disk: &mut Disk, after: Option<&EncryptionMeta>, jpath: &Path) -> Result<()> {
    disk.write_meta(after)?;
    crate::failpoint::hit("inplace-meta-final");
    if jpath.exists() {
        crate::fsutil::remove_durable(jpath)?;
    }
    Ok(())
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

fn resumable(disk: &Path, e: Error) -> Error {
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

/// Cleans up after an in-place job that was never recorded (the caller holds the disk's lock,
/// so no live job owns what is removed here): a crash after its journal was
/// created (and, moving up, after the payload file was extended with zeros) but before the
/// metadata recorded it. The journal is removed, and the zeros are cut off again, but only
/// if the file is no longer than that job would have made it and everything past the payload
/// is zeros: no byte that could be data is ever cut. Does nothing when a job is
/// recorded (`resume` finishes that) or no journal exists.
pub(crate) fn clear_unrecorded_job(path: &Path) -> Result<()> {
    let disk = Disk::open(path)?;
    if disk
        .encryption()
        .is_some_and(|m| m.state != DiskState::Encrypted)
    {
        return Ok(());
    }
    let jpath = journal_path(disk.payload_path());
    match std::fs::symlink_metadata(&jpath) {
        Err(_) => return Ok(()),
        // vmcrypt only ever makes a regular file there: anything else is not its journal, and
        // not its to remove.
        Ok(m) if !m.is_file() => {
            return Err(Error::input(format!(
                "{} is not a regular file; it is not a vmcrypt journal, so it is left alone: move it away",
                jpath.display()
            )));
        }
        Ok(_) => {}
    }
    let mut head = vec![0u8; crate::reencrypt::journal::BLOCK];
    let claimed = FileStorage::open_no_follow(&jpath)
        .and_then(|j| j.read_at(&mut head, 0))
        .ok()
        .and_then(|()| crate::reencrypt::shift::peek_move(&head));
    if let Some((len, src, dst)) = claimed {
        let (offset, recorded_len) = match disk.encryption() {
            Some(m) => (m.identity.payload_offset, Some(m.identity.payload_size)),
            None => (0, None),
        };
        let payload = FileStorage::open(disk.payload_path())?;
        let size = payload.size()?;
        // The room may be whole or, after a crash while it was made, partly written: any size
        // between the payload's end and the full room, with only zeros past the payload.
        let matches = dst > src
            && src == offset
            && recorded_len.is_none_or(|l| l == len)
            && src.checked_add(len).is_some_and(|end| end < size)
            && dst.checked_add(len).is_some_and(|full| size <= full);
        if matches && zeros_from(&payload, src + len, size)? {
            payload.set_len(src + len)?;
            payload.sync()?;
            tracing::info!(disk = %path.display(), "removed the room made for a job that never started");
        }
    }
    crate::fsutil::remove_durable(&jpath)
}

/// Whether bytes `[from, to)` of `s` are all zeros.
fn zeros_from(s: &dyn Storage, from: u64, to: u64) -> Result<bool> {
    let mut buf = vec![0u8; crate::reencrypt::pieces::PIECE];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        s.read_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

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

/// Finishes an interrupted in-place job (encrypt, decrypt or deep rekey). Harmless on a disk
/// with no job under way.
///
/// # Errors
/// [`Error::Integrity`] for a journal that is missing, altered or does not match the image
/// (nothing is written then); unwrap, provider and I/O errors.
pub fn resume_disk(
    path: &Path,
    lookup: &ProviderLookup<'_>,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ResumeReport> {
    let _lock = super::lock_for_job(path)?;
    clear_unrecorded_job(path)?;
    let mut disk = Disk::open(path)?;
    let jpath = journal_path(disk.payload_path());
    let Some(meta) = disk.encryption().cloned() else {
        return Ok(ResumeReport {
            was: None,
            bytes: 0,
            from: 0,
        });
    };
    if meta.state == DiskState::Encrypted {
        return Ok(ResumeReport {
            was: Some(meta.state),
            bytes: 0,
            from: 0,
        });
    }
    let job_id = job_id_of(&meta, path)?;
    disk.check_payload()?;
    let (old, new): (Option<Dek>, Option<Dek>) = match meta.state {
        DiskState::Encrypting => (None, Some(super::unwrap_disk_key(&disk, lookup)?.0)),
        DiskState::Decrypting => (Some(super::unwrap_disk_key(&disk, lookup)?.0), None),
        _ => {
            let (o, n) = rekey_keys(&meta, lookup)?;
            (Some(o), Some(n))
        }
    };
    let transform = match (&old, &new) {
        (None, Some(n)) => Transform::Encrypt(n),
        (Some(o), None) => Transform::Decrypt(o),
        (Some(o), Some(n)) => Transform::Rekey { old: o, new: n },
        (None, None) => return Err(Error::input("no key for the job")),
    };
    if !jpath.exists() {
        return Err(Error::Integrity {
            path: jpath,
            reason: "the journal of the job under way is missing; refusing to guess which sectors were rewritten".into(),
        });
    }
    let payload = FileStorage::open(disk.payload_path())?;
    let journal = FileStorage::open_no_follow(&jpath)?;
    let len = meta.identity.payload_size;
    let unit = meta.identity.sector_size;
    let with_path = |e: Error| match e {
        Error::Integrity { reason, .. } => Error::Integrity {
            path: jpath.clone(),
            reason,
        },
        other => other,
    };
    let (engine, from) = match movement(&meta) {
        Some((src, dst)) => {
            let job = ShiftJob::new(transform, job_id, len, unit, src, dst, threads)?;
            let done = job.recover(&payload, &journal).map_err(with_path)?;
            (Engine::Shift(job), done)
        }
        None => {
            // The job continues with the chunk size it started with.
            let mut head = vec![0u8; crate::reencrypt::journal::BLOCK];
            let chunk = journal
                .read_at(&mut head, 0)
                .ok()
                .and_then(|()| crate::reencrypt::journal::peek_chunk(&head))
                .ok_or_else(|| Error::Integrity {
                    path: jpath.clone(),
                    reason: "the journal header is unreadable or altered".into(),
                })?;
            let job = Job::new(transform, job_id, len, unit, chunk, threads)?;
            let from = job.recover(&payload, &journal).map_err(with_path)?;
            (Engine::Journal(job), from)
        }
    };
    tracing::info!(disk = %path.display(), from, "resuming in-place job");
    let stats = engine
        .run(&payload, &journal, Some(from), progress, cancel)
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
    finish(&mut disk, after.as_ref(), &jpath)?;
    let from = match &engine {
        Engine::Shift(job) => job.bytes_done(from),
        Engine::Journal(_) => from,
    };
    Ok(ResumeReport {
        was: Some(meta.state),
        bytes: stats.bytes.saturating_sub(from),
        from,
    })
}

/// Deep rekey: a new DEK, wrapped under the disk's current KEK, and every sector re-encrypted
/// in place, crash-safely.
///
/// # Errors
/// [`Error::InvalidInput`] for a plain disk, a disk with a job or rekey under way, or a VM
/// disk; unwrap, provider and I/O errors.
pub fn rekey_disk_deep(
    path: &Path,
    lookup: &ProviderLookup<'_>,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<(JobStats, u64)> {
    rekey_deep(path, lookup, threads, progress, cancel, false)
}

/// Deep rekey; `vm_disk` allows a disk of a VM (the VM job keeps the generations in step).
pub(crate) fn rekey_deep(
    path: &Path,
    lookup: &ProviderLookup<'_>,
    threads: usize,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    vm_disk: bool,
) -> Result<(JobStats, u64)> {
    let _lock = super::lock_for_job(path)?;
    clear_unrecorded_job(path)?;
    let mut disk = Disk::open(path)?;
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
        return Err(Error::input(format!(
            "{} belongs to a VM: rekey the VM (`vmcrypt vm rekey VMX --deep`)",
            path.display()
        )));
    }
    let (old, prov, key_id) = super::unwrap_disk_key(&disk, lookup)?;
    let kek = lookup(&prov)?.fetch_kek(&KeyId::new(key_id.clone())?)?;
    let new = Dek::generate_xts()?;
    let target = meta.generation + 1;
    // The payload moves (up by a window from 0, back to 0 otherwise) so each byte is written
    // once; where it cannot, it stays and the journaled engine runs.
    let at = meta.identity.payload_offset;
    let len = meta.identity.payload_size;
    let to = if can_move(&disk, at, len)? {
        if at == 0 { shift_size(len) } else { 0 }
    } else {
        at
    };
    let new_identity = crate::wrap::DiskIdentity {
        payload_offset: to,
        ..meta.identity.clone()
    };
    let ctx = WrapContext {
        provider: &prov,
        key_id: &key_id,
        vm_uuid: meta.vm_uuid.as_deref(),
        disk: &new_identity,
        generation: target,
    };
    let running = EncryptionMeta {
        key_safe: crate::wrap::appended(&meta.key_safe, wrap_dek(&kek, &new, &ctx)?),
        rekey_generation: Some(target),
        state: DiskState::Rekeying,
        rekey_payload_offset: (to != at).then_some(to),
        ..meta
    };
    let after = rekey_result(&running)?;
    let stats = run_new(
        &mut disk,
        Transform::Rekey {
            old: &old,
            new: &new,
        },
        running,
        Some(&after),
        threads,
        progress,
        cancel,
    )?;
    Ok((stats, target))
}

/// The metadata after a deep rekey: only the new pair, at the new generation.
fn rekey_result(meta: &EncryptionMeta) -> Result<EncryptionMeta> {
    let newest = crate::wrap::newest_only(&meta.key_safe)?;
    let target = meta
        .rekey_generation
        .ok_or_else(|| Error::input("deep rekey without a target generation"))?;
    Ok(EncryptionMeta {
        key_safe: newest,
        generation: target,
        rekey_generation: None,
        state: DiskState::Encrypted,
        job: None,
        identity: crate::wrap::DiskIdentity {
            payload_offset: meta
                .rekey_payload_offset
                .unwrap_or(meta.identity.payload_offset),
            ..meta.identity.clone()
        },
        rekey_payload_offset: None,
        ..meta.clone()
    })
}

/// The old DEK (first pair, current generation) and the new one (last pair, target
/// generation) of a deep rekey under way.
fn rekey_keys(meta: &EncryptionMeta, lookup: &ProviderLookup<'_>) -> Result<(Dek, Dek)> {
    let pairs = our_pairs(&meta.key_safe);
    let target = meta
        .rekey_generation
        .ok_or_else(|| Error::input("deep rekey without a target generation"))?;
    let (Some(first), Some(last)) = (pairs.first(), pairs.last()) else {
        return Err(Error::UnwrapFailed);
    };
    if pairs.len() < 2 {
        return Err(Error::UnwrapFailed);
    }
    let moved = crate::wrap::DiskIdentity {
        payload_offset: meta
            .rekey_payload_offset
            .unwrap_or(meta.identity.payload_offset),
        ..meta.identity.clone()
    };
    let open = |(p, k, locked): &(&str, &str, &[u8]),
                generation: u64,
                disk: &crate::wrap::DiskIdentity|
     -> Result<Dek> {
        let kek = lookup(p)?.fetch_kek(&KeyId::new(*k)?)?;
        let ctx = WrapContext {
            provider: p,
            key_id: k,
            vm_uuid: meta.vm_uuid.as_deref(),
            disk,
            generation,
        };
        unwrap_dek(&kek, locked, &ctx)
    };
    Ok((
        open(first, meta.generation, &meta.identity)?,
        open(last, target, &moved)?,
    ))
}
