//! The data-shift engine: crash-safe in-place jobs that write every byte once.
//!
//! The payload moves by `shift` bytes while it is transformed: from file offset `src` to file
//! offset `dst`, with `|dst - src| = shift`. The payload is cut into windows of `shift` bytes.
//! Windows are done in the order that makes each window's output land only on the source of
//! windows already done: from the last window to the first when moving up (`dst > src`), from
//! the first to the last when moving down. So no write ever touches a byte that is still
//! needed, and a torn write cannot lose data: whatever it hit is redone from an intact source.
//!
//! For each window, in that order:
//! 1. read, transform and write its pieces, in parallel ([`super::pieces`]);
//! 2. fsync the payload;
//! 3. write a progress slot (alternating between two): windows done, and a fingerprint of a
//!    sample of the next window's source (4 KiB of every 256 KiB); fsync the progress file.
//!
//! Recovery reads the newest authenticated slot: every window it counts is done and durable
//! (its data was fsynced before the slot was written), and the next window's source is
//! intact (it is overwritten only by the window after it, which starts after this slot is
//! durable). It checks that source against the slot's fingerprint, writes nothing, and the job
//! continues with that window. A slot torn by a crash fails its MAC and the older slot rules,
//! which is safe because the window after it had not started. A forged or altered header or
//! slot fails its MAC; a rolled-back progress file fails the fingerprint check. Either way
//! nothing is written.
//!
//! Compared with the journaled engine ([`super::journaled`]) this writes each byte once instead of
//! twice and fingerprints a 1.6 % sample instead of every byte twice; the price is that the
//! payload file grows by `shift` bytes while the payload moves (see docs/crash-safety.md).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use vmcrypt_xts::SectorSize;

use super::journal::{BLOCK, Fingerprint, JournalKeys, MAC_LEN, get_fp, get_u64, put_fp};
use super::journaled::{Recrypt, Transform};
use super::pieces::{Ended, PIECE, for_each_piece};
use super::storage::{Storage, give_back, write_sparse};
use super::writeback::with_writeback;
use crate::progress::{JobStats, Progress};
use crate::{Error, Result};

const HEADER_MAGIC: &[u8; 8] = b"VMCSHFT1";
const SLOT_MAGIC: &[u8; 8] = b"VMCSPRG1";
/// Bytes sampled at the start of every [`PIECE`] of a window for its fingerprint.
const SAMPLE: usize = 4096;

/// One data-shift job.
pub struct ShiftJob<'a> {
    transform: Transform<'a>,
    cipher: Recrypt,
    keys: JournalKeys,
    len: u64,
    unit: SectorSize,
    src: u64,
    dst: u64,
    threads: usize,
}

/// The parameters a progress header records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    kind: u8,
    unit: u32,
    len: u64,
    src: u64,
    dst: u64,
    first: Fingerprint,
}

/// A progress slot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    /// Windows done (at least 1).
    done: u64,
    /// Fingerprint of the sample of the next window's source, if one is left.
    next: Option<Fingerprint>,
}

impl Header {
    fn encode(&self, keys: &JournalKeys) -> Vec<u8> {
        let mut b = HEADER_MAGIC.to_vec();
        b.push(self.kind);
        b.extend_from_slice(&self.unit.to_be_bytes());
        for v in [self.len, self.src, self.dst] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&keys.job_id());
        put_fp(&mut b, &self.first);
        keys.seal(b)
    }

    fn decode(b: &[u8], keys: &JournalKeys) -> Option<Header> {
        if b.get(..8)? != HEADER_MAGIC {
            return None;
        }
        let mut at = 8;
        let kind = *b.get(at)?;
        let unit = u32::from_be_bytes(b.get(at + 1..at + 5)?.try_into().ok()?);
        at += 5;
        let len = get_u64(b, &mut at)?;
        let src = get_u64(b, &mut at)?;
        let dst = get_u64(b, &mut at)?;
        let first = keys.header_tail(b, at)?;
        Some(Header {
            kind,
            unit,
            len,
            src,
            dst,
            first,
        })
    }
}

impl Slot {
    fn encode(&self, keys: &JournalKeys) -> Vec<u8> {
        let mut b = SLOT_MAGIC.to_vec();
        b.extend_from_slice(&self.done.to_be_bytes());
        b.push(u8::from(self.next.is_some()));
        put_fp(&mut b, &self.next.unwrap_or_default());
        keys.seal(b)
    }

    fn decode(b: &[u8], keys: &JournalKeys) -> Option<Slot> {
        if b.get(..8)? != SLOT_MAGIC {
            return None;
        }
        let mut at = 8;
        let done = get_u64(b, &mut at)?;
        let has_next = *b.get(at)? == 1;
        at += 1;
        let next = get_fp(b, &mut at)?;
        if !keys.check(&b[..at], b.get(at..at + MAC_LEN)?) {
            return None;
        }
        Some(Slot {
            done,
            next: has_next.then_some(next),
        })
    }
}

/// The payload length and the offsets (`len`, `src`, `dst`) a data-shift progress header
/// claims, read without authentication: for cleaning up after a job that was never recorded
/// (whose keys may be gone), where the caller checks them against the file.
pub fn peek_move(head: &[u8]) -> Option<(u64, u64, u64)> {
    if head.get(..8)? != HEADER_MAGIC {
        return None;
    }
    let mut at = 8 + 1 + 4;
    Some((
        get_u64(head, &mut at)?,
        get_u64(head, &mut at)?,
        get_u64(head, &mut at)?,
    ))
}

impl<'a> ShiftJob<'a> {
    /// A job moving `len` payload bytes from file offset `src` to `dst` while transforming
    /// them. The shift `|dst - src|` is the window: a non-zero multiple of 4096.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for lengths that are not whole units or a bad shift.
    pub fn new(
        transform: Transform<'a>,
        job_id: [u8; 16],
        len: u64,
        unit: SectorSize,
        src: u64,
        dst: u64,
        threads: usize,
    ) -> Result<Self> {
        let shift = src.abs_diff(dst);
        if len == 0 || !len.is_multiple_of(unit.bytes() as u64) {
            return Err(Error::input("job length is not whole data units"));
        }
        if shift == 0 || !shift.is_multiple_of(4096) || !src.is_multiple_of(512) {
            return Err(Error::input(
                "a data shift must move the payload by a non-zero multiple of 4096 bytes",
            ));
        }
        if src.max(dst).checked_add(len).is_none() {
            return Err(Error::input("payload offset overflows"));
        }
        let (cipher, keys) = transform.keys(job_id)?;
        Ok(ShiftJob {
            transform,
            cipher,
            keys,
            len,
            unit,
            src,
            dst,
            threads: threads.max(1),
        })
    }

    /// Size of the progress file.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn journal_len(&self) -> u64 {
        3 * BLOCK as u64
    }

    fn shift(&self) -> u64 {
        self.src.abs_diff(self.dst)
    }

    /// Number of windows.
    pub fn windows(&self) -> u64 {
        self.len.div_ceil(self.shift())
    }

    /// The window done `i`-th.
    fn window_at(&self, i: u64) -> u64 {
        if self.dst > self.src {
            self.windows() - 1 - i
        } else {
            i
        }
    }

    /// Payload-relative start and length of window `w`.
    fn range(&self, w: u64) -> (u64, u64) {
        let start = w * self.shift();
        (start, (self.len - start).min(self.shift()))
    }

    /// Payload bytes done after `done` windows.
    pub fn bytes_done(&self, done: u64) -> u64 {
        (0..done).map(|i| self.range(self.window_at(i)).1).sum()
    }

    /// The sample of window `w`'s source that its fingerprint covers: the first 4 KiB of
    /// every piece.
    fn sample(&self, payload: &dyn Storage, w: u64) -> Result<Vec<u8>> {
        let (start, n) = self.range(w);
        let mut out = Vec::with_capacity((n as usize / PIECE + 1) * SAMPLE);
        let mut at = 0u64;
        while at < n {
            let k = (n - at).min(SAMPLE as u64) as usize;
            let from = out.len();
            out.resize(from + k, 0);
            payload.read_at(&mut out[from..], self.src + start + at)?;
            at += PIECE as u64;
        }
        Ok(out)
    }

    /// Writes the progress header (with the fingerprint of the first window's source as it
    /// is now) and two empty slots, and makes them durable. Call once, after the payload file
    /// has room for the moved payload and before the metadata records the job.
    ///
    /// # Errors
    /// I/O errors.
    pub fn begin(&self, payload: &dyn Storage, journal: &dyn Storage) -> Result<()> {
        let sample = zeroize::Zeroizing::new(self.sample(payload, self.window_at(0))?);
        let header = Header {
            kind: self.transform.kind(),
            unit: self.unit.bytes() as u32,
            len: self.len,
            src: self.src,
            dst: self.dst,
            first: self.keys.fingerprint(&sample)?,
        };
        journal.write_at(&header.encode(&self.keys), 0)?;
        let empty = vec![0u8; 2 * BLOCK];
        journal.write_at(&empty, BLOCK as u64)?;
        journal.sync()
    }

    /// After a crash: authenticates the progress file, checks it against the image, and
    /// returns how many windows are done. Writes nothing.
    ///
    /// # Errors
    /// [`Error::Integrity`] (exit 4) for a progress file that fails authentication or does not
    /// match the image; I/O errors.
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
            self.src,
            self.dst,
        );
        if (header.kind, header.unit, header.len, header.src, header.dst) != expected {
            return Err(bad("the journal describes another job"));
        }
        let mut newest: Option<Slot> = None;
        for s in 0..2u64 {
            let mut b = vec![0u8; BLOCK];
            if journal.read_at(&mut b, BLOCK as u64 * (1 + s)).is_err() {
                continue;
            }
            let Some(slot) = Slot::decode(&b, &self.keys) else {
                continue;
            };
            let sane = slot.done >= 1
                && slot.done <= self.windows()
                && (slot.done - 1) % 2 == s
                && slot.next.is_some() == (slot.done < self.windows());
            if !sane {
                return Err(bad("a journal slot describes an impossible state"));
            }
            if newest.as_ref().is_none_or(|n| slot.done > n.done) {
                newest = Some(slot);
            }
        }
        let (done, next) = match newest {
            Some(s) => (s.done, s.next),
            None => (0, Some(header.first)),
        };
        if let Some(fp) = next {
            let sample = zeroize::Zeroizing::new(self.sample(payload, self.window_at(done))?);
            if !self.keys.matches(&fp, &sample) {
                return Err(bad(
                    "the part of the image the job continues with was changed: the journal is older than the image",
                ));
            }
        }
        Ok(done)
    }

    /// Runs the job from window `done` (0, or what [`ShiftJob::recover`] returned) to the
    /// end. Cancellation is checked between pieces and leaves the job resumable (the window
    /// under way is redone). Call [`ShiftJob::finish`] after it.
    ///
    /// # Errors
    /// I/O errors (an fsync error stops the job; resume continues it); [`Error::Cancelled`].
    pub fn run(
        &self,
        payload: &dyn Storage,
        journal: &dyn Storage,
        done: u64,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<JobStats> {
        let started = Instant::now();
        progress.start(self.len);
        let mut bytes = self.bytes_done(done);
        progress.advance(bytes);
        let helps = payload.writeback_helps();
        for i in done..self.windows() {
            let w = self.window_at(i);
            let (start, n) = self.range(w);
            let zeroed = std::sync::Mutex::new(Vec::new());
            let ended = with_writeback(
                helps,
                || payload.writeback(),
                |written| {
                    for_each_piece(n, self.threads, cancel, |buf, at| {
                        // Only the source's data is read and transformed; its holes stay
                        // holes at the destination (crate::holes).
                        let off = start + at;
                        let len = buf.len() as u64;
                        let data = crate::holes::widen(
                            &payload.data_ranges(self.src + off, len)?,
                            self.src,
                            off,
                            len,
                            self.unit,
                        );
                        let mut filled = off;
                        for &(a, b) in &data {
                            buf[(filled - off) as usize..(a - off) as usize].fill(0);
                            payload.read_at(
                                &mut buf[(a - off) as usize..(b - off) as usize],
                                self.src + a,
                            )?;
                            filled = b;
                        }
                        buf[(filled - off) as usize..].fill(0);
                        self.cipher
                            .apply_sparse(buf, off, self.unit, &data, false)?;
                        write_sparse(payload, buf, self.dst + off, self.unit, &zeroed)?;
                        written.add(buf.len() as u64);
                        progress.advance(buf.len() as u64);
                        Ok(())
                    })
                },
            )?;
            if ended == Ended::Cancelled {
                return Err(Error::Cancelled {
                    done: bytes,
                    restored: false,
                });
            }
            payload.sync()?;
            give_back(payload, &zeroed)?;
            crate::failpoint::hit("reencrypt-chunk-synced");
            let next = if i + 1 < self.windows() {
                let sample = zeroize::Zeroizing::new(self.sample(payload, self.window_at(i + 1))?);
                Some(self.keys.fingerprint(&sample)?)
            } else {
                None
            };
            let slot = Slot { done: i + 1, next };
            journal.write_at(&slot.encode(&self.keys), BLOCK as u64 * (1 + i % 2))?;
            journal.sync()?;
            crate::failpoint::hit("reencrypt-journal-synced");
            bytes += n;
        }
        progress.finish();
        Ok(JobStats {
            bytes: self.len,
            elapsed: started.elapsed(),
        })
    }

    /// After the last window: clears what the payload left behind, durably. Moving up, the
    /// bytes below `dst` (the old first window: plaintext after an encryption) are zeroed,
    /// durably, then punched (room given back, where the file system can);
    /// moving down, the file is cut to `dst + len`. Harmless to repeat.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(&self, payload: &dyn Storage) -> Result<()> {
        if self.dst > self.src {
            // Zeros over the old bytes, durably, then a hole: room given back, and nothing
            // of the old bytes left in freed blocks.
            let zeros = vec![0u8; PIECE];
            let zeroed = std::sync::Mutex::new(Vec::new());
            let mut at = self.src;
            while at < self.dst {
                let k = (self.dst - at).min(PIECE as u64) as usize;
                write_sparse(payload, &zeros[..k], at, self.unit, &zeroed)?;
                at += k as u64;
            }
            payload.sync()?;
            give_back(payload, &zeroed)?;
        } else {
            payload.set_len(self.dst + self.len)?;
        }
        payload.sync()
    }

    /// Gives the payload file room for the moved payload (zeros up to `dst + len`, so that a
    /// full file system fails here, before the job starts, not half way), durably.
    ///
    /// # Errors
    /// I/O errors (out of space, a file size limit).
    pub fn reserve(&self, payload: &dyn Storage) -> Result<()> {
        let want = self.dst + self.len;
        let have = payload.size()?;
        if have >= want {
            return Ok(());
        }
        let zeros = vec![0u8; PIECE];
        let mut at = have;
        while at < want {
            let k = (want - at).min(PIECE as u64) as usize;
            payload.write_at(&zeros[..k], at)?;
            at += k as u64;
        }
        payload.sync()
    }
}
