//! What a run of a served disk's units is under: XTS with a DEK, or nothing. Nothing is a
//! plaintext disk served as such (`vmcrypt serve --plaintext`), the side an online encrypt
//! starts from and the side an online decrypt goes to. The live paths ask a
//! [`super::Route`] for the cipher of each run and never look at which one it is.

use vmcrypt_xts::SectorSize;

use crate::Result;
use crate::secret::Schedule;

/// The cipher of a run of units.
pub(crate) enum UnitCipher {
    /// AES-256-XTS under a DEK's schedule.
    Xts(Schedule),
    /// Stored as the guest sees it.
    Plain,
}

impl UnitCipher {
    /// Enciphers whole units at payload offset `at` in place.
    pub(crate) fn encrypt_sectors(&self, buf: &mut [u8], at: u64, unit: SectorSize) -> Result<()> {
        match self {
            UnitCipher::Xts(k) => Ok(k.encrypt_sectors(buf, at, unit)?),
            UnitCipher::Plain => Ok(()),
        }
    }

    /// Deciphers whole units at payload offset `at` in place.
    pub(crate) fn decrypt_sectors(&self, buf: &mut [u8], at: u64, unit: SectorSize) -> Result<()> {
        match self {
            UnitCipher::Xts(k) => Ok(k.decrypt_sectors(buf, at, unit)?),
            UnitCipher::Plain => Ok(()),
        }
    }

    /// Deciphers units read from the payload, holes (all-zero units) left as zeros
    /// (crate::holes): plaintext needs nothing, since a hole reads as zeros there too.
    pub(crate) fn open_units(&self, buf: &mut [u8], at: u64, unit: SectorSize) -> Result<()> {
        match self {
            UnitCipher::Xts(k) => crate::holes::decrypt(k, buf, at, unit),
            UnitCipher::Plain => Ok(()),
        }
    }

    /// Deciphers `src` into guest memory (only stored to).
    #[cfg(feature = "guest-memory")]
    pub(crate) fn decrypt_sectors_into<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        src: &[u8],
        dst: &vm_memory::VolatileSlice<'_, B>,
        at: u64,
        unit: SectorSize,
    ) -> Result<()> {
        match self {
            UnitCipher::Xts(k) => Ok(k.decrypt_sectors_into(src, dst, at, unit)?),
            UnitCipher::Plain => {
                if src.len() != dst.len() {
                    return Err(crate::Error::input("a guest buffer of another length"));
                }
                dst.copy_from(src);
                Ok(())
            }
        }
    }

    /// Enciphers guest memory `src` (only loaded from) into `dst`.
    #[cfg(feature = "guest-memory")]
    pub(crate) fn encrypt_sectors_from<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        src: &vm_memory::VolatileSlice<'_, B>,
        dst: &mut [u8],
        at: u64,
        unit: SectorSize,
    ) -> Result<()> {
        match self {
            UnitCipher::Xts(k) => Ok(k.encrypt_sectors_from(src, dst, at, unit)?),
            UnitCipher::Plain => {
                if src.len() != dst.len() {
                    return Err(crate::Error::input("a guest buffer of another length"));
                }
                src.copy_to(dst);
                Ok(())
            }
        }
    }
}
