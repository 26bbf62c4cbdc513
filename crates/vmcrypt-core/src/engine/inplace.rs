//! One crash-safe in-place job on one payload file, whichever engine runs it.
//!
//! [`InPlace`] owns the engine's durable steps; the disk layer records the job in the disk's
//! metadata between them (see `crate::disk`'s in-place module for the whole order):
//! 1. [`InPlace::begin`]: the journal is created with its header and fsynced and, when the
//!    payload moves up, the file is extended to hold it (a full file system fails here, and
//!    everything is undone);
//! 2. (the disk layer records the job)
//! 3. [`InPlace::run`]: the payload is rewritten, with durable progress, and the engine's own
//!    last step (zeroing below a payload that moved up, cutting the file after one that moved
//!    down);
//! 4. (the disk layer records the result)
//! 5. [`InPlace::finish`]: the journal is removed.
//!
//! After a stop, [`InPlace::recover`] reads the journal's header, checks the journal against
//! the payload (refusing before any write if they do not match), and says where to continue.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use vmcrypt_xts::SectorSize;

use super::journal::BLOCK;
use super::{DEFAULT_CHUNK, DEFAULT_SHIFT, FileStorage, Job, ShiftJob, Storage, Transform};
use crate::progress::{JobStats, Progress};
use crate::{Error, Result};

/// Tuning of in-place jobs, set at the front door (the CLI reads `VMCRYPT_CHUNK_BYTES` and
/// `VMCRYPT_INPLACE_ENGINE` into it); the defaults are what every job should use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tuning {
    /// Chunk of the journaled engine and window of the data-shift engine, in bytes (a
    /// multiple of 4096): smaller means more, smaller durable steps. `None`: 8 MiB chunks,
    /// 64 MiB windows.
    pub chunk: Option<u64>,
    /// Keep every payload where it is and journal each chunk, even where the payload could
    /// move (a comparison and testing knob).
    pub journal_only: bool,
}

impl Tuning {
    /// Sets the chunk and window size; ignored unless a non-zero multiple of 4096.
    pub fn chunk(mut self, bytes: Option<u64>) -> Self {
        self.chunk = bytes.filter(|b| *b >= 4096 && b.is_multiple_of(4096));
        self
    }

    /// Chooses the journaled engine for every job.
    pub fn journal_only(mut self, yes: bool) -> Self {
        self.journal_only = yes;
        self
    }

    /// The journaled engine's chunk.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk.unwrap_or(DEFAULT_CHUNK)
    }

    /// The data-shift window (and so the shift) for a payload of `len` bytes: at most the
    /// payload rounded up to 1 MiB.
    pub fn window(&self, len: u64) -> u64 {
        self.chunk
            .unwrap_or(DEFAULT_SHIFT)
            .min(len.next_multiple_of(1 << 20))
            .max(4096)
    }
}

/// Where a job moves the payload: from byte `src` of its file to byte `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    /// Where the payload starts now.
    pub src: u64,
    /// Where it starts when the job is done.
    pub dst: u64,
}

/// What an in-place job does: the same description begins it and recovers it.
pub struct Spec<'a> {
    /// Encrypt, decrypt or rekey, with the keys.
    pub transform: Transform<'a>,
    /// The job's id (recorded in the metadata; binds the journal to this job).
    pub job_id: [u8; 16],
    /// Payload bytes.
    pub len: u64,
    /// XTS data unit.
    pub unit: SectorSize,
    /// Where the payload moves, if it does (the data-shift engine); `None` keeps it in place
    /// (the journaled engine).
    pub movement: Option<Movement>,
    /// Worker threads.
    pub threads: usize,
}

enum Engine<'a> {
    Shift(ShiftJob<'a>),
    Journal(Job<'a>),
}

/// An in-place job under way; see the module docs.
pub struct InPlace<'a> {
    engine: Engine<'a>,
    payload: FileStorage,
    journal: FileStorage,
    journal_path: PathBuf,
}

impl<'a> InPlace<'a> {
    /// Step 1 of a new job. A stale journal at `journal_path` is removed first: the caller
    /// holds the disk's lock and found no job recorded, so nothing uses it. On error, the room
    /// made is given back and the journal removed, in that order (the journal is what lets a
    /// later run give the room back after a crash).
    ///
    /// # Errors
    /// I/O errors (a full file system while making room).
    pub fn begin(
        payload_path: &Path,
        journal_path: &Path,
        spec: Spec<'a>,
        tuning: &Tuning,
    ) -> Result<Self> {
        if journal_path.exists() {
            crate::fsutil::remove_durable(journal_path)?;
        }
        let payload = FileStorage::open(payload_path)?;
        let engine = Engine::new(spec, tuning.chunk_bytes())?;
        let size_before = payload.size()?;
        let made = (|| {
            let journal = FileStorage::create(journal_path)?;
            match &engine {
                Engine::Shift(job) => job.begin(&payload, &journal)?,
                Engine::Journal(job) => job.begin(&payload, &journal)?,
            }
            crate::fsutil::sync_dir(&crate::fsutil::parent_dir(journal_path))?;
            if let Engine::Shift(job) = &engine {
                job.reserve(&payload)?;
                crate::failpoint::hit("inplace-room-made");
            }
            Ok(journal)
        })();
        match made {
            Ok(journal) => Ok(InPlace {
                engine,
                payload,
                journal,
                journal_path: journal_path.to_path_buf(),
            }),
            Err(e) => {
                if payload.size().is_ok_and(|s| s > size_before)
                    && payload
                        .set_len(size_before)
                        .and_then(|()| payload.sync())
                        .is_err()
                {
                    return Err(e);
                }
                let _ = std::fs::remove_file(journal_path);
                Err(e)
            }
        }
    }

    /// A job that stopped: checks its journal against the payload and returns the job with
    /// where to continue. The journaled engine continues with the chunk it started with (read
    /// from the journal's header).
    ///
    /// # Errors
    /// [`Error::Integrity`] (naming the journal) for a journal that is missing, unreadable,
    /// altered or does not match the payload; nothing is written then.
    pub fn recover(
        payload_path: &Path,
        journal_path: &Path,
        spec: Spec<'a>,
    ) -> Result<(Self, u64)> {
        let integrity = |reason: &str| Error::Integrity {
            path: journal_path.to_path_buf(),
            reason: reason.into(),
        };
        if !journal_path.exists() {
            return Err(integrity(
                "the journal of the job under way is missing; refusing to guess which sectors were rewritten",
            ));
        }
        let payload = FileStorage::open(payload_path)?;
        let journal = FileStorage::open_no_follow(journal_path)?;
        let chunk = match spec.movement {
            Some(_) => DEFAULT_CHUNK,
            None => header(&journal)
                .and_then(|h| super::journal::peek_chunk(&h))
                .ok_or_else(|| integrity("the journal header is unreadable or altered"))?,
        };
        let engine = Engine::new(spec, chunk)?;
        let with_path = |e: Error| match e {
            Error::Integrity { reason, .. } => Error::Integrity {
                path: journal_path.to_path_buf(),
                reason,
            },
            other => other,
        };
        let from = match &engine {
            Engine::Shift(job) => job.recover(&payload, &journal),
            Engine::Journal(job) => job.recover(&payload, &journal),
        }
        .map_err(with_path)?;
        Ok((
            InPlace {
                engine,
                payload,
                journal,
                journal_path: journal_path.to_path_buf(),
            },
            from,
        ))
    }

    /// Step 3: runs the job from `from` (0 for a new job) to its end, including the engine's
    /// own last step. Returns the stats of this run.
    ///
    /// # Errors
    /// I/O errors and [`Error::Cancelled`]; the job is resumable after either.
    pub fn run(&self, from: u64, progress: &dyn Progress, cancel: &AtomicBool) -> Result<JobStats> {
        match &self.engine {
            Engine::Shift(job) => {
                let stats = job.run(&self.payload, &self.journal, from, progress, cancel)?;
                job.finish(&self.payload)?;
                crate::failpoint::hit("inplace-moved");
                Ok(stats)
            }
            Engine::Journal(job) => job.run(&self.payload, &self.journal, from, progress, cancel),
        }
    }

    /// Payload bytes done when a recovered job continues from `from`.
    pub fn bytes_done(&self, from: u64) -> u64 {
        match &self.engine {
            Engine::Shift(job) => job.bytes_done(from),
            Engine::Journal(_) => from,
        }
    }

    /// Step 5: removes the journal, once the caller has recorded the result.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(self) -> Result<()> {
        drop(self.journal);
        remove_journal(&self.journal_path)
    }
}

impl<'a> Engine<'a> {
    fn new(spec: Spec<'a>, chunk: u64) -> Result<Self> {
        Ok(match spec.movement {
            Some(m) => Engine::Shift(ShiftJob::new(
                spec.transform,
                spec.job_id,
                spec.len,
                spec.unit,
                m.src,
                m.dst,
                spec.threads,
            )?),
            None => Engine::Journal(Job::new(
                spec.transform,
                spec.job_id,
                spec.len,
                spec.unit,
                chunk,
                spec.threads,
            )?),
        })
    }
}

/// Removes a journal durably, if it is there.
///
/// # Errors
/// I/O errors.
pub fn remove_journal(journal_path: &Path) -> Result<()> {
    if journal_path.exists() {
        crate::fsutil::remove_durable(journal_path)?;
    }
    Ok(())
}

/// What a journal left by a data-shift job that was never recorded claims: the payload length
/// and where it was moving from and to. `None` for any other journal, or one that cannot be
/// read (the caller then only removes it).
pub fn claimed_move(journal_path: &Path) -> Option<(u64, u64, u64)> {
    let journal = FileStorage::open_no_follow(journal_path).ok()?;
    header(&journal).and_then(|h| super::shift::peek_move(&h))
}

fn header(journal: &FileStorage) -> Option<Vec<u8>> {
    let mut head = vec![0u8; BLOCK];
    journal.read_at(&mut head, 0).ok().map(|()| head)
}
