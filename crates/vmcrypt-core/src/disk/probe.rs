//! Container formats that are not raw images, recognised by their magic before a file is
//! treated as raw: encrypting a qcow2 or a VHD "as raw" would hand the VM a disk it cannot
//! read. The magics are the formats' own (qcow2 and QED specs in QEMU's docs/interop, the VHD
//! and VHDX specifications, VirtualBox's VDI header, the LUKS on-disk format, VMware's sparse
//! extent header).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// A container format vmcrypt does not encrypt, found by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Container {
    /// QEMU copy-on-write v1 (`QFI\xfb`, version 1).
    Qcow,
    /// QEMU copy-on-write v2/v3 (`QFI\xfb`).
    Qcow2,
    /// QEMU enhanced disk (`QED\0`).
    Qed,
    /// Virtual PC / Hyper-V VHD (`conectix` cookie in the footer, or its copy at 0).
    Vhd,
    /// Hyper-V VHDX (`vhdxfile`).
    Vhdx,
    /// VirtualBox VDI (signature 0xbeda107f at byte 64).
    Vdi,
    /// A LUKS volume (`LUKS\xba\xbe`): already encrypted.
    Luks,
    /// A VMware sparse or ESX COW extent (`KDMV`, `COWD`).
    VmdkSparse,
}

impl Container {
    /// The format's usual name.
    pub fn name(self) -> &'static str {
        match self {
            Container::Qcow => "qcow",
            Container::Qcow2 => "qcow2",
            Container::Qed => "QED",
            Container::Vhd => "VHD",
            Container::Vhdx => "VHDX",
            Container::Vdi => "VDI",
            Container::Luks => "LUKS",
            Container::VmdkSparse => "sparse VMDK",
        }
    }

    /// What the operator can do instead, for `path`.
    pub fn hint(self, path: &std::path::Path) -> String {
        let p = path.display();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "disk".into());
        match self {
            Container::Luks => format!(
                "{p} is a LUKS volume, already encrypted; open it with cryptsetup or QEMU's luks driver, or convert it to raw first"
            ),
            Container::VmdkSparse => format!(
                "{p} is a sparse VMDK; convert it to a flat one with `{}`, then encrypt that",
                to_flat_vmdk(path)
            ),
            c => format!(
                "{p} is a {} image, not a raw one; convert it with `qemu-img convert -O raw {p} {stem}.img`, then encrypt that (or pass --format raw if it really is a raw image that happens to start with these bytes)",
                c.name()
            ),
        }
    }
}

/// The command that makes a monolithicFlat VMDK vmcrypt accepts from the VMDK at `path`
/// (`STEM-vmcrypt.vmdk` beside it).
pub fn to_flat_vmdk(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    let out = path.with_file_name(format!("{stem}-vmcrypt.vmdk"));
    format!(
        "qemu-img convert -O vmdk -o subformat=monolithicFlat {} {}",
        path.display(),
        out.display()
    )
}

/// Reads the magics of an open file of `len` bytes.
///
/// # Errors
/// I/O errors.
pub fn probe(file: &File, len: u64) -> std::io::Result<Option<Container>> {
    let mut head = [0u8; 512];
    let n = read_full(file, &mut head, 0)?;
    let head = &head[..n];
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        let version = head
            .get(4..8)
            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        return Ok(Some(if version == Some(1) {
            Container::Qcow
        } else {
            Container::Qcow2
        }));
    }
    let found = if at(0, b"QED\0") {
        Some(Container::Qed)
    } else if at(0, b"vhdxfile") {
        Some(Container::Vhdx)
    } else if at(0, b"conectix") {
        Some(Container::Vhd)
    } else if at(64, &0xbeda_107fu32.to_le_bytes()) {
        Some(Container::Vdi)
    } else if at(0, b"LUKS\xba\xbe") {
        Some(Container::Luks)
    } else if at(0, b"KDMV") || at(0, b"COWD") {
        Some(Container::VmdkSparse)
    } else {
        None
    };
    if found.is_some() {
        return Ok(found);
    }
    // A fixed VHD is raw data with a 512-byte footer (older tools wrote 511 bytes).
    for footer in [512u64, 511] {
        if len >= footer {
            let mut cookie = [0u8; 8];
            if read_full(file, &mut cookie, len - footer)? == cookie.len() && &cookie == b"conectix"
            {
                return Ok(Some(Container::Vhd));
            }
        }
    }
    Ok(None)
}

fn read_full(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn probe_bytes(b: &[u8]) -> Option<Container> {
        let mut f = tempfile::tempfile().expect("temp");
        f.write_all(b).expect("write");
        probe(&f, b.len() as u64).expect("probe")
    }

    #[test]
    fn magics_are_recognised_and_plain_data_is_not() {
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&0xbeda_107fu32.to_le_bytes());
        let mut fixed_vhd = vec![7u8; 4096];
        fixed_vhd[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        let cases: &[(&[u8], Option<Container>)] = &[
            (b"QFI\xfb\0\0\0\x03rest", Some(Container::Qcow2)),
            (b"QFI\xfb\0\0\0\x01rest", Some(Container::Qcow)),
            (b"QED\0....", Some(Container::Qed)),
            (b"vhdxfile....", Some(Container::Vhdx)),
            (b"conectix....", Some(Container::Vhd)),
            (&vdi, Some(Container::Vdi)),
            (&fixed_vhd, Some(Container::Vhd)),
            (b"LUKS\xba\xbe\0\x02", Some(Container::Luks)),
            (b"KDMV\x01\0\0\0", Some(Container::VmdkSparse)),
            (b"QFI", None),
            (b"", None),
            (&[0u8; 8192], None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                probe_bytes(bytes),
                *want,
                "{:?}",
                &bytes[..bytes.len().min(8)]
            );
        }
    }

    #[test]
    fn no_hint_suggests_a_sector_size() {
        for c in [
            Container::Qcow2,
            Container::Vhd,
            Container::Luks,
            Container::VmdkSparse,
        ] {
            let h = c.hint(std::path::Path::new("/vm/disk.qcow2"));
            assert!(!h.contains("sector-size"), "{h}");
            assert!(h.contains("/vm/disk.qcow2"), "{h}");
        }
    }
}
