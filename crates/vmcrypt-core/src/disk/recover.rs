//! The break-glass path: the device-mapper table line that opens a payload with dm-crypt
//! (`aes-xts-plain64`, the same sector format), so a disk can be read without vmcrypt.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::Disk;
use crate::Result;
use crate::keysafe::KeyRing;
use crate::provider::ProviderRegistry;

/// A dm-crypt table for one disk. The line holds the DEK in clear (zeroed on drop).
pub struct DmTable {
    /// `0 SECTORS crypt aes-xts-plain64 KEY 0 DEVICE OFFSET [1 sector_size:N]`.
    pub line: Zeroizing<String>,
    /// The payload file, as an absolute path (dmsetup needs one that works from anywhere).
    pub device: PathBuf,
    /// The XTS data unit in bytes.
    pub sector_size: usize,
    /// Where the payload starts in its file, in 512-byte sectors.
    pub offset_sectors: u64,
}

impl std::fmt::Debug for DmTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmTable")
            .field("device", &self.device)
            .field("sector_size", &self.sector_size)
            .finish_non_exhaustive()
    }
}

/// The dm-crypt table of an encrypted disk with no job under way: its DEK unwrapped through
/// `registry`, in clear in the line.
///
/// # Errors
/// [`crate::Error::NotEncrypted`], [`crate::Error::JobUnderWay`], unwrap, integrity and
/// provider errors.
pub fn dm_table(path: &Path, registry: &dyn ProviderRegistry) -> Result<DmTable> {
    let d = Disk::open(path)?;
    let meta = d.require_settled()?;
    let dek = d.open_key(&KeyRing::new(registry))?.secret;
    let device =
        std::path::absolute(d.payload_path()).unwrap_or_else(|_| d.payload_path().to_path_buf());
    let hex = Zeroizing::new(
        dek.expose_secret()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let unit = meta.identity.sector_size.bytes();
    let opt = if unit == 512 {
        String::new()
    } else {
        format!(" 1 sector_size:{unit}")
    };
    let offset_sectors = meta.identity.payload_offset / 512;
    // dm-crypt's fields: start, sectors, target, cipher, key, iv_offset (0: the tweak is the
    // data unit number within the payload), device, the payload's offset in 512-byte sectors.
    let line = Zeroizing::new(format!(
        "0 {} crypt aes-xts-plain64 {} 0 {} {}{}",
        meta.identity.payload_size / 512,
        hex.as_str(),
        device.display(),
        offset_sectors,
        opt
    ));
    Ok(DmTable {
        line,
        device,
        sector_size: unit,
        offset_sectors,
    })
}
