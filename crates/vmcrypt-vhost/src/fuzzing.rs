//! The properties the virtio-blk request decoder must keep on any input, shared by the fuzz
//! target (`fuzz/fuzz_targets/vhost_request.rs`) and the replay of its corpus under
//! `cargo test`.

use crate::config::{MAX_ZERO_SECTORS, MAX_ZERO_SEGS};
use crate::request::{Kind, Layout, Seg, zero_ranges};

/// Feeds `data` to the decoder and panics if a property fails. The first byte picks a disk
/// (size, read-only) and a descriptor count; then 13 bytes per descriptor (address, length,
/// writable), 16 header bytes, and the rest as a discard's segment list.
pub fn check(data: &[u8]) {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let disk_len = [0u64, 512, 1 << 20, u64::MAX / 512 * 512][usize::from(pick & 3)];
    let read_only = pick & 4 != 0;
    let count = usize::from(pick >> 3);
    let mut segs = Vec::new();
    for _ in 0..count {
        let Some((d, r)) = rest.split_at_checked(13) else {
            break;
        };
        rest = r;
        segs.push(Seg {
            addr: u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8])),
            len: u32::from_le_bytes(d[8..12].try_into().unwrap_or([0; 4])),
            write: d[12] & 1 != 0,
        });
    }
    let mut header = [0u8; 16];
    let n = rest.len().min(16);
    header[..n].copy_from_slice(&rest[..n]);
    let list = &rest[n..];

    let inside = |addr: u64, len: usize, writable: Option<bool>| {
        segs.iter().any(|s| {
            writable.is_none_or(|w| s.write == w)
                && addr >= s.addr
                && (addr - s.addr)
                    .checked_add(len as u64)
                    .is_some_and(|e| e <= u64::from(s.len))
        })
    };
    let Ok(layout) = Layout::of(&segs) else {
        return;
    };
    let total = |span: crate::request::Span<'_>, w: Option<bool>| {
        span.pieces().fold(0u64, |t, (a, l)| {
            assert!(inside(a, l, w), "a piece outside its descriptors");
            t + l as u64
        })
    };
    assert_eq!(
        total(layout.header(), Some(false)),
        16,
        "the header is 16 readable bytes"
    );
    assert_eq!(
        total(layout.status(), Some(true)),
        1,
        "the status is one writable byte"
    );
    let Ok(req) = layout.request(&header, disk_len, read_only) else {
        return;
    };
    assert_eq!(
        total(req.data, None),
        req.data.len,
        "the data's pieces add up"
    );
    match req.kind {
        Kind::Read | Kind::Write => {
            assert!(req.data.len % 512 == 0, "whole sectors");
            let end = req.offset.checked_add(req.data.len);
            assert!(
                end.is_some_and(|e| e <= disk_len),
                "a range outside the disk"
            );
        }
        Kind::Discard | Kind::WriteZeroes => {
            assert!(req.data.len % 16 == 0 && req.data.len / 16 <= u64::from(MAX_ZERO_SEGS));
            let mut out = Vec::new();
            let bytes = &list[..list.len() / 16 * 16];
            if zero_ranges(req.kind, bytes, disk_len, &mut out).is_ok() {
                for z in &out {
                    assert!(z.len <= u64::from(MAX_ZERO_SECTORS) * 512);
                    assert!(z.offset.checked_add(z.len).is_some_and(|e| e <= disk_len));
                }
            }
        }
        Kind::Flush | Kind::GetId => {}
    }
    if read_only {
        assert!(
            matches!(req.kind, Kind::Read | Kind::Flush | Kind::GetId),
            "a write on a read-only disk"
        );
    }
}
