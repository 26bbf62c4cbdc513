//! A virtio-blk request decoded from its descriptor chain and checked against the disk before
//! anything is read or written (VIRTIO 1.2, 5.2.6). Pure functions over the descriptors'
//! addresses and lengths and the header's bytes, so that the fuzz target runs them without a
//! guest.
//!
//! The device may not assume how the driver splits a request into descriptors, so the
//! readable descriptors are read as one byte stream (the 16-byte header, then a write's data
//! or a discard's segments) and the writable ones as another (a read's data, then the status
//! byte, which is the last writable byte).

use virtio_bindings::virtio_blk as blk;

use crate::config::{MAX_ZERO_SECTORS, MAX_ZERO_SEGS};

/// Bytes of the request header: type, reserved, sector.
pub const HEADER_LEN: u64 = 16;
/// Bytes of one discard or write-zeroes segment: sector, sectors, flags.
pub const ZERO_SEG_LEN: u64 = 16;
/// Bytes of the device id that GET_ID returns.
pub const ID_LEN: usize = blk::VIRTIO_BLK_ID_BYTES as usize;

/// Status byte values.
pub mod status {
    /// Done.
    pub const OK: u8 = 0;
    /// Refused or failed; the guest sees an I/O error.
    pub const IOERR: u8 = 1;
    /// Not a request this device carries out.
    pub const UNSUPP: u8 = 2;
}

/// One descriptor: a guest address, a length, and whether the device writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// Guest physical address.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// A run of bytes in a byte stream of descriptors: `len` bytes from `skip` into `segs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span<'a> {
    segs: &'a [Seg],
    skip: u64,
    /// Bytes in the run.
    pub len: u64,
}

impl<'a> Span<'a> {
    /// The guest memory pieces of the run, in order: (address, length). Addresses do not
    /// wrap: a piece that would is cut short (and then fails in guest memory, which ends
    /// well before 2^64).
    pub fn pieces(&self) -> impl Iterator<Item = (u64, usize)> + 'a {
        let (mut skip, mut left) = (self.skip, self.len);
        self.segs.iter().filter_map(move |s| {
            let len = u64::from(s.len);
            if skip >= len {
                skip -= len;
                return None;
            }
            let take = (len - skip).min(left);
            if take == 0 {
                return None;
            }
            let piece = (s.addr.saturating_add(skip), take as usize);
            skip = 0;
            left -= take;
            Some(piece)
        })
    }

    fn sub(&self, from: u64, len: u64) -> Span<'a> {
        Span {
            segs: self.segs,
            skip: self.skip + from,
            len,
        }
    }
}

/// Why a chain gets no service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No writable byte for a status: the chain is given back unanswered (used length 0),
    /// and the device counts a broken request.
    NoStatus(&'static str),
    /// Answered with this status (IOERR or UNSUPP) in the status byte.
    Status(u8, &'static str),
}

impl Refused {
    /// The status to answer with, and why (a chain without a status byte counts as IOERR).
    pub fn code(self) -> (u8, &'static str) {
        match self {
            Refused::NoStatus(why) => (status::IOERR, why),
            Refused::Status(code, why) => (code, why),
        }
    }
}

/// A chain split into its readable and writable byte streams.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    readable: Span<'a>,
    writable: Span<'a>,
}

impl<'a> Layout<'a> {
    /// Splits `segs`: readable descriptors first, then writable ones (VIRTIO 2.7.4.2), a
    /// header's worth of readable bytes and at least one writable byte.
    ///
    /// # Errors
    /// [`Refused`] for a chain that does not frame a request.
    pub fn of(segs: &'a [Seg]) -> Result<Layout<'a>, Refused> {
        let first_w = segs.iter().position(|s| s.write).unwrap_or(segs.len());
        let (r, w) = segs.split_at(first_w);
        let total = |s: &[Seg]| s.iter().map(|x| u64::from(x.len)).sum::<u64>();
        let (rlen, wlen) = (total(r), total(w));
        if wlen == 0 {
            return Err(Refused::NoStatus("no writable byte for the status"));
        }
        if w.iter().any(|s| !s.write) {
            return Err(Refused::Status(
                status::IOERR,
                "a readable descriptor after a writable one",
            ));
        }
        if rlen < HEADER_LEN {
            return Err(Refused::Status(
                status::IOERR,
                "the request header is short",
            ));
        }
        Ok(Layout {
            readable: Span {
                segs: r,
                skip: 0,
                len: rlen,
            },
            writable: Span {
                segs: w,
                skip: 0,
                len: wlen,
            },
        })
    }

    /// Where the header is: the first 16 readable bytes.
    pub fn header(&self) -> Span<'a> {
        self.readable.sub(0, HEADER_LEN)
    }

    /// Where the status byte is: the last writable byte.
    pub fn status(&self) -> Span<'a> {
        self.writable.sub(self.writable.len - 1, 1)
    }

    /// Decodes the header and checks the request against a disk of `disk_len` bytes.
    ///
    /// # Errors
    /// [`Refused::Status`]: IOERR for a range outside the disk or not in 512-byte sectors, a
    /// write to a read-only disk, a malformed segment list; UNSUPP for a request type this
    /// device does not carry out.
    pub fn request(
        &self,
        header: &[u8; 16],
        disk_len: u64,
        read_only: bool,
    ) -> Result<Request<'a>, Refused> {
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0xff; 8]));
        let out = self
            .readable
            .sub(HEADER_LEN, self.readable.len - HEADER_LEN);
        let inp = self.writable.sub(0, self.writable.len - 1);
        let ranged = |data: Span<'a>, kind: Kind| -> Result<Request<'a>, Refused> {
            let offset = sector
                .checked_mul(512)
                .ok_or(Refused::Status(status::IOERR, "the sector is past the end"))?;
            check_range(offset, data.len, disk_len)?;
            Ok(Request { kind, offset, data })
        };
        let writes = |k| {
            if read_only {
                Err(Refused::Status(status::IOERR, "the disk is read-only"))
            } else {
                Ok(k)
            }
        };
        match kind {
            blk::VIRTIO_BLK_T_IN => ranged(inp, Kind::Read),
            blk::VIRTIO_BLK_T_OUT => ranged(out, writes(Kind::Write)?),
            blk::VIRTIO_BLK_T_FLUSH => Ok(Request {
                kind: Kind::Flush,
                offset: 0,
                data: inp.sub(0, 0),
            }),
            blk::VIRTIO_BLK_T_GET_ID => Ok(Request {
                kind: Kind::GetId,
                offset: 0,
                data: inp.sub(0, inp.len.min(ID_LEN as u64)),
            }),
            blk::VIRTIO_BLK_T_DISCARD | blk::VIRTIO_BLK_T_WRITE_ZEROES => {
                let k = if kind == blk::VIRTIO_BLK_T_DISCARD {
                    Kind::Discard
                } else {
                    Kind::WriteZeroes
                };
                let k = writes(k)?;
                let segs = out.len / ZERO_SEG_LEN;
                if !out.len.is_multiple_of(ZERO_SEG_LEN)
                    || segs == 0
                    || segs > u64::from(MAX_ZERO_SEGS)
                {
                    return Err(Refused::Status(status::IOERR, "a malformed segment list"));
                }
                Ok(Request {
                    kind: k,
                    offset: 0,
                    data: out,
                })
            }
            _ => Err(Refused::Status(
                status::UNSUPP,
                "an unsupported request type",
            )),
        }
    }
}

fn check_range(offset: u64, len: u64, disk_len: u64) -> Result<(), Refused> {
    if !len.is_multiple_of(512) {
        return Err(Refused::Status(
            status::IOERR,
            "the data is not in whole sectors",
        ));
    }
    match offset.checked_add(len) {
        Some(end) if end <= disk_len => Ok(()),
        _ => Err(Refused::Status(
            status::IOERR,
            "the range runs past the end of the disk",
        )),
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Read `data.len` bytes at `offset` into the writable data.
    Read,
    /// Write the readable data at `offset`.
    Write,
    /// Make every completed write durable.
    Flush,
    /// Write the device id into the writable data.
    GetId,
    /// Segments (in the readable data) to give back.
    Discard,
    /// Segments (in the readable data) to zero, with or without a hole.
    WriteZeroes,
}

/// A checked request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// What it asks for.
    pub kind: Kind,
    /// Disk byte offset (reads and writes).
    pub offset: u64,
    /// The data, in guest memory: a read's or GET_ID's destination, a write's source, a
    /// discard's or write-zeroes' segment list.
    pub data: Span<'a>,
}

/// One range of a discard or write-zeroes request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroRange {
    /// Disk byte offset.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// Zero by punching a hole (write zeroes with UNMAP, and every discard).
    pub unmap: bool,
}

/// Decodes and checks a discard's or write-zeroes' segment list (`bytes`, a multiple of 16).
///
/// # Errors
/// [`Refused::Status`]: UNSUPP for flags other than UNMAP (on write zeroes only), IOERR for
/// a range outside the disk or over the advertised size.
pub fn zero_ranges(
    kind: Kind,
    bytes: &[u8],
    disk_len: u64,
    out: &mut Vec<ZeroRange>,
) -> Result<(), Refused> {
    out.clear();
    for s in bytes.chunks_exact(ZERO_SEG_LEN as usize) {
        let sector = u64::from_le_bytes(s[0..8].try_into().unwrap_or([0xff; 8]));
        let sectors = u32::from_le_bytes(s[8..12].try_into().unwrap_or([0xff; 4]));
        let flags = u32::from_le_bytes(s[12..16].try_into().unwrap_or([0xff; 4]));
        let unmap_ok = if kind == Kind::WriteZeroes {
            blk::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        if flags & !unmap_ok != 0 {
            return Err(Refused::Status(status::UNSUPP, "unknown segment flags"));
        }
        if sectors > MAX_ZERO_SECTORS {
            return Err(Refused::Status(
                status::IOERR,
                "a segment over the advertised size",
            ));
        }
        let offset = sector
            .checked_mul(512)
            .ok_or(Refused::Status(status::IOERR, "the sector is past the end"))?;
        let len = u64::from(sectors) * 512;
        check_range(offset, len, disk_len)?;
        out.push(ZeroRange {
            offset,
            len,
            unmap: kind == Kind::Discard || flags & blk::VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(addr: u64, len: u32) -> Seg {
        Seg {
            addr,
            len,
            write: false,
        }
    }
    fn w(addr: u64, len: u32) -> Seg {
        Seg {
            addr,
            len,
            write: true,
        }
    }
    fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        h
    }
    const DISK: u64 = 1 << 20;

    #[test]
    fn reads_and_writes_in_any_framing() {
        // Linux's framing: header, data, status.
        let segs = [r(0x1000, 16), w(0x2000, 4096), w(0x3000, 1)];
        let l = Layout::of(&segs).expect("layout");
        assert_eq!(l.header().pieces().collect::<Vec<_>>(), vec![(0x1000, 16)]);
        assert_eq!(l.status().pieces().collect::<Vec<_>>(), vec![(0x3000, 1)]);
        let q = l.request(&header(0, 8), DISK, false).expect("read");
        assert_eq!((q.kind, q.offset, q.data.len), (Kind::Read, 4096, 4096));
        assert_eq!(q.data.pieces().collect::<Vec<_>>(), vec![(0x2000, 4096)]);
        // Header and data in one descriptor, status inside the last data descriptor.
        let segs = [r(0x1000, 16 + 1024), w(0x5000, 513)];
        let l = Layout::of(&segs).expect("layout");
        let q = l.request(&header(1, 0), DISK, false).expect("write");
        assert_eq!(q.data.pieces().collect::<Vec<_>>(), vec![(0x1010, 1024)]);
        assert_eq!(l.status().pieces().collect::<Vec<_>>(), vec![(0x5200, 1)]);
        assert_eq!(
            l.request(&header(1, 0), DISK, true),
            Err(Refused::Status(status::IOERR, "the disk is read-only"))
        );
    }

    #[test]
    fn bad_chains_and_ranges_are_refused() {
        assert!(matches!(Layout::of(&[r(0, 16)]), Err(Refused::NoStatus(_))));
        assert!(matches!(Layout::of(&[]), Err(Refused::NoStatus(_))));
        assert!(matches!(
            Layout::of(&[r(0, 8), w(8, 1)]),
            Err(Refused::Status(1, _))
        ));
        assert!(matches!(
            Layout::of(&[r(0, 16), w(16, 1), r(32, 4)]),
            Err(Refused::Status(1, _))
        ));
        let segs = [r(0, 16), w(0x100, 1024), w(0x900, 1)];
        let l = Layout::of(&segs).expect("layout");
        for (h, why) in [
            (header(0, DISK / 512 - 1), "past the end"),
            (header(0, u64::MAX), "past the end"),
            (header(0, u64::MAX / 512), "past the end"),
            (header(99, 0), "unsupported"),
        ] {
            let e = l.request(&h, DISK, false).expect_err(why);
            assert!(
                matches!(e, Refused::Status(_, m) if m.contains(why)),
                "{e:?}"
            );
        }
        let odd = [r(0, 16), w(0x100, 1000), w(0x900, 1)];
        let e = Layout::of(&odd)
            .expect("layout")
            .request(&header(0, 0), DISK, false);
        assert!(matches!(e, Err(Refused::Status(1, m)) if m.contains("whole sectors")));
    }

    #[test]
    fn zero_segments() {
        let seg = |sector: u64, n: u32, flags: u32| {
            let mut b = sector.to_le_bytes().to_vec();
            b.extend(n.to_le_bytes());
            b.extend(flags.to_le_bytes());
            b
        };
        let mut out = Vec::new();
        let bytes = [seg(8, 16, 1), seg(0, 8, 0)].concat();
        zero_ranges(Kind::WriteZeroes, &bytes, DISK, &mut out).expect("ranges");
        assert_eq!(
            out,
            vec![
                ZeroRange {
                    offset: 4096,
                    len: 8192,
                    unmap: true
                },
                ZeroRange {
                    offset: 0,
                    len: 4096,
                    unmap: false
                }
            ]
        );
        assert!(zero_ranges(Kind::Discard, &seg(0, 8, 1), DISK, &mut out).is_err());
        assert!(zero_ranges(Kind::Discard, &seg(DISK / 512, 1, 0), DISK, &mut out).is_err());
        assert!(zero_ranges(Kind::Discard, &seg(u64::MAX, 1, 0), DISK, &mut out).is_err());
        assert!(
            zero_ranges(
                Kind::Discard,
                &seg(0, MAX_ZERO_SECTORS + 1, 0),
                u64::MAX,
                &mut out
            )
            .is_err()
        );
        let segs = [r(0, 16 + 8), w(0x100, 1)];
        let e = Layout::of(&segs)
            .expect("layout")
            .request(&header(11, 0), DISK, false);
        assert!(matches!(e, Err(Refused::Status(1, _))));
    }
}
