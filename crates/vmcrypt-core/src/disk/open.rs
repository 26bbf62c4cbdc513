//! Opening a disk: which container a file is (a VMDK descriptor, vmcrypt metadata named by
//! mistake, a raw image, or another format a raw image may only be by insistence), and its
//! metadata read and checked.

use std::path::Path;

use super::meta::read_meta;
use super::probe::{self, Container};
use super::vmdk::{self, DESCRIPTOR_MAGIC};
use super::{
    Disk, DiskFormat, KEYSAFE_KEY, SIDECAR_EXT, SIDECAR_MAGIC, check_inside_folder, sidecar_path,
};
use crate::settings::{Flavor, Settings};
use crate::{Error, Result};

impl Disk {
    /// Opens a raw image or a VMDK descriptor and reads its metadata.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidSettings`], [`Error::Unsupported`] and
    /// [`Error::InvalidInput`] for inputs that are not disks vmcrypt handles.
    pub fn open(path: &Path) -> Result<Disk> {
        #[cfg(test)]
        super::tests::OPENS.with(|n| n.set(n.get() + 1));
        let meta = std::fs::metadata(path).map_err(Error::io("open", path))?;
        if !meta.is_file() {
            return Err(Error::NotRegularFile {
                path: path.to_path_buf(),
            });
        }
        let file = crate::fsutil::open_regular(path)?;
        let mut head = [0u8; 64];
        let n = {
            use std::io::Read;
            let mut n = 0;
            while n < head.len() {
                match (&file)
                    .read(&mut head[n..])
                    .map_err(Error::io("read", path))?
                {
                    0 => break,
                    k => n += k,
                }
            }
            n
        };
        let head = &head[..n];
        if head.starts_with(DESCRIPTOR_MAGIC) {
            return Disk::open_vmdk(path);
        }
        let container = probe::probe(&file, meta.len()).map_err(Error::io("read", path))?;
        if container == Some(Container::VmdkSparse) {
            return Err(Error::Unsupported {
                what: Container::VmdkSparse.hint(path),
            });
        }
        let is_sidecar_name = path
            .to_str()
            .and_then(|s| s.strip_suffix(&format!(".{SIDECAR_EXT}")))
            .is_some_and(|image| Path::new(image).is_file());
        if head.starts_with(SIDECAR_MAGIC.as_bytes()) || is_sidecar_name {
            return Err(Error::input(format!(
                "{} is vmcrypt metadata, not a disk; name the image beside it",
                path.display()
            )));
        }
        Disk::open_raw(path, meta.len(), container)
    }

    fn open_raw(path: &Path, len: u64, container: Option<Container>) -> Result<Disk> {
        let meta_path = sidecar_path(path);
        let settings = if meta_path.exists() {
            Some(Settings::read(&meta_path, Flavor::Vmx)?)
        } else {
            None
        };
        let encryption = match &settings {
            Some(s) => Some(read_meta(s, "vmcrypt.", &meta_path)?),
            None => None,
        };
        // An encrypted image's payload may not fill the file (it moved, or a job is moving
        // it): the metadata says how long it is, and check_payload compares it with the file.
        let payload_len = encryption.as_ref().map_or(len, |e| e.identity.payload_size);
        // An image with a sidecar is vmcrypt's: its payload's first bytes say nothing.
        let container = container.filter(|_| settings.is_none());
        Ok(Disk {
            path: path.to_path_buf(),
            format: DiskFormat::Raw,
            payload: path.to_path_buf(),
            payload_len,
            meta_path,
            settings,
            extent: None,
            encryption,
            container,
        })
    }

    fn open_vmdk(path: &Path) -> Result<Disk> {
        let s = Settings::read(path, Flavor::Descriptor)?;
        let extent = vmdk::flat_extent(&s, path)?;
        let payload = path.with_file_name(&extent.file);
        check_inside_folder(&payload, path)?;
        let payload_len = extent
            .sectors
            .checked_mul(512)
            .ok_or_else(|| Error::settings(path, Some(extent.line + 1), "extent size overflows"))?;
        let encryption = if s.get(KEYSAFE_KEY).is_some() {
            Some(read_meta(&s, "ddb.vmcrypt.", path)?)
        } else {
            None
        };
        // The extent line names where the payload is: 0 for a plain disk; for an encrypted
        // one, its payloadOffset once settled (0 from before that was recorded, and while a
        // job moves it).
        let at = extent.offset.saturating_mul(512);
        match &encryption {
            None if extent.offset != 0 => {
                return Err(Error::Unsupported {
                    what: format!(
                        "extent type {} at offset {} in {}",
                        extent.kind,
                        extent.offset,
                        path.display()
                    ),
                });
            }
            Some(m) if at != 0 && at != m.identity.payload_offset => {
                return Err(Error::Integrity {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the extent line puts the payload at byte {at}, the metadata at {}: edited?",
                        m.identity.payload_offset
                    ),
                });
            }
            _ => {}
        }
        Ok(Disk {
            path: path.to_path_buf(),
            format: DiskFormat::VmdkFlat,
            payload,
            payload_len,
            meta_path: path.to_path_buf(),
            settings: Some(s),
            extent: Some(extent),
            encryption,
            container: None,
        })
    }
}
