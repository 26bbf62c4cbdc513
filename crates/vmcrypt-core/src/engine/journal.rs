//! The journal of an in-place job: a header, then two slots used alternately.
//!
//! ```text
//! header (4096 B at 0):  "VMCJRNL1" | u32 version | u8 kind | u32 unit | u64 payload length
//!                        | u64 chunk | job id [16] | fingerprint of chunk 0 before the job
//!                        (nonce [12], tag [16]) | HMAC-SHA256 [32] over all of the above
//! slot s (at 4096 + s * (4096 + chunk)):
//!   header (4096 B):     "VMCSLOT1" | u64 seq (chunk index + 1) | u64 offset | u64 length
//!                        | u8 holds (1 = the chunk's final bytes, 2 = its original bytes)
//!                        | u8 has next | data fingerprint (nonce, tag) | fingerprint of the
//!                        next chunk before the job (nonce, tag) | HMAC-SHA256 [32]
//!   data (length bytes)
//! ```
//!
//! Fingerprints are GMAC tags (AES-256-GCM over the bytes as associated data, random nonce) and
//! the HMACs cover the job id: both keys come from the job's DEKs, so a journal cannot be forged
//! or moved to another job without them, and a changed byte is detected.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::random_fill;
use crate::{Error, Result};

/// Bytes of the journal header and of each slot header.
pub const BLOCK: usize = 4096;
const HEADER_MAGIC: &[u8; 8] = b"VMCJRNL1";
const SLOT_MAGIC: &[u8; 8] = b"VMCSLOT1";
const VERSION: u32 = 1;
pub(crate) const MAC_LEN: usize = 32;

/// The refusal of a journal that fails a check (exit 4; the caller names the file).
pub(crate) fn refused(what: &str) -> Error {
    Error::Integrity {
        path: "journal".into(),
        reason: what.to_string(),
    }
}

/// The first block of a journal, which holds its header.
pub(crate) fn header_block(journal: &dyn super::Storage) -> Result<Vec<u8>> {
    let mut hb = vec![0u8; BLOCK];
    journal
        .read_at(&mut hb, 0)
        .map_err(|_| refused("the journal is missing or truncated"))?;
    Ok(hb)
}

/// A keyed fingerprint: GMAC nonce and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// Nonce.
    pub nonce: [u8; 12],
    /// Tag.
    pub tag: [u8; 16],
}

/// Fingerprints are computed over pieces of this size, in parallel.
const PIECE: usize = 1 << 20;

/// The nonce of piece `i` (and of the final combination, `u32::MAX`).
fn nonce_for(base: &[u8; 12], i: u32) -> [u8; 12] {
    let mut n = *base;
    let c = u32::from_be_bytes([n[8], n[9], n[10], n[11]]) ^ i;
    n[8..].copy_from_slice(&c.to_be_bytes());
    n
}

/// The keys of one job's journal.
pub struct JournalKeys {
    gmac: Aes256Gcm,
    mac_key: zeroize::Zeroizing<[u8; 32]>,
    job_id: [u8; 16],
}

impl JournalKeys {
    /// Derives the keys from the job's key material (the DEKs, in a fixed order) and job id.
    pub fn derive(ikm: &[u8], job_id: [u8; 16]) -> Result<Self> {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(&job_id), ikm);
        let mut okm = zeroize::Zeroizing::new([0u8; 64]);
        hk.expand(b"vmcrypt journal v1", okm.as_mut())
            .map_err(|_| Error::input("HKDF length"))?;
        let gmac = Aes256Gcm::new_from_slice(&okm[..32]).map_err(|_| Error::input("GMAC key"))?;
        let mut mac_key = zeroize::Zeroizing::new([0u8; 32]);
        mac_key.copy_from_slice(&okm[32..]);
        Ok(JournalKeys {
            gmac,
            mac_key,
            job_id,
        })
    }

    /// The job id.
    pub fn job_id(&self) -> [u8; 16] {
        self.job_id
    }

    /// A fresh fingerprint of `data`: GMAC tags of its 1 MiB pieces (computed in parallel on
    /// the current rayon pool, nonces = a random base with the piece index), then a GMAC of
    /// those tags.
    pub fn fingerprint(&self, data: &[u8]) -> Result<Fingerprint> {
        self.fingerprint_in(data, PIECE)
    }

    /// Whether `data` has fingerprint `fp`.
    pub fn matches(&self, fp: &Fingerprint, data: &[u8]) -> bool {
        self.matches_in(fp, data, PIECE)
    }

    /// [`JournalKeys::fingerprint`] over pieces of `piece` bytes: a smaller piece spreads a
    /// small buffer (an online job's window) over more cores. A fingerprint only matches
    /// with the piece size it was taken with.
    pub fn fingerprint_in(&self, data: &[u8], piece: usize) -> Result<Fingerprint> {
        self.fingerprint_visiting(data, piece, |_, _| Ok(()))
    }

    /// [`JournalKeys::fingerprint_in`] that also calls `visit(piece, its offset in data)` on
    /// each piece once it is fingerprinted, on the same thread while the piece is in cache
    /// (to write it out, say).
    pub fn fingerprint_visiting(
        &self,
        data: &[u8],
        piece: usize,
        visit: impl Fn(&[u8], u64) -> Result<()> + Sync,
    ) -> Result<Fingerprint> {
        let mut fp = Fingerprint::default();
        random_fill(&mut fp.nonce)?;
        fp.tag = self.combined(&fp.nonce, data, piece, visit)?;
        Ok(fp)
    }

    /// [`JournalKeys::matches`] for a fingerprint taken over pieces of `piece` bytes.
    pub fn matches_in(&self, fp: &Fingerprint, data: &[u8], piece: usize) -> bool {
        self.combined(&fp.nonce, data, piece, |_, _| Ok(()))
            .is_ok_and(|t| subtle::ConstantTimeEq::ct_eq(&t[..], &fp.tag[..]).into())
    }

    /// The tags of `data`'s pieces (in parallel; `visit` sees each piece after its tag), then
    /// the tag of those tags.
    fn combined(
        &self,
        base: &[u8; 12],
        data: &[u8],
        piece: usize,
        visit: impl Fn(&[u8], u64) -> Result<()> + Sync,
    ) -> Result<[u8; 16]> {
        use rayon::prelude::*;
        let piece = piece.max(1);
        let tags: Vec<[u8; 16]> = data
            .par_chunks(piece)
            .enumerate()
            .map(|(i, p)| {
                let t = self.piece_tag(base, i, p)?;
                visit(p, (i * piece) as u64)?;
                Ok(t)
            })
            .collect::<Result<_>>()?;
        self.finish(base, &tags)
    }

    /// Transforms `data` in place, 1 MiB piece by piece in parallel, and fingerprints each piece
    /// while it is still in cache: before the transform (`after` false) or after it. The
    /// result equals [`JournalKeys::fingerprint`] of the bytes fingerprinted. `transform` gets
    /// each piece and its offset within `data`.
    pub fn transform_and_fingerprint(
        &self,
        data: &mut [u8],
        after: bool,
        transform: impl Fn(&mut [u8], u64) -> Result<()> + Sync,
    ) -> Result<Fingerprint> {
        use rayon::prelude::*;
        let mut fp = Fingerprint::default();
        random_fill(&mut fp.nonce)?;
        let base = fp.nonce;
        let pieces: Vec<[u8; 16]> = data
            .par_chunks_mut(PIECE)
            .enumerate()
            .map(|(i, piece)| {
                if after {
                    transform(piece, (i * PIECE) as u64)?;
                    self.piece_tag(&base, i, piece)
                } else {
                    let t = self.piece_tag(&base, i, piece)?;
                    transform(piece, (i * PIECE) as u64)?;
                    Ok(t)
                }
            })
            .collect::<Result<_>>()?;
        fp.tag = self.finish(&base, &pieces)?;
        Ok(fp)
    }

    fn piece_tag(&self, base: &[u8; 12], i: usize, piece: &[u8]) -> Result<[u8; 16]> {
        let n = nonce_for(base, i as u32);
        let tag = self
            .gmac
            .encrypt_inout_detached(&Nonce::from(n), piece, InOutBuf::from(&mut [][..]))
            .map_err(|_| Error::input("fingerprint"))?;
        Ok(tag.into())
    }

    fn finish(&self, base: &[u8; 12], pieces: &[[u8; 16]]) -> Result<[u8; 16]> {
        let all: Vec<u8> = pieces.concat();
        let n = nonce_for(base, u32::MAX);
        let tag = self
            .gmac
            .encrypt_inout_detached(&Nonce::from(n), &all, InOutBuf::from(&mut [][..]))
            .map_err(|_| Error::input("fingerprint"))?;
        Ok(tag.into())
    }

    /// A record block: `fields`, their MAC, zeros up to [`BLOCK`] bytes.
    pub(crate) fn seal(&self, mut fields: Vec<u8>) -> Vec<u8> {
        let mac = self.mac(&fields);
        fields.extend_from_slice(&mac);
        fields.resize(BLOCK, 0);
        fields
    }

    fn mac(&self, fields: &[u8]) -> [u8; MAC_LEN] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_ref())
            .expect("HMAC takes any key length");
        m.update(&self.job_id);
        m.update(fields);
        m.finalize().into_bytes().into()
    }

    pub(crate) fn check(&self, fields: &[u8], mac: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.mac(fields).as_slice().ct_eq(mac).into()
    }

    /// The end of a header block at `at`: this job's id, a fingerprint, then the MAC over
    /// every byte before it. The fingerprint, if all three hold.
    pub(crate) fn header_tail(&self, b: &[u8], mut at: usize) -> Option<Fingerprint> {
        if b.get(at..at + 16)? != self.job_id {
            return None;
        }
        at += 16;
        let fp = get_fp(b, &mut at)?;
        self.check(&b[..at], b.get(at..at + MAC_LEN)?).then_some(fp)
    }
}

/// The journal header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 encrypt, 2 decrypt, 3 rekey.
    pub kind: u8,
    /// Data unit size.
    pub unit: u32,
    /// Payload length.
    pub payload_len: u64,
    /// Chunk size.
    pub chunk: u64,
    /// Fingerprint of chunk 0 before the job.
    pub first: Fingerprint,
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// The chunk's bytes after the job (written back, then the job continues after it).
    Final,
    /// The chunk's bytes before the job (written back, then the job redoes the chunk).
    Original,
}

/// A slot header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Chunk index + 1.
    pub seq: u64,
    /// Payload offset of the chunk.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// What the data is.
    pub holds: Holds,
    /// Fingerprint of the data.
    pub data: Fingerprint,
    /// Fingerprint of the next chunk before the job, if there is a next chunk.
    pub next: Option<Fingerprint>,
}

pub(crate) fn put_fp(b: &mut Vec<u8>, fp: &Fingerprint) {
    b.extend_from_slice(&fp.nonce);
    b.extend_from_slice(&fp.tag);
}

pub(crate) fn get_fp(b: &[u8], at: &mut usize) -> Option<Fingerprint> {
    let nonce = b.get(*at..*at + 12)?.try_into().ok()?;
    let tag = b.get(*at + 12..*at + 28)?.try_into().ok()?;
    *at += 28;
    Some(Fingerprint { nonce, tag })
}

pub(crate) fn get_u64(b: &[u8], at: &mut usize) -> Option<u64> {
    let v = u64::from_be_bytes(b.get(*at..*at + 8)?.try_into().ok()?);
    *at += 8;
    Some(v)
}

/// The chunk size a journal header claims, read before it can be authenticated (the job that
/// authenticates it needs the chunk size; a lie there fails that authentication).
pub fn peek_chunk(b: &[u8]) -> Option<u64> {
    if b.get(..8)? != HEADER_MAGIC {
        return None;
    }
    let mut at = 8 + 4 + 1 + 4 + 8;
    get_u64(b, &mut at).filter(|c| *c >= 4096 && c.is_multiple_of(4096))
}

impl Header {
    /// The 4096-byte block, MAC included.
    pub fn encode(&self, keys: &JournalKeys) -> Vec<u8> {
        let mut b = HEADER_MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.push(self.kind);
        b.extend_from_slice(&self.unit.to_be_bytes());
        b.extend_from_slice(&self.payload_len.to_be_bytes());
        b.extend_from_slice(&self.chunk.to_be_bytes());
        b.extend_from_slice(&keys.job_id);
        put_fp(&mut b, &self.first);
        keys.seal(b)
    }

    /// Parses and authenticates a header block.
    pub fn decode(b: &[u8], keys: &JournalKeys) -> Option<Header> {
        if b.get(..8)? != HEADER_MAGIC {
            return None;
        }
        let mut at = 8;
        if u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) != VERSION {
            return None;
        }
        at += 4;
        let kind = *b.get(at)?;
        at += 1;
        let unit = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let payload_len = get_u64(b, &mut at)?;
        let chunk = get_u64(b, &mut at)?;
        let first = keys.header_tail(b, at)?;
        Some(Header {
            kind,
            unit,
            payload_len,
            chunk,
            first,
        })
    }
}

impl Slot {
    /// The 4096-byte slot header, MAC included.
    pub fn encode(&self, keys: &JournalKeys) -> Vec<u8> {
        let mut b = SLOT_MAGIC.to_vec();
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.offset.to_be_bytes());
        b.extend_from_slice(&self.len.to_be_bytes());
        b.push(match self.holds {
            Holds::Final => 1,
            Holds::Original => 2,
        });
        b.push(u8::from(self.next.is_some()));
        put_fp(&mut b, &self.data);
        put_fp(&mut b, &self.next.unwrap_or_default());
        keys.seal(b)
    }

    /// Parses and authenticates a slot header; None if it is empty, torn or forged.
    pub fn decode(b: &[u8], keys: &JournalKeys) -> Option<Slot> {
        if b.get(..8)? != SLOT_MAGIC {
            return None;
        }
        let mut at = 8;
        let seq = get_u64(b, &mut at)?;
        let offset = get_u64(b, &mut at)?;
        let len = get_u64(b, &mut at)?;
        let holds = match *b.get(at)? {
            1 => Holds::Final,
            2 => Holds::Original,
            _ => return None,
        };
        let has_next = *b.get(at + 1)? == 1;
        at += 2;
        let data = get_fp(b, &mut at)?;
        let next = get_fp(b, &mut at)?;
        if !keys.check(&b[..at], b.get(at..at + MAC_LEN)?) {
            return None;
        }
        Some(Slot {
            seq,
            offset,
            len,
            holds,
            data,
            next: has_next.then_some(next),
        })
    }
}
