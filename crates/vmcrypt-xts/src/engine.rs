//! The XTS-AES-256 engine: batched blocks, tweak chains, parallel sectors.

use aes::Aes256;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use rayon::prelude::*;
use zeroize::Zeroize;

use crate::{Error, SectorSize};

/// AES blocks handed to the cipher per call: large enough to keep the AES-NI pipeline full
/// across data-unit boundaries, small enough to live on the stack (8 KiB of data).
const BATCH_BLOCKS: usize = 512;
/// Bytes per parallel task; a multiple of every data unit size.
const PAR_CHUNK: usize = 256 * 1024;

type Block = Array<u8, aes::cipher::consts::U16>;

/// Whether to encrypt or decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// Plaintext to ciphertext.
    Encrypt,
    /// Ciphertext to plaintext.
    Decrypt,
}

/// Which kernel runs the cipher. Both produce the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// x86-64 with VAES, AVX2 and VPCLMULQDQ: 16 blocks in flight, tweaks in registers.
    Vaes,
    /// Any CPU: batches of 512 blocks through the `aes` crate (AES-NI when present).
    Portable,
}

impl Backend {
    /// The fastest backend this CPU runs, unless `VMCRYPT_XTS_BACKEND=portable` asks for the
    /// portable one (how CI runs the suite on the portable path too).
    pub fn best() -> Backend {
        if std::env::var("VMCRYPT_XTS_BACKEND").is_ok_and(|v| v == "portable") {
            return Backend::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        if crate::vaes::Vaes::detect() {
            return Backend::Vaes;
        }
        Backend::Portable
    }

    /// A short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vaes => "vaes",
            Backend::Portable => "portable",
        }
    }
}

/// An XTS-AES-256 key schedule. Round keys are zeroized on drop (the `aes` crate's `zeroize`
/// feature, and the fast path's own schedules); the type is deliberately neither `Clone` nor
/// `Debug`.
pub struct Xts {
    data: Aes256,
    tweak: Aes256,
    #[cfg(target_arch = "x86_64")]
    fast: Option<crate::vaes::Vaes>,
}

impl Xts {
    /// Builds the key schedule from a 64-byte XTS key (data key, then tweak key), for the
    /// fastest backend of this CPU ([`Backend::best`]).
    ///
    /// # Errors
    /// [`Error::EqualKeyHalves`] when the two halves are equal.
    pub fn new(key: &[u8; 64]) -> Result<Self, Error> {
        Xts::with_backend(key, Backend::best())
    }

    /// Builds the key schedule for a given backend; a backend this CPU cannot run falls back
    /// to the portable one (see [`Xts::backend`]).
    ///
    /// # Errors
    /// [`Error::EqualKeyHalves`] when the two halves are equal.
    pub fn with_backend(key: &[u8; 64], backend: Backend) -> Result<Self, Error> {
        let (k1, k2) = key.split_at(32);
        if subtle_eq(k1, k2) {
            return Err(Error::EqualKeyHalves);
        }
        #[cfg(target_arch = "x86_64")]
        let fast = match backend {
            Backend::Vaes => {
                let mut a = [0u8; 32];
                let mut b = [0u8; 32];
                a.copy_from_slice(k1);
                b.copy_from_slice(k2);
                let v = crate::vaes::Vaes::new(&a, &b);
                a.zeroize();
                b.zeroize();
                v
            }
            Backend::Portable => None,
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = backend;
        Ok(Xts {
            data: aes_of(k1),
            tweak: aes_of(k2),
            #[cfg(target_arch = "x86_64")]
            fast,
        })
    }

    /// The backend this key schedule runs on.
    pub fn backend(&self) -> Backend {
        #[cfg(target_arch = "x86_64")]
        if self.fast.is_some() {
            return Backend::Vaes;
        }
        Backend::Portable
    }

    /// Encrypts one data unit of any whole number of 16-byte blocks under a raw 128-bit tweak
    /// (given as the 16 bytes that are encrypted with the tweak key).
    ///
    /// # Errors
    /// [`Error::UnitNotBlocks`] for an empty unit or one that is not whole blocks.
    pub fn encrypt_unit(&self, unit: &mut [u8], tweak: &[u8; 16]) -> Result<(), Error> {
        self.unit(unit, tweak, Direction::Encrypt)
    }

    /// Decrypts one data unit; see [`Xts::encrypt_unit`].
    ///
    /// # Errors
    /// [`Error::UnitNotBlocks`] for an empty unit or one that is not whole blocks.
    pub fn decrypt_unit(&self, unit: &mut [u8], tweak: &[u8; 16]) -> Result<(), Error> {
        self.unit(unit, tweak, Direction::Decrypt)
    }

    /// Encrypts a buffer of whole data units that starts at `byte_offset` in the payload, on
    /// the calling thread.
    ///
    /// # Errors
    /// [`Error::NotWholeUnits`] or [`Error::MisalignedOffset`]; the buffer is then unchanged.
    pub fn encrypt_sectors(
        &self,
        buf: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
    ) -> Result<(), Error> {
        self.sectors(buf, byte_offset, unit, Direction::Encrypt)
    }

    /// Decrypts a buffer of whole data units; see [`Xts::encrypt_sectors`].
    ///
    /// # Errors
    /// [`Error::NotWholeUnits`] or [`Error::MisalignedOffset`]; the buffer is then unchanged.
    pub fn decrypt_sectors(
        &self,
        buf: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
    ) -> Result<(), Error> {
        self.sectors(buf, byte_offset, unit, Direction::Decrypt)
    }

    /// Like [`Xts::encrypt_sectors`] / [`Xts::decrypt_sectors`], spread over the current rayon
    /// pool (run it inside `ThreadPool::install` to choose the thread count). The output is
    /// byte-identical whatever the number of threads.
    ///
    /// # Errors
    /// [`Error::NotWholeUnits`] or [`Error::MisalignedOffset`]; the buffer is then unchanged.
    pub fn par_sectors(
        &self,
        buf: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
        dir: Direction,
    ) -> Result<(), Error> {
        check_sectors(buf.len(), byte_offset, unit)?;
        buf.par_chunks_mut(PAR_CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| {
                // Chunk offsets are multiples of PAR_CHUNK, itself a multiple of every unit size,
                // and chunk lengths are whole units because the buffer is.
                let offset = byte_offset + (i * PAR_CHUNK) as u64;
                self.crypt_units(chunk, unit.bytes(), |u| sector_tweak(offset, unit, u), dir);
            });
        Ok(())
    }

    /// [`Xts::par_sectors`] in the encrypt direction.
    ///
    /// # Errors
    /// See [`Xts::par_sectors`].
    pub fn par_encrypt_sectors(
        &self,
        buf: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
    ) -> Result<(), Error> {
        self.par_sectors(buf, byte_offset, unit, Direction::Encrypt)
    }

    /// [`Xts::par_sectors`] in the decrypt direction.
    ///
    /// # Errors
    /// See [`Xts::par_sectors`].
    pub fn par_decrypt_sectors(
        &self,
        buf: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
    ) -> Result<(), Error> {
        self.par_sectors(buf, byte_offset, unit, Direction::Decrypt)
    }

    fn unit(&self, unit: &mut [u8], tweak: &[u8; 16], dir: Direction) -> Result<(), Error> {
        if unit.is_empty() || !unit.len().is_multiple_of(16) {
            return Err(Error::UnitNotBlocks { len: unit.len() });
        }
        let t = u128::from_le_bytes(*tweak);
        self.crypt_units(unit, unit.len(), |_| t, dir);
        Ok(())
    }

    fn sectors(
        &self,
        buf: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
        dir: Direction,
    ) -> Result<(), Error> {
        check_sectors(buf.len(), byte_offset, unit)?;
        self.crypt_units(
            buf,
            unit.bytes(),
            |u| sector_tweak(byte_offset, unit, u),
            dir,
        );
        Ok(())
    }

    /// The fast path's schedules, when this key runs on it.
    #[cfg(all(target_arch = "x86_64", feature = "guest-memory"))]
    pub(crate) fn fast(&self) -> Option<&crate::vaes::Vaes> {
        self.fast.as_ref()
    }

    /// The kernel. `data` is a whole number of `unit_len`-byte units (checked by callers),
    /// `unit_len` a non-zero multiple of 16, and `tweak_of(i)` the raw tweak of unit `i`.
    pub(crate) fn crypt_units(
        &self,
        data: &mut [u8],
        unit_len: usize,
        tweak_of: impl Fn(usize) -> u128,
        dir: Direction,
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = &self.fast
            && crate::vaes::Vaes::handles(unit_len)
        {
            v.crypt(data, unit_len, tweak_of, dir == Direction::Encrypt);
            return;
        }
        let mut blocks = [Block::default(); BATCH_BLOCKS];
        let mut tweaks = [0u128; BATCH_BLOCKS];
        let blocks_per_unit = unit_len / 16;
        if blocks_per_unit <= BATCH_BLOCKS {
            // Many whole units per AES call: encrypt all their tweaks at once, expand each
            // into its chain, then run every data block of the batch through AES together.
            let units_per_batch = BATCH_BLOCKS / blocks_per_unit;
            for (b, batch) in data.chunks_mut(units_per_batch * unit_len).enumerate() {
                let n_units = batch.len() / unit_len;
                let first = b * units_per_batch;
                for (u, blk) in blocks[..n_units].iter_mut().enumerate() {
                    *blk = Block::from(tweak_of(first + u).to_le_bytes());
                }
                self.tweak.encrypt_blocks(&mut blocks[..n_units]);
                for u in 0..n_units {
                    let mut t = u128::from_le_bytes(blocks[u].into());
                    for slot in &mut tweaks[u * blocks_per_unit..(u + 1) * blocks_per_unit] {
                        *slot = t;
                        t = mul_alpha(t);
                    }
                }
                self.xex(batch, &mut blocks, &tweaks, dir);
            }
        } else {
            // Units longer than a batch: walk each unit's chain across several batches.
            for (u, unit) in data.chunks_mut(unit_len).enumerate() {
                let mut first = Block::from(tweak_of(u).to_le_bytes());
                self.tweak.encrypt_block(&mut first);
                let mut t = u128::from_le_bytes(first.into());
                for part in unit.chunks_mut(BATCH_BLOCKS * 16) {
                    for slot in &mut tweaks[..part.len() / 16] {
                        *slot = t;
                        t = mul_alpha(t);
                    }
                    self.xex(part, &mut blocks, &tweaks, dir);
                }
            }
        }
        for b in &mut blocks {
            b.as_mut_slice().zeroize();
        }
        tweaks.zeroize();
    }

    /// XOR with the tweaks, one batched AES call, XOR again, back into `data`.
    fn xex(&self, data: &mut [u8], blocks: &mut [Block], tweaks: &[u128], dir: Direction) {
        let n = data.len() / 16;
        let blocks = &mut blocks[..n];
        for ((blk, src), t) in blocks.iter_mut().zip(data.chunks_exact(16)).zip(tweaks) {
            let mut v = [0u8; 16];
            v.copy_from_slice(src);
            *blk = Block::from((u128::from_le_bytes(v) ^ t).to_le_bytes());
        }
        match dir {
            Direction::Encrypt => self.data.encrypt_blocks(blocks),
            Direction::Decrypt => self.data.decrypt_blocks(blocks),
        }
        for ((blk, dst), t) in blocks.iter().zip(data.chunks_exact_mut(16)).zip(tweaks) {
            let v: [u8; 16] = (*blk).into();
            dst.copy_from_slice(&(u128::from_le_bytes(v) ^ t).to_le_bytes());
        }
    }
}

/// Multiplication by the primitive element alpha of GF(2^128), little-endian as IEEE 1619 5.2.
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ (if t >> 127 == 1 { 0x87 } else { 0 })
}

pub(crate) fn sector_tweak(byte_offset: u64, unit: SectorSize, index: usize) -> u128 {
    (byte_offset / 512) as u128 + (index as u128) * (unit.bytes() / 512) as u128
}

pub(crate) fn check_sectors(len: usize, byte_offset: u64, unit: SectorSize) -> Result<(), Error> {
    let u = unit.bytes();
    if !len.is_multiple_of(u) {
        return Err(Error::NotWholeUnits { len, unit: u });
    }
    if !byte_offset.is_multiple_of(u as u64) {
        return Err(Error::MisalignedOffset {
            offset: byte_offset,
            unit: u,
        });
    }
    Ok(())
}

/// Constant-time equality of the two key halves.
/// The AES-256 schedule of a 32-byte half of the XTS key (the copy is wiped).
fn aes_of(half: &[u8]) -> Aes256 {
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    k.copy_from_slice(half);
    Aes256::new((&*k).into())
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_carries_into_0x87() {
        assert_eq!(mul_alpha(1), 2);
        assert_eq!(mul_alpha(1u128 << 127), 0x87);
        assert_eq!(mul_alpha((1u128 << 127) | 1), 0x87 ^ 2);
    }

    #[test]
    fn equal_halves_refused() {
        assert_eq!(Xts::new(&[7u8; 64]).err(), Some(Error::EqualKeyHalves));
    }

    #[test]
    fn bad_lengths_refused_and_buffer_unchanged() {
        let mut key = [1u8; 64];
        key[63] = 2;
        let xts = Xts::new(&key).expect("halves differ");
        let mut buf = vec![5u8; 1000];
        assert!(matches!(
            xts.encrypt_sectors(&mut buf, 0, SectorSize::S512),
            Err(Error::NotWholeUnits { .. })
        ));
        assert!(buf.iter().all(|b| *b == 5));
        let mut buf = vec![5u8; 4096];
        assert!(matches!(
            xts.encrypt_sectors(&mut buf, 512, SectorSize::S4096),
            Err(Error::MisalignedOffset { .. })
        ));
        assert!(matches!(
            xts.encrypt_unit(&mut buf[..15], &[0; 16]),
            Err(Error::UnitNotBlocks { len: 15 })
        ));
        assert!(matches!(
            xts.encrypt_unit(&mut [], &[0; 16]),
            Err(Error::UnitNotBlocks { len: 0 })
        ));
        assert!(buf.iter().all(|b| *b == 5));
    }

    #[test]
    fn sector_tweaks_follow_dm_crypt() {
        assert_eq!(sector_tweak(0, SectorSize::S4096, 2), 16);
        assert_eq!(sector_tweak(8192, SectorSize::S4096, 1), 24);
        assert_eq!(sector_tweak(1024, SectorSize::S512, 3), 5);
    }
}
