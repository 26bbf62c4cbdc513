//! Thin provisioning: holes in an encrypted payload, and the one rule that makes them safe.
//!
//! **The rule.** A data unit whose bytes on disk are all zero holds plaintext zeros. XTS
//! ciphertext is all zero with probability 2^-4096 per 512-byte unit, so no real data is
//! mistaken for a hole; in exchange, a hole never needs encrypting: a guest's TRIM or
//! WRITE_ZEROES punches it (`FALLOC_FL_PUNCH_HOLE`), an offline job skips it
//! (`SEEK_DATA`/`SEEK_HOLE`) and leaves it a hole, and every reader (the live path, offline
//! decrypt, deep rekey) turns it into zeros. A sparse 1 TiB disk with 8 GiB of data stays about
//! 8 GiB on the host, encrypted or not.
//!
//! What it shows: which units are holes (as any thin encrypted volume does, dm-crypt with
//! discards included). What it costs: a zero check per unit read, which ends at the first
//! byte of real ciphertext. Break glass: dm-crypt knows nothing of the rule and decrypts a
//! hole to noise (docs/formats.md).

use std::fs::File;
use std::io;

use vmcrypt_xts::{SectorSize, Xts};

use crate::Result;

/// Whether every byte of `b` is zero: 16 bytes at a time, so real ciphertext fails at its
/// first word and a hole is read once.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(16);
    words
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && words.remainder().iter().all(|&x| x == 0)
}

/// Decrypts whole units of `buf` (payload offset `off`) in place, leaving each all-zero unit
/// as it is: a hole reads as zeros.
pub(crate) fn decrypt(xts: &Xts, buf: &mut [u8], off: u64, unit: SectorSize) -> Result<()> {
    for_each_data_run(buf, unit, |run, at| {
        xts.decrypt_sectors(run, off + at as u64, unit)?;
        Ok(())
    })
}

/// Calls `f` on each maximal run of units of `buf` that are not all zero, with its byte
/// offset in `buf`. A trailing part shorter than a unit belongs to no run.
pub(crate) fn for_each_data_run(
    buf: &mut [u8],
    unit: SectorSize,
    mut f: impl FnMut(&mut [u8], usize) -> Result<()>,
) -> Result<()> {
    let n = unit.bytes();
    let units = buf.len() / n;
    let mut i = 0;
    while i < units {
        if is_zero(&buf[i * n..(i + 1) * n]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < units && !is_zero(&buf[i * n..(i + 1) * n]) {
            i += 1;
        }
        f(&mut buf[start * n..i * n], start * n)?;
    }
    Ok(())
}

/// Makes `len` bytes at `off` of `file` a hole (they read as zeros; the file keeps its size).
/// Returns false when the file system cannot punch holes; the caller then writes zeros.
pub(crate) fn punch(file: &File, off: u64, len: u64) -> io::Result<bool> {
    use rustix::fs::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(true);
    }
    match fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        off,
        len,
    ) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The ranges of `[start, end)` of `file` that hold data (everything outside them is a hole),
/// from `SEEK_DATA`/`SEEK_HOLE`; a file system without them reports one range, all data.
pub(crate) fn data_ranges(file: &File, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    Ok(data_extents(file, start, end)?.0)
}

/// A range of file offsets, `(start, end)`.
pub(crate) type Extent = (u64, u64);

/// [`data_ranges`], and the last data extent the file system reported, whole (it may reach
/// past `end`): the caller may remember it (see `FileStorage`). None when none was reported.
pub(crate) fn data_extents(
    file: &File,
    start: u64,
    end: u64,
) -> io::Result<(Vec<Extent>, Option<Extent>)> {
    use rustix::fs::{SeekFrom, seek};
    let mut out = Vec::new();
    let mut last = None;
    let mut at = start;
    while at < end {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(d) => d,
            // No data at or after `at`: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::OPNOTSUPP => {
                out.push((at, end));
                break;
            }
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = match seek(file, SeekFrom::Hole(data)) {
            Ok(h) => h,
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(e.into()),
        };
        last = Some((data, hole));
        out.push((data, hole.min(end)));
        at = hole;
    }
    Ok((out, last))
}

/// The parts of payload range `[off, off + len)` that hold data, for a payload that starts at
/// `base` in `file`: [`data_ranges`] made payload offsets by [`widen`].
pub(crate) fn data_units(
    file: &File,
    base: u64,
    off: u64,
    len: u64,
    unit: SectorSize,
) -> io::Result<Vec<(u64, u64)>> {
    Ok(widen(
        &data_ranges(file, base + off, base + off + len)?,
        base,
        off,
        len,
        unit,
    ))
}

/// File ranges holding data made payload ranges (a payload at `base` in its file), widened to
/// whole `unit`s, merged, and cut to `[off, off + len)`. A job reads, transforms and writes
/// these and leaves the rest a hole.
pub(crate) fn widen(
    ranges: &[(u64, u64)],
    base: u64,
    off: u64,
    len: u64,
    unit: SectorSize,
) -> Vec<(u64, u64)> {
    let n = unit.bytes() as u64;
    let end = off + len;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(a, b) in ranges {
        let a = (a.saturating_sub(base) / n * n).max(off);
        let b = (b.saturating_sub(base).div_ceil(n) * n).min(end);
        if b <= a {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Runs of `buf` (whole units, at most one short tail that counts as data): `(start, end,
/// all zero)`, in order.
pub(crate) fn runs(
    buf: &[u8],
    unit: SectorSize,
) -> impl Iterator<Item = (usize, usize, bool)> + '_ {
    let n = unit.bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let start = at;
        let unit_zero = |i: usize| {
            let e = (i + n).min(buf.len());
            e - i == n && is_zero(&buf[i..e])
        };
        let zero = unit_zero(at);
        while at < buf.len() && unit_zero(at) == zero {
            at = (at + n).min(buf.len());
        }
        Some((start, at, zero))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn zero_units_stay_zero_and_the_rest_decrypts() {
        let key: [u8; 64] = std::array::from_fn(|i| i as u8);
        let xts = Xts::new(&key).expect("key");
        let unit = SectorSize::S4096;
        let plain: Vec<u8> = (0..4 * 4096u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut disk = plain.clone();
        xts.encrypt_sectors(&mut disk, 8192, unit).expect("encrypt");
        // Units 1 and 2 are holes on disk.
        disk[4096..3 * 4096].fill(0);
        decrypt(&xts, &mut disk, 8192, unit).expect("decrypt");
        assert_eq!(disk[..4096], plain[..4096]);
        assert!(disk[4096..3 * 4096].iter().all(|&b| b == 0));
        assert_eq!(disk[3 * 4096..], plain[3 * 4096..]);
        assert!(is_zero(&[0; 37]));
        assert!(!is_zero(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1
        ]));
        assert!(!is_zero(&[1]));
        let mut b = vec![0u8; 5 * 512];
        b[512] = 1;
        b[4 * 512 + 3] = 1;
        let r: Vec<_> = runs(&b, SectorSize::S512).collect();
        assert_eq!(
            r,
            [
                (0, 512, true),
                (512, 1024, false),
                (1024, 2048, true),
                (2048, 2560, false)
            ]
        );
    }

    #[test]
    fn holes_are_punched_and_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("create");
        file.write_all_at(&vec![9u8; 1 << 20], 0).expect("write");
        file.sync_all().expect("sync");
        assert_eq!(
            data_ranges(&file, 0, 1 << 20).expect("seek"),
            [(0, 1 << 20)]
        );
        assert!(
            punch(&file, 256 << 10, 256 << 10).expect("punch"),
            "the file system of {} cannot punch holes",
            dir.path().display()
        );
        let mut back = vec![1u8; 256 << 10];
        file.read_exact_at(&mut back, 256 << 10).expect("read");
        assert!(is_zero(&back), "a punched range reads as zeros");
        assert_eq!(
            data_ranges(&file, 0, 1 << 20).expect("seek"),
            [(0, 256 << 10), (512 << 10, 1 << 20)]
        );
        assert_eq!(data_ranges(&file, 300 << 10, 400 << 10).expect("seek"), []);
        // In payload offsets for a payload at 1000 in the file, widened to 4096-byte units.
        assert_eq!(
            data_units(&file, 1000, 0, (1 << 20) - 4096, SectorSize::S4096).expect("seek"),
            [(0, 256 << 10), ((512 << 10) - 4096, (1 << 20) - 4096)]
        );
    }
}
