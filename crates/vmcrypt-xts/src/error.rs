//! The one error type of the sector cipher.

/// Why a cipher operation was refused. Nothing is encrypted when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The two 256-bit halves of the XTS key are equal (IEEE 1619 and FIPS forbid it).
    #[error("XTS key halves are equal")]
    EqualKeyHalves,
    /// A data unit is empty or not a whole number of 16-byte blocks.
    #[error("data unit of {len} bytes is not a whole number of 16-byte blocks")]
    UnitNotBlocks {
        /// The length that was given.
        len: usize,
    },
    /// A buffer is not a whole number of data units.
    #[error("buffer of {len} bytes is not a whole number of {unit}-byte data units")]
    NotWholeUnits {
        /// The buffer length.
        len: usize,
        /// The data unit size.
        unit: usize,
    },
    /// The byte offset of a buffer is not at a data unit boundary.
    #[error("byte offset {offset} is not a multiple of the {unit}-byte data unit")]
    MisalignedOffset {
        /// The byte offset that was given.
        offset: u64,
        /// The data unit size.
        unit: usize,
    },
    /// The source and the destination of an out-of-place call differ in length.
    #[error("source of {src} bytes and destination of {dst} bytes differ in length")]
    LengthMismatch {
        /// The source length.
        src: usize,
        /// The destination length.
        dst: usize,
    },
    /// A sector size other than 512 or 4096 bytes.
    #[error("unsupported sector size {0} (use 512 or 4096)")]
    UnsupportedSectorSize(u64),
}
