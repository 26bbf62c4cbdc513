//! Out of place between the caller's buffer and memory shared with a guest.
//!
//! A vhost-user backend gets guest memory as `vm_memory::VolatileSlice`s: memory that the
//! guest (another party) may read and write at any time, so no Rust reference may cover it.
//! Decrypting a read in the backend's buffer and then copying it out costs a second pass over
//! every byte; so does copying a write in before encrypting it. Here the cipher reads one side
//! and writes the other directly:
//!
//! - [`Xts::decrypt_sectors_into`]: ciphertext in the caller's buffer, plaintext stored into
//!   guest memory. Guest memory is only written, each byte once.
//! - [`Xts::encrypt_sectors_from`]: plaintext loaded from guest memory, ciphertext stored into
//!   the caller's buffer. Guest memory is only read, each byte once, and never modified.
//!
//! Both run the same kernels as the in-place calls and give the same bytes (tests below). The
//! VAES kernel takes raw pointers from the slices' guards; the portable kernel bounces through
//! a small zeroized stack buffer with the slices' own copy methods.
#![allow(unsafe_code)]

use vm_memory::bitmap::BitmapSlice;
use vm_memory::volatile_memory::VolatileSlice;
use zeroize::Zeroizing;

use crate::engine::{check_sectors, sector_tweak};
use crate::{Direction, Error, SectorSize, Xts};

/// The portable path's bounce buffer: a multiple of every data unit.
const BOUNCE: usize = 16 * 1024;

impl Xts {
    /// Decrypts `src`, whole data units starting at `byte_offset` in the payload, into `dst`
    /// (guest memory of the same length). `src` is not modified; `dst` is only written.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NotWholeUnits`] or [`Error::MisalignedOffset`];
    /// nothing is written then.
    pub fn decrypt_sectors_into<B: BitmapSlice>(
        &self,
        src: &[u8],
        dst: &VolatileSlice<'_, B>,
        byte_offset: u64,
        unit: SectorSize,
    ) -> Result<(), Error> {
        check_pair(src.len(), dst.len(), byte_offset, unit)?;
        let u = unit.bytes();
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = self.fast_for(u) {
            let guard = dst.ptr_guard_mut();
            // SAFETY: `src` is valid for reads of its length; the guard's pointer is valid for
            // writes of `dst.len()` (= src.len()) bytes while the guard lives (vm-memory checked
            // the slice against its mapping). The ranges do not overlap: a VolatileSlice covers
            // memory that no Rust reference covers (guest memory, or an exclusive borrow).
            unsafe {
                v.crypt_raw(
                    src.as_ptr(),
                    guard.as_ptr(),
                    src.len(),
                    u,
                    |i| sector_tweak(byte_offset, unit, i),
                    false,
                );
            }
            dst.bitmap().mark_dirty(0, src.len());
            return Ok(());
        }
        let mut bounce = Zeroizing::new([0u8; BOUNCE]);
        for (i, chunk) in src.chunks(BOUNCE).enumerate() {
            let at = i * BOUNCE;
            let b = &mut bounce[..chunk.len()];
            b.copy_from_slice(chunk);
            let offset = byte_offset + at as u64;
            self.crypt_units(b, u, |k| sector_tweak(offset, unit, k), Direction::Decrypt);
            // In range: at + chunk.len() <= src.len() = dst.len().
            if let Ok(part) = dst.subslice(at, chunk.len()) {
                part.copy_from(b);
            }
        }
        Ok(())
    }

    /// Encrypts `src` (guest memory), whole data units starting at `byte_offset`, into `dst` (a
    /// buffer of the same length). Guest memory is only read, never modified.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::NotWholeUnits`] or [`Error::MisalignedOffset`];
    /// nothing is written then.
    pub fn encrypt_sectors_from<B: BitmapSlice>(
        &self,
        src: &VolatileSlice<'_, B>,
        dst: &mut [u8],
        byte_offset: u64,
        unit: SectorSize,
    ) -> Result<(), Error> {
        check_pair(src.len(), dst.len(), byte_offset, unit)?;
        let u = unit.bytes();
        #[cfg(target_arch = "x86_64")]
        if let Some(v) = self.fast_for(u) {
            let guard = src.ptr_guard();
            // SAFETY: the guard's pointer is valid for reads of `src.len()` bytes while it
            // lives; `dst` is valid for writes of its length (= src.len()) and, being an
            // exclusive borrow, overlaps no VolatileSlice.
            unsafe {
                v.crypt_raw(
                    guard.as_ptr(),
                    dst.as_mut_ptr(),
                    dst.len(),
                    u,
                    |i| sector_tweak(byte_offset, unit, i),
                    true,
                );
            }
            return Ok(());
        }
        src.copy_to(dst);
        self.crypt_units(
            dst,
            u,
            |k| sector_tweak(byte_offset, unit, k),
            Direction::Encrypt,
        );
        Ok(())
    }
}

impl Xts {
    /// The VAES kernel, when this key runs on it and it takes units of `unit_len` bytes.
    #[cfg(target_arch = "x86_64")]
    fn fast_for(&self, unit_len: usize) -> Option<&crate::vaes::Vaes> {
        self.fast().filter(|_| crate::vaes::Vaes::handles(unit_len))
    }
}

fn check_pair(src: usize, dst: usize, byte_offset: u64, unit: SectorSize) -> Result<(), Error> {
    if src != dst {
        return Err(Error::LengthMismatch { src, dst });
    }
    check_sectors(src, byte_offset, unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    fn keys() -> Vec<Xts> {
        let key: [u8; 64] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        vec![
            Xts::with_backend(&key, Backend::best()).expect("key"),
            Xts::with_backend(&key, Backend::Portable).expect("key"),
        ]
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn out_of_place_matches_in_place_both_ways() {
        for xts in keys() {
            for (unit, len, off) in [
                (SectorSize::S512, 512, 0u64),
                (SectorSize::S512, 40 * 512, 7 * 512),
                (SectorSize::S4096, 4096, 4096),
                (SectorSize::S4096, 17 * 4096, 1 << 30),
                (SectorSize::S4096, 64 * 4096, 0),
            ] {
                let plain = pattern(len);
                let mut sealed = plain.clone();
                xts.encrypt_sectors(&mut sealed, off, unit)
                    .expect("in place");

                let mut guest = plain.clone();
                let mut out = vec![0u8; len];
                xts.encrypt_sectors_from(&VolatileSlice::from(&mut guest[..]), &mut out, off, unit)
                    .expect("from guest");
                assert_eq!(out, sealed, "{:?} {unit:?} {len} {off}", xts.backend());
                assert_eq!(guest, plain, "guest memory of a write is never modified");

                let mut back = vec![0xeeu8; len];
                xts.decrypt_sectors_into(&sealed, &VolatileSlice::from(&mut back[..]), off, unit)
                    .expect("into guest");
                assert_eq!(back, plain, "{:?} {unit:?} {len} {off}", xts.backend());
            }
        }
    }

    #[test]
    fn bad_shapes_refused_and_nothing_written() {
        let xts = &keys()[0];
        let src = pattern(8192);
        let mut dst = vec![9u8; 4096];
        let r = xts.decrypt_sectors_into(
            &src,
            &VolatileSlice::from(&mut dst[..]),
            0,
            SectorSize::S4096,
        );
        assert_eq!(
            r,
            Err(Error::LengthMismatch {
                src: 8192,
                dst: 4096
            })
        );
        let r = xts.decrypt_sectors_into(
            &src[..4096],
            &VolatileSlice::from(&mut dst[..]),
            512,
            SectorSize::S4096,
        );
        assert!(matches!(r, Err(Error::MisalignedOffset { .. })));
        let mut odd = vec![1u8; 1000];
        let mut out = vec![9u8; 1000];
        let r = xts.encrypt_sectors_from(
            &VolatileSlice::from(&mut odd[..]),
            &mut out,
            0,
            SectorSize::S512,
        );
        assert!(matches!(r, Err(Error::NotWholeUnits { .. })));
        assert!(dst.iter().all(|b| *b == 9) && out.iter().all(|b| *b == 9));
    }
}
