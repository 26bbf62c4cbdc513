//! Data unit sizes.

use crate::Error;

/// The size of one XTS data unit: 512 or 4096 bytes. A value that exists is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SectorSize {
    /// 512-byte data units (one tweak per 512-byte sector).
    S512,
    /// 4096-byte data units (tweaks 0, 8, 16, ... in 512-byte sector numbers).
    #[default]
    S4096,
}

impl SectorSize {
    /// The unit size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            SectorSize::S512 => 512,
            SectorSize::S4096 => 4096,
        }
    }

    /// The unit size from a byte count.
    ///
    /// # Errors
    /// [`Error::UnsupportedSectorSize`] for anything but 512 and 4096.
    pub fn from_bytes(n: u64) -> Result<Self, Error> {
        match n {
            512 => Ok(SectorSize::S512),
            4096 => Ok(SectorSize::S4096),
            other => Err(Error::UnsupportedSectorSize(other)),
        }
    }
}

impl std::fmt::Display for SectorSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.bytes())
    }
}
