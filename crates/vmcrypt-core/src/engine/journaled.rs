//! The crash-safe in-place engine.
//!
//! For each chunk, in order:
//! 1. read the next chunk too and fingerprint it (it is still untouched);
//! 2. transform the chunk in memory;
//! 3. write a journal slot (alternating between two): the chunk's bytes in their encrypted
//!    form (the final bytes when encrypting or rekeying, the original ciphertext when
//!    decrypting, so plaintext never reaches the journal), with the fingerprint of the next
//!    chunk; fsync the journal;
//! 4. write the chunk over the payload; fsync the payload.
//!
//! After a crash, the newest valid slot says where the job was: every chunk before it is done,
//! every chunk after it untouched (checked: the chunk after it must still match the
//! fingerprint), and the slot's own chunk may be anything (old, new or torn). Writing the
//! slot's bytes back makes that chunk whole again; the job then continues. A torn slot (a
//! crash while writing it) fails its MAC and the older slot rules; its chunk was not yet
//! touched. A journal that fails authentication, or an image that does not match the
//! journal, is refused before anything is written.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use vmcrypt_xts::{Direction, SectorSize};
use zeroize::{Zeroize, Zeroizing};

use super::journal::{BLOCK, Fingerprint, Header, Holds, JournalKeys, Slot};
use super::storage::{Storage, give_back, write_sparse};
use crate::progress::{JobStats, Progress};
use crate::secret::{Dek, Schedule};
use crate::{Error, Result};

/// What the job does to each data unit.
pub enum Transform<'a> {
    /// Plaintext to ciphertext under this DEK.
    Encrypt(&'a Dek),
    /// Ciphertext under this DEK to plaintext.
    Decrypt(&'a Dek),
    /// Ciphertext under `old` to ciphertext under `new` (deep rekey).
    Rekey {
        /// The current DEK.
        old: &'a Dek,
        /// The new DEK.
        new: &'a Dek,
    },
}

impl Transform<'_> {
    /// The cipher of the job, and the journal keys derived from the DEKs (old, then new) and
    /// the job id.
    pub(crate) fn keys(&self, job_id: [u8; 16]) -> Result<(Recrypt, JournalKeys)> {
        let mut ikm = Zeroizing::new(Vec::new());
        let (from, to) = match self {
            Transform::Encrypt(d) => {
                ikm.extend_from_slice(d.expose_secret());
                (None, Some(d.xts()?))
            }
            Transform::Decrypt(d) => {
                ikm.extend_from_slice(d.expose_secret());
                (Some(d.xts()?), None)
            }
            Transform::Rekey { old, new } => {
                ikm.extend_from_slice(old.expose_secret());
                ikm.extend_from_slice(new.expose_secret());
                (Some(old.xts()?), Some(new.xts()?))
            }
        };
        Ok((Recrypt { from, to }, JournalKeys::derive(&ikm, job_id)?))
    }

    pub(crate) fn kind(&self) -> u8 {
        match self {
            Transform::Encrypt(_) => 1,
            Transform::Decrypt(_) => 2,
            Transform::Rekey { .. } => 3,
        }
    }
}

/// What a job does to each data unit: decrypt under the old DEK (if any), then encrypt under
/// the new one (if any). Shared by both engines.
pub(crate) struct Recrypt {
    from: Option<Schedule>,
    to: Option<Schedule>,
}

impl Recrypt {
    /// Transforms whole units at payload offset `off`, on the calling thread. Holes (all-zero
    /// units, crate::holes) of an encrypted payload stay all zero: they are plaintext zeros
    /// under any key.
    pub(crate) fn apply(&self, buf: &mut [u8], off: u64, unit: SectorSize) -> Result<()> {
        self.each_run(
            buf,
            |run, at| {
                if let Some(from) = &self.from {
                    from.decrypt_sectors(run, off + at, unit)?;
                }
                if let Some(to) = &self.to {
                    to.encrypt_sectors(run, off + at, unit)?;
                }
                Ok(())
            },
            unit,
        )
    }

    /// The same, spread over the current rayon pool.
    fn par_apply(&self, buf: &mut [u8], off: u64, unit: SectorSize) -> Result<()> {
        self.each_run(
            buf,
            |run, at| {
                if let Some(from) = &self.from {
                    from.par_sectors(run, off + at, unit, Direction::Decrypt)?;
                }
                if let Some(to) = &self.to {
                    to.par_sectors(run, off + at, unit, Direction::Encrypt)?;
                }
                Ok(())
            },
            unit,
        )
    }

    /// Like [`Recrypt::apply`] (spread over the rayon pool with `par`) for a buffer at payload
    /// offset `off` whose source holes are known: `data` lists the payload ranges that hold
    /// data (crate::holes::widen). Encryption leaves the holes zero instead of encrypting
    /// them, so they stay holes; decryption and rekeying find holes by their zeros anyway.
    pub(crate) fn apply_sparse(
        &self,
        buf: &mut [u8],
        off: u64,
        unit: SectorSize,
        data: &[(u64, u64)],
        par: bool,
    ) -> Result<()> {
        let run = |b: &mut [u8], at: u64| {
            if par {
                self.par_apply(b, at, unit)
            } else {
                self.apply(b, at, unit)
            }
        };
        if self.from.is_some() {
            return run(buf, off);
        }
        let end = off + buf.len() as u64;
        for &(a, b) in data {
            let (a, b) = (a.max(off), b.min(end));
            if a < b {
                run(&mut buf[(a - off) as usize..(b - off) as usize], a)?;
            }
        }
        Ok(())
    }

    /// Calls `f(run, its offset in buf)` on the runs of data units, or on the whole buffer
    /// when it is plaintext (its holes are known from the file instead: [`Recrypt::apply_sparse`]).
    fn each_run(
        &self,
        buf: &mut [u8],
        mut f: impl FnMut(&mut [u8], u64) -> Result<()>,
        unit: SectorSize,
    ) -> Result<()> {
        if self.from.is_none() {
            return f(buf, 0);
        }
        crate::holes::for_each_data_run(buf, unit, |run, at| f(run, at as u64))
    }
}

/// One in-place job.
pub struct Job<'a> {
    transform: Transform<'a>,
    cipher: Recrypt,
    keys: JournalKeys,
    len: u64,
    unit: SectorSize,
    chunk: u64,
    pool: rayon::ThreadPool,
}

impl<'a> Job<'a> {
    /// A job over `len` payload bytes in chunks of `chunk` bytes (a multiple of 4096), with the
    /// journal keys derived from the DEKs and `job_id`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for lengths that are not whole units.
    pub fn new(
        transform: Transform<'a>,
        job_id: [u8; 16],
        len: u64,
        unit: SectorSize,
        chunk: u64,
        threads: usize,
    ) -> Result<Self> {
        if !len.is_multiple_of(unit.bytes() as u64) || chunk == 0 || !chunk.is_multiple_of(4096) {
            return Err(Error::input(
                "job length or chunk size is not whole data units",
            ));
        }
        let (cipher, keys) = transform.keys(job_id)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| Error::input(format!("cannot start worker threads: {e}")))?;
        Ok(Job {
            transform,
            cipher,
            keys,
            len,
            unit,
            chunk,
            pool,
        })
    }

    /// Journal file size for this job.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn journal_len(&self) -> u64 {
        BLOCK as u64 + 2 * (BLOCK as u64 + self.chunk)
    }

    fn chunk_at(&self, off: u64) -> u64 {
        (self.len - off).min(self.chunk)
    }

    /// Writes the journal header (with the fingerprint of chunk 0 as it is now) and empty
    /// slots, and makes them durable. Call once, after the metadata records the job and before
    /// [`Job::run`].
    ///
    /// # Errors
    /// I/O errors.
    pub fn begin(&self, payload: &dyn Storage, journal: &dyn Storage) -> Result<()> {
        let mut first = vec![0u8; self.chunk_at(0) as usize];
        payload.read_at(&mut first, 0)?;
        let header = Header {
            kind: self.transform.kind(),
            unit: self.unit.bytes() as u32,
            payload_len: self.len,
            chunk: self.chunk,
            first: self.keys.fingerprint(&first)?,
        };
        first.zeroize();
        journal.write_at(&header.encode(&self.keys), 0)?;
        let empty = vec![0u8; BLOCK];
        for s in 0..2 {
            journal.write_at(&empty, self.slot_pos(s))?;
        }
        journal.sync()
    }

    fn slot_pos(&self, s: u64) -> u64 {
        BLOCK as u64 + s * (BLOCK as u64 + self.chunk)
    }

    /// After a crash: authenticates the journal, checks it against the image, makes the chunk
    /// in flight whole again, and returns where the job continues. Writes nothing if any check
    /// fails.
    ///
    /// # Errors
    /// [`Error::Integrity`] (exit 4) for a journal that fails authentication or does not match
    /// the image; I/O errors.
    pub fn recover(&self, payload: &dyn Storage, journal: &dyn Storage) -> Result<u64> {
        let bad = super::journal::refused;
        let hb = super::journal::header_block(journal)?;
        let header = Header::decode(&hb, &self.keys).ok_or_else(|| {
            bad("the journal header fails authentication (altered, or another job's)")
        })?;
        let expected = (
            self.transform.kind(),
            self.unit.bytes() as u32,
            self.len,
            self.chunk,
        );
        if (header.kind, header.unit, header.payload_len, header.chunk) != expected {
            return Err(bad("the journal describes another job"));
        }
        // The newest slot whose header and data both authenticate. A slot torn by a crash
        // while it was written fails here, and its chunk was not touched yet.
        let mut newest: Option<(Slot, Zeroizing<Vec<u8>>)> = None;
        for s in 0..2 {
            let mut b = vec![0u8; BLOCK];
            if journal.read_at(&mut b, self.slot_pos(s)).is_err() {
                continue;
            }
            let Some(slot) = Slot::decode(&b, &self.keys) else {
                continue;
            };
            let sane = slot.offset % self.chunk == 0
                && slot.offset < self.len
                && slot.len == self.chunk_at(slot.offset)
                && slot.seq == slot.offset / self.chunk + 1
                && (slot.seq - 1) % 2 == s;
            if !sane {
                return Err(bad("a journal slot describes an impossible chunk"));
            }
            let mut data = Zeroizing::new(vec![0u8; slot.len as usize]);
            if journal
                .read_at(&mut data, self.slot_pos(s) + BLOCK as u64)
                .is_err()
                || !self.keys.matches(&slot.data, &data)
            {
                continue;
            }
            if newest.as_ref().is_none_or(|(n, _)| slot.seq > n.seq) {
                newest = Some((slot, data));
            }
        }
        let Some((slot, data)) = newest else {
            // No chunk was written yet: chunk 0 must be as it was when the job began.
            let mut first = vec![0u8; self.chunk_at(0) as usize];
            payload.read_at(&mut first, 0)?;
            let ok = self.keys.matches(&header.first, &first);
            first.zeroize();
            return if ok {
                Ok(0)
            } else {
                Err(bad(
                    "the image's first chunk changed but the journal has no record of it",
                ))
            };
        };
        let end = slot.offset + slot.len;
        if let Some(fp) = &slot.next {
            let mut next = Zeroizing::new(vec![0u8; self.chunk_at(end) as usize]);
            payload.read_at(&mut next, end)?;
            if !self.keys.matches(fp, &next) {
                return Err(bad(
                    "the chunk after the journal's record was changed: the journal is older than the image",
                ));
            }
        }
        let zeroed = std::sync::Mutex::new(Vec::new());
        write_sparse(payload, &data, slot.offset, self.unit, &zeroed)?;
        payload.sync()?;
        // As after each chunk of a run: what became zeros durably is given back.
        give_back(payload, &zeroed)?;
        Ok(match slot.holds {
            Holds::Final => end,
            Holds::Original => slot.offset,
        })
    }

    /// Runs the job from payload offset `start` (0, or what [`Job::recover`] returned) to the
    /// end. Cancellation is checked between chunks and leaves the job resumable.
    ///
    /// # Errors
    /// I/O errors (an fsync error stops the job; resume continues it); [`Error::Cancelled`].
    pub fn run(
        &self,
        payload: &dyn Storage,
        journal: &dyn Storage,
        start: u64,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<JobStats> {
        let started = Instant::now();
        progress.start(self.len);
        if start > 0 {
            progress.advance(start);
        }
        let mut cur = Zeroizing::new(vec![0u8; self.chunk as usize]);
        let mut next = Zeroizing::new(vec![0u8; self.chunk as usize]);
        let mut off = start;
        if off < self.len {
            payload.read_at(&mut cur[..self.chunk_at(off) as usize], off)?;
        }
        while off < self.len {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled {
                    done: off,
                    restored: false,
                });
            }
            let n = self.chunk_at(off) as usize;
            let end = off + n as u64;
            // 1. The next chunk, untouched; 2. its fingerprint and the transform of this
            // chunk, side by side (keeping the encrypted form of this chunk for the journal).
            let m = if end < self.len {
                self.chunk_at(end) as usize
            } else {
                0
            };
            if m > 0 {
                payload.read_at(&mut next[..m], end)?;
            }
            // The chunk's holes (payload offsets are file offsets for this engine).
            let data = crate::holes::widen(
                &payload.data_ranges(off, n as u64)?,
                0,
                off,
                n as u64,
                self.unit,
            );
            let (journal_bytes, holds): (Zeroizing<Vec<u8>>, Holds) = match self.transform {
                Transform::Decrypt(_) => (Zeroizing::new(cur[..n].to_vec()), Holds::Original),
                _ => (Zeroizing::new(Vec::new()), Holds::Final),
            };
            // Transform and fingerprint the journaled form piece by piece (cache-hot), beside
            // the fingerprint of the untouched next chunk.
            let (fp, data_fp) = self.pool.install(|| {
                rayon::join(
                    || {
                        (m > 0)
                            .then(|| self.keys.fingerprint(&next[..m]))
                            .transpose()
                    },
                    || {
                        self.keys.transform_and_fingerprint(
                            &mut cur[..n],
                            holds == Holds::Final,
                            |piece, at| {
                                self.cipher
                                    .apply_sparse(piece, off + at, self.unit, &data, true)
                            },
                        )
                    },
                )
            });
            let data_fp = data_fp?;
            let next_fp: Option<Fingerprint> = fp?;
            let data: &[u8] = if holds == Holds::Final {
                &cur[..n]
            } else {
                &journal_bytes
            };
            // 3. Journal slot, durable.
            let seq = off / self.chunk + 1;
            let slot = Slot {
                seq,
                offset: off,
                len: n as u64,
                holds,
                data: data_fp,
                next: next_fp,
            };
            let pos = self.slot_pos((seq - 1) % 2);
            journal.write_at(&slot.encode(&self.keys), pos)?;
            journal.write_at(data, pos + BLOCK as u64)?;
            journal.sync()?;
            crate::failpoint::hit("reencrypt-journal-synced");
            // 4. The chunk, durable.
            let zeroed = std::sync::Mutex::new(Vec::new());
            write_sparse(payload, &cur[..n], off, self.unit, &zeroed)?;
            payload.sync()?;
            give_back(payload, &zeroed)?;
            crate::failpoint::hit("reencrypt-chunk-synced");
            progress.advance(n as u64);
            std::mem::swap(&mut cur, &mut next);
            off = end;
        }
        progress.finish();
        Ok(JobStats {
            bytes: self.len,
            elapsed: started.elapsed(),
        })
    }
}
