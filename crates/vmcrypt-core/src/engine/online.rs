//! The journal of an online job: a deep rekey, an encryption or a decryption of a disk that
//! guests keep writing (issue 18).
//!
//! ```text
//! header (4096 B at 0):  as the offline journal's (journal.rs), kind 4 (deep rekey),
//!                        5 (encryption) or 6 (decryption), chunk = the window;
//!                        the fingerprint field is unused (online, nothing ahead of the
//!                        boundary stays as it was)
//! slot s (at 4096 + s * (8192 + window)), s = (seq - 1) % 2:
//!   header (4096 B):     as the offline slot's: seq (window index + 1), offset, length,
//!                        holds = final, the data's fingerprint (128 KiB pieces), no next
//!   done (4096 B):       "VMCDONE1" | u64 seq | HMAC-SHA256 [32]
//!   data (length bytes): the window as it is stored after the job (under the new key, or
//!                        plaintext for a decryption)
//! ```
//!
//! Per window, in this order: the job locks the window (guests wait for it), records the
//! window's new bytes in a slot (durable), writes them over the payload (durable), marks the
//! slot done (durable), and unlocks the window.
//!
//! After a crash, the newest slot whose header and data authenticate says where the job was:
//! every window before it is done, every window after it untouched. If its done block names
//! it, its window is done too, and guests may have written into it since: nothing is written
//! back (replaying the slot would revert their writes). If not, the window was locked when the
//! crash came, so no guest wrote into it after the slot was made, and writing the slot back
//! makes it whole. A slot torn by the crash fails its MAC; the one before it rules, and its
//! done block is there (a slot is only written once the window before it is done).

use zeroize::Zeroizing;

use super::Storage;
use super::journal::{BLOCK, Fingerprint, Header, Holds, JournalKeys, MAC_LEN, Slot, get_u64};
use crate::Result;

const DONE_MAGIC: &[u8; 8] = b"VMCDONE1";

/// What an online job does to every unit of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobKind {
    /// A deep rekey: every unit to a new DEK.
    DeepRekey,
    /// An encryption: every plaintext unit under the disk's new DEK.
    Encrypt,
    /// A decryption: every unit back to plaintext.
    Decrypt,
}

impl JobKind {
    /// The job's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::DeepRekey => "deep rekey",
            JobKind::Encrypt => "encryption",
            JobKind::Decrypt => "decryption",
        }
    }

    /// The journal's kind, in its authenticated header: a journal of one kind of job is never
    /// taken for another's.
    fn journal_kind(self) -> u8 {
        match self {
            JobKind::DeepRekey => 4,
            JobKind::Encrypt => 5,
            JobKind::Decrypt => 6,
        }
    }
}

/// A slot's data is fingerprinted in pieces of this size, in parallel: a window of 1 MiB
/// then keeps every core busy (the offline journal's 1 MiB pieces would leave one idle).
const PIECE: usize = 128 << 10;

/// The largest window a journal may describe (a guest waits for at most one window).
pub const MAX_WINDOW: u64 = 64 << 20;

/// Where an online job stands after a crash.
#[derive(Debug)]
pub struct Recovered {
    /// Guest offset below which every unit is under the new key (once `replay` is written).
    pub boundary: u64,
    /// A window to write back over the payload first (its offset and its bytes under the new
    /// key), when the crash came while it was locked.
    pub replay: Option<(u64, Zeroizing<Vec<u8>>)>,
}

/// The journal of one online job over `len` payload bytes in windows of `window` bytes.
pub struct OnlineJournal {
    keys: JournalKeys,
    kind: JobKind,
    unit: u32,
    len: u64,
    window: u64,
}

impl OnlineJournal {
    /// A journal for a job of `kind` whose keys are `keys` (from its DEKs and job id).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a window that is not whole 4096-byte blocks or a
    /// length that is not whole units.
    pub fn new(
        kind: JobKind,
        keys: JournalKeys,
        unit: u32,
        len: u64,
        window: u64,
    ) -> Result<OnlineJournal> {
        let u = u64::from(unit);
        if u == 0
            || !len.is_multiple_of(u)
            || window == 0
            || window > MAX_WINDOW
            || !window.is_multiple_of(4096)
        {
            return Err(crate::Error::input(
                "online job: the window or the length is not whole units",
            ));
        }
        Ok(OnlineJournal {
            keys,
            kind,
            unit,
            len,
            window,
        })
    }

    /// The journal of a job under way, as its header (authenticated) describes it: the
    /// window is the one the job started with.
    ///
    /// # Errors
    /// [`crate::Error::Integrity`] for a header that fails authentication or describes an
    /// impossible window; I/O errors.
    pub fn open(
        kind: JobKind,
        keys: JournalKeys,
        unit: u32,
        len: u64,
        journal: &dyn Storage,
    ) -> Result<OnlineJournal> {
        let bad = super::journal::refused;
        let hb = super::journal::header_block(journal)?;
        let header = Header::decode(&hb, &keys).ok_or_else(|| {
            bad("the journal header fails authentication (altered, or another job's)")
        })?;
        if header.kind != kind.journal_kind() || header.chunk > MAX_WINDOW {
            return Err(bad("the journal describes another job"));
        }
        OnlineJournal::new(kind, keys, unit, len, header.chunk)
            .map_err(|_| bad("the journal describes an impossible window"))
    }

    /// The window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The journal file's size.
    pub fn journal_len(&self) -> u64 {
        BLOCK as u64 + 2 * (2 * BLOCK as u64 + self.window)
    }

    fn slot_pos(&self, seq: u64) -> u64 {
        BLOCK as u64 + ((seq - 1) % 2) * (2 * BLOCK as u64 + self.window)
    }

    fn window_at(&self, off: u64) -> u64 {
        (self.len - off).min(self.window)
    }

    fn header(&self) -> Header {
        Header {
            kind: self.kind.journal_kind(),
            unit: self.unit,
            payload_len: self.len,
            chunk: self.window,
            first: Fingerprint::default(),
        }
    }

    /// Writes the header and empty slots, durably. Call once, when the job starts, before the
    /// first window.
    ///
    /// # Errors
    /// I/O errors.
    pub fn begin(&self, journal: &dyn Storage) -> Result<()> {
        journal.write_at(&self.header().encode(&self.keys), 0)?;
        let empty = vec![0u8; 2 * BLOCK];
        for seq in 1..=2 {
            journal.write_at(&empty, self.slot_pos(seq))?;
        }
        journal.sync()
    }

    /// Records the new bytes of the window at `offset` (locked), durably: the step before
    /// they are written over the payload.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a window that is not the one at `offset`; I/O
    /// errors.
    pub fn record(&self, journal: &dyn Storage, offset: u64, data: &[u8]) -> Result<()> {
        if !offset.is_multiple_of(self.window)
            || offset >= self.len
            || data.len() as u64 != self.window_at(offset)
        {
            return Err(crate::Error::input(
                "online job: a record that is not the window at its offset",
            ));
        }
        let seq = offset / self.window + 1;
        let pos = self.slot_pos(seq);
        // The data first, piece by piece as each is fingerprinted (on every core), then the
        // header that authenticates it; the sync makes both durable, and a crash before it
        // leaves a slot that fails its MAC, whatever part of it was written.
        let data_at = pos + 2 * BLOCK as u64;
        let fingerprint = self.keys.fingerprint_visiting(data, PIECE, |piece, off| {
            journal.write_at(piece, data_at + off)
        })?;
        let slot = Slot {
            seq,
            offset,
            len: data.len() as u64,
            holds: Holds::Final,
            data: fingerprint,
            next: None,
        };
        journal.write_at(&slot.encode(&self.keys), pos)?;
        journal.sync()
    }

    /// Marks the window at `offset` done, durably: its new bytes are on the payload, and
    /// guests may write into it again once this returns.
    ///
    /// # Errors
    /// I/O errors.
    pub fn mark_done(&self, journal: &dyn Storage, offset: u64) -> Result<()> {
        let seq = offset / self.window + 1;
        let mut b = DONE_MAGIC.to_vec();
        b.extend_from_slice(&seq.to_be_bytes());
        journal.write_at(&self.keys.seal(b), self.slot_pos(seq) + BLOCK as u64)?;
        journal.sync()
    }

    fn done_seq(&self, journal: &dyn Storage, seq: u64) -> Option<u64> {
        let mut b = vec![0u8; BLOCK];
        journal
            .read_at(&mut b, self.slot_pos(seq) + BLOCK as u64)
            .ok()?;
        if b.get(..8)? != DONE_MAGIC {
            return None;
        }
        let mut at = 8;
        let s = get_u64(&b, &mut at)?;
        self.keys
            .check(&b[..at], b.get(at..at + MAC_LEN)?)
            .then_some(s)
    }

    /// After a crash: authenticates the journal and says where the job stands. Reads only.
    ///
    /// # Errors
    /// [`crate::Error::Integrity`] for a journal that fails authentication or describes
    /// another job or an impossible window; I/O errors.
    pub fn recover(&self, journal: &dyn Storage) -> Result<Recovered> {
        let bad = super::journal::refused;
        let hb = super::journal::header_block(journal)?;
        let header = Header::decode(&hb, &self.keys).ok_or_else(|| {
            bad("the journal header fails authentication (altered, or another job's)")
        })?;
        let h = self.header();
        if (header.kind, header.unit, header.payload_len, header.chunk)
            != (h.kind, h.unit, h.payload_len, h.chunk)
        {
            return Err(bad("the journal describes another job"));
        }
        let mut newest: Option<(Slot, Zeroizing<Vec<u8>>)> = None;
        for seq_slot in 1..=2u64 {
            let pos = self.slot_pos(seq_slot);
            let mut b = vec![0u8; BLOCK];
            if journal.read_at(&mut b, pos).is_err() {
                continue;
            }
            let Some(slot) = Slot::decode(&b, &self.keys) else {
                continue;
            };
            let sane = slot.offset.is_multiple_of(self.window)
                && slot.offset < self.len
                && slot.len == self.window_at(slot.offset)
                && slot.seq == slot.offset / self.window + 1
                && self.slot_pos(slot.seq) == pos
                && slot.holds == Holds::Final;
            if !sane {
                return Err(bad("a journal slot describes an impossible window"));
            }
            let mut data = Zeroizing::new(vec![0u8; slot.len as usize]);
            if journal.read_at(&mut data, pos + 2 * BLOCK as u64).is_err()
                || !self.keys.matches_in(&slot.data, &data, PIECE)
            {
                continue;
            }
            if newest.as_ref().is_none_or(|(n, _)| slot.seq > n.seq) {
                newest = Some((slot, data));
            }
        }
        let Some((slot, data)) = newest else {
            return Ok(Recovered {
                boundary: 0,
                replay: None,
            });
        };
        let end = slot.offset + slot.len;
        let replay =
            (self.done_seq(journal, slot.seq) != Some(slot.seq)).then_some((slot.offset, data));
        Ok(Recovered {
            boundary: end,
            replay,
        })
    }
}
