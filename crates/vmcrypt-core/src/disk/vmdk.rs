//! VMDK descriptors of flat disks (`monolithicFlat`, as `qemu-img create -f vmdk -o
//! subformat=monolithicFlat` makes them, and `vmfs`): the descriptor text plus one flat extent
//! file holding the raw payload.

use crate::settings::{Settings, is_extent_line};
use crate::{Error, Result};
use std::path::Path;

/// The first bytes of a text descriptor.
pub const DESCRIPTOR_MAGIC: &[u8] = b"# Disk DescriptorFile";
/// The first bytes of a hosted sparse VMDK.
pub const SPARSE_MAGIC: &[u8] = b"KDMV";

/// One extent line: `ACCESS SECTORS TYPE "FILE" [OFFSET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    /// Index of the line in the descriptor.
    pub line: usize,
    /// Access mode (RW, RDONLY, NOACCESS).
    pub access: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Extent type (FLAT, VMFS, SPARSE, ...).
    pub kind: String,
    /// File name, relative to the descriptor.
    pub file: String,
    /// Offset in sectors within the file.
    pub offset: u64,
}

impl Extent {
    /// The extent line with another file name.
    pub fn render_with_file(&self, file: &str) -> String {
        self.render_with(file, self.offset)
    }

    /// The extent line with another file name and offset (in sectors).
    pub fn render_with(&self, file: &str, offset: u64) -> String {
        format!(
            "{} {} {} \"{}\" {}",
            self.access, self.sectors, self.kind, file, offset
        )
    }
}

/// The single flat extent of a descriptor.
///
/// # Errors
/// [`Error::Unsupported`] for sparse or multi-extent disks, [`Error::InvalidSettings`] for
/// malformed extent lines.
pub fn flat_extent(s: &Settings, path: &Path) -> Result<Extent> {
    let create_type = s.get("createType").unwrap_or("");
    if !matches!(create_type, "monolithicFlat" | "vmfs") {
        return Err(Error::Unsupported {
            what: format!(
                "VMDK createType {create_type:?} in {} (only monolithicFlat and vmfs flat disks); convert it with `{}`, then encrypt that",
                path.display(),
                super::probe::to_flat_vmdk(path)
            ),
        });
    }
    let mut extents = Vec::new();
    for (i, line) in s.other_lines() {
        if !is_extent_line(line.trim()) {
            continue;
        }
        extents.push(parse_extent(i, line).map_err(|r| Error::settings(path, Some(i + 1), r))?);
    }
    match extents.as_slice() {
        // The offset is checked against the encryption metadata by the disk layer: a plain
        // disk's is 0, an encrypted one's follows its payload.
        [e] if matches!(e.kind.as_str(), "FLAT" | "VMFS") => Ok(e.clone()),
        [e] => Err(Error::Unsupported {
            what: format!(
                "extent type {} at offset {} in {}",
                e.kind,
                e.offset,
                path.display()
            ),
        }),
        [] => Err(Error::settings(path, None, "descriptor has no extent line")),
        _ => Err(Error::Unsupported {
            what: format!(
                "{} extents in {} (one flat extent only)",
                extents.len(),
                path.display()
            ),
        }),
    }
}

fn parse_extent(line: usize, text: &str) -> std::result::Result<Extent, String> {
    let t = text.trim();
    let q1 = t.find('"').ok_or("extent without a quoted file name")?;
    let q2 = t[q1 + 1..]
        .find('"')
        .map(|i| q1 + 1 + i)
        .ok_or("unterminated extent file name")?;
    let head: Vec<&str> = t[..q1].split_whitespace().collect();
    let [access, sectors, kind] = head.as_slice() else {
        return Err("extent line is not `ACCESS SECTORS TYPE \"FILE\" [OFFSET]`".into());
    };
    let file = &t[q1 + 1..q2];
    if file.is_empty() || file.contains('/') || file == ".." || file == "." {
        return Err(format!(
            "extent file name {file:?} must be a plain file name beside the descriptor"
        ));
    }
    let tail = t[q2 + 1..].trim();
    let offset = if tail.is_empty() {
        0
    } else {
        tail.parse().map_err(|_| "extent offset is not a number")?
    };
    Ok(Extent {
        line,
        access: access.to_string(),
        sectors: sectors.parse().map_err(|_| "extent size is not a number")?,
        kind: kind.to_string(),
        file: file.to_string(),
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Flavor;

    const DESC: &str = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"d-flat.vmdk\" 0\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\n";

    #[test]
    fn finds_the_flat_extent() {
        let s = Settings::parse(DESC.as_bytes(), Flavor::Descriptor, Path::new("d.vmdk"))
            .expect("valid");
        let e = flat_extent(&s, Path::new("d.vmdk")).expect("extent");
        assert_eq!(
            (e.sectors, e.file.as_str(), e.offset),
            (2048, "d-flat.vmdk", 0)
        );
        assert_eq!(
            e.render_with_file("x-flat.vmdk"),
            "RW 2048 FLAT \"x-flat.vmdk\" 0"
        );
    }

    #[test]
    fn refuses_other_layouts() {
        for (from, to) in [
            ("monolithicFlat", "monolithicSparse"),
            (
                "RW 2048 FLAT \"d-flat.vmdk\" 0",
                "RW 2048 FLAT \"d-flat.vmdk\" 0\nRW 2048 FLAT \"e-flat.vmdk\" 0",
            ),
            (
                "RW 2048 FLAT \"d-flat.vmdk\" 0",
                "RW 2048 FLAT \"../etc/passwd\" 0",
            ),
            (
                "RW 2048 FLAT \"d-flat.vmdk\" 0",
                "RW x FLAT \"d-flat.vmdk\" 0",
            ),
            // (An offset other than 0 is checked against the metadata by the disk layer:
            // tests/formats.rs.)
        ] {
            let text = DESC.replace(from, to);
            let s = Settings::parse(text.as_bytes(), Flavor::Descriptor, Path::new("d.vmdk"))
                .expect("parses");
            assert!(flat_extent(&s, Path::new("d.vmdk")).is_err(), "{to}");
        }
    }
}
