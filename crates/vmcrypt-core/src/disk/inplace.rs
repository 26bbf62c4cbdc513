//! In-place jobs on a disk, made crash-safe by the journaled engine of [`crate::reencrypt`].
//!
//! Order of durable steps for every in-place job:
//! 1. the journal `PAYLOAD.vmcrypt-journal` is created with its header (job id, fingerprint of
//!    the first chunk) and fsynced: a crash here leaves a stale journal and an untouched disk;
//! 2. the metadata records the job (`state` = encrypting / decrypting / rekeying, `job` = its
//!    id) with every key it needs (for a deep rekey both DEKs stay wrapped) — atomic, durable;
//! 3. the engine rewrites the payload chunk by chunk, journaling each chunk before it
//!    overwrites it;
//! 4. the metadata records the result (encrypted, or removed after a decrypt);
//! 5. the journal is removed.
//!
//! `resume` continues a job from steps 3-5 after a crash, a kill, an I/O error or a cancel;
//! running it again after the job finished does nothing. Every other command refuses a disk
//! with a job under way and says to resume.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::{Disk, DiskState, EncryptionMeta, JobStats, Progress};
use crate::locator::KeyLocator;
use crate::provider::{KeyId, ProviderLookup};
use crate::reencrypt::{FileStorage, Job, Storage, Transform};
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

/// Steps 1-5 for a new job. `running` is the metadata with the job's state (its `job` field is
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
    let job = Job::new(
        transform,
        job_id,
        len,
        running.identity.sector_size,
        chunk_size(),
        threads,
    )?;
    let jpath = journal_path(disk.payload_path());
    if jpath.exists() {
        // Left by a crash before a job was recorded (step 1 without step 2): nothing used it.
        crate::fsutil::remove_durable(&jpath)?;
    }
    let mut payload = FileStorage::open(disk.payload_path())?;
    let mut journal = FileStorage::create(&jpath)?;
    let result = (|| {
        job.begin(&payload, &mut journal)?;
        crate::fsutil::sync_dir(&crate::fsutil::parent_dir(&jpath))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&jpath);
        return Err(e);
    }
    let running = EncryptionMeta {
        job: Some(hex(&job_id)),
        ..running
    };
    disk.write_meta(Some(&running))?;
    crate::failpoint::hit("inplace-job-recorded");
    let stats = job
        .run(&mut payload, &mut journal, 0, progress, cancel)
        .map_err(|e| resumable(disk.path(), e))?;
    finish(disk, after, &jpath)?;
    Ok(stats)
}

fn finish(disk: &mut Disk, after: Option<&EncryptionMeta>, jpath: &Path) -> Result<()> {
    disk.write_meta(after)?;
    crate::failpoint::hit("inplace-meta-final");
    if jpath.exists() {
        crate::fsutil::remove_durable(jpath)?;
    }
    Ok(())
}

fn resumable(path: &Path, e: Error) -> Error {
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
    let mut disk = Disk::open(path)?;
    let jpath = journal_path(disk.payload_path());
    let Some(meta) = disk.encryption().cloned() else {
        if jpath.exists() {
            crate::fsutil::remove_durable(&jpath)?;
        }
        return Ok(ResumeReport {
            was: None,
            bytes: 0,
            from: 0,
        });
    };
    if meta.state == DiskState::Encrypted {
        if jpath.exists() {
            crate::fsutil::remove_durable(&jpath)?;
        }
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
        return Err(Error::Integrity { path: jpath, reason: "the journal of the job under way is missing; refusing to guess which sectors were rewritten".into() });
    }
    let mut payload = FileStorage::open(disk.payload_path())?;
    let mut journal = FileStorage::open(&jpath)?;
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
    let job = Job::new(
        transform,
        job_id,
        meta.identity.payload_size,
        meta.identity.sector_size,
        chunk,
        threads,
    )?;
    let from = job
        .recover(&mut payload, &mut journal)
        .map_err(|e| match e {
            Error::Integrity { reason, .. } => Error::Integrity {
                path: jpath.clone(),
                reason,
            },
            other => other,
        })?;
    tracing::info!(disk = %path.display(), from, "resuming in-place job");
    let stats = job
        .run(&mut payload, &mut journal, from, progress, cancel)
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
    let mut disk = Disk::open(path)?;
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
    let ctx = WrapContext {
        provider: &prov,
        key_id: &key_id,
        vm_uuid: meta.vm_uuid.as_deref(),
        disk: &meta.identity,
        generation: target,
    };
    let mut items = match &meta.key_safe {
        KeyLocator::List(items) => items.clone(),
        other => vec![other.clone()],
    };
    items.push(wrap_dek(&kek, &new, &ctx)?);
    let running = EncryptionMeta {
        key_safe: KeyLocator::List(items),
        rekey_generation: Some(target),
        state: DiskState::Rekeying,
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
    let open = |(p, k, locked): &(&str, &str, &[u8]), generation: u64| -> Result<Dek> {
        let kek = lookup(p)?.fetch_kek(&KeyId::new(*k)?)?;
        let ctx = WrapContext {
            provider: p,
            key_id: k,
            vm_uuid: meta.vm_uuid.as_deref(),
            disk: &meta.identity,
            generation,
        };
        unwrap_dek(&kek, locked, &ctx)
    };
    Ok((open(first, meta.generation)?, open(last, target)?))
}
