//! Out-of-place I/O between the disk and guest memory, for a device backend that maps the
//! guest's memory (vhost-user-blk).
//!
//! [`EncryptedDisk::read_at`] decrypts into the caller's buffer, which a backend then copies
//! into guest memory: two passes over every byte after the kernel's copy. Here a read is one
//! `pread` of ciphertext into a [`Sealed`] buffer and one pass of the cipher from it straight
//! into guest memory; a write is one pass of the cipher from guest memory into the buffer and
//! one `pwrite`. Guest memory of a write is only read, so the guest never sees ciphertext.
//!
//! A [`Sealed`] buffer knows the guest offset of its bytes and hands them out in order, so
//! every byte is deciphered under its own tweak and nothing but ciphertext made here is ever
//! written. Ranges must be whole data units ([`EncryptedDisk::whole_units`]); anything else
//! (a 512-byte write into a 4096-byte unit) goes through `read_at`/`write_at`, which
//! read-modify-write.

use vm_memory::bitmap::BitmapSlice;
use vm_memory::volatile_memory::VolatileSlice;
use zeroize::Zeroizing;

use super::{EncryptedDisk, Route};
use crate::holes::is_zero;
use crate::{Error, Result};

/// What a hole reads as, copied out in pieces.
static ZEROS: [u8; 4096] = [0; 4096];

/// A worker's buffer of ciphertext for one step of out-of-place guest I/O: filled by
/// [`EncryptedDisk::read_sealed`] or [`EncryptedDisk::seal_from`], emptied in order by
/// [`EncryptedDisk::open_into`] or [`EncryptedDisk::write_sealed`]. Zeroized on drop.
pub struct Sealed {
    buf: Zeroizing<Vec<u8>>,
    /// The guest offset of `buf[0]`.
    at: u64,
    /// Bytes that hold ciphertext for `at..`.
    len: usize,
    /// Bytes already opened (reads).
    pos: usize,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("capacity", &self.buf.len())
            .field("at", &self.at)
            .field("len", &self.len)
            .finish()
    }
}

impl Sealed {
    /// A buffer for steps of up to `bytes` (rounded up to whole 4096-byte units).
    pub fn new(bytes: usize) -> Sealed {
        let bytes = bytes.div_ceil(4096).max(1) * 4096;
        Sealed {
            buf: Zeroizing::new(vec![0u8; bytes]),
            at: 0,
            len: 0,
            pos: 0,
        }
    }

    /// The largest step.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

impl EncryptedDisk {
    /// Reads the ciphertext of `len` bytes at guest `offset` (whole units, at most the
    /// buffer's capacity, inside the range of `route`) into `sealed`, to be opened into guest
    /// memory in order under the same route.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range that is not whole units inside the disk and the
    /// route or larger than the buffer; [`Error::Io`].
    pub fn read_sealed(
        &self,
        route: &Route<'_>,
        sealed: &mut Sealed,
        offset: u64,
        len: usize,
    ) -> Result<()> {
        self.check_step(sealed, offset, len)?;
        self.check_route(route, offset, len)?;
        sealed.len = 0;
        sealed.pos = 0;
        let buf = &mut sealed.buf[..len];
        route.each_side(offset, len, |run, at, side| {
            self.payload.read_at(&mut buf[run], side.base + at)
        })?;
        sealed.at = offset;
        sealed.len = len;
        Ok(())
    }

    /// Deciphers the next `dst.len()` bytes of `sealed` into `dst` (guest memory, whole
    /// units); a unit that is a hole reads as zeros.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `dst` is not whole units or runs past what was read.
    pub fn open_into<B: BitmapSlice>(
        &self,
        route: &Route<'_>,
        sealed: &mut Sealed,
        dst: &VolatileSlice<'_, B>,
    ) -> Result<()> {
        let n = dst.len();
        let u = self.unit.bytes();
        if !n.is_multiple_of(u) || sealed.pos + n > sealed.len {
            return Err(Error::input(format!(
                "{}: {n} bytes of guest memory do not fit the {} bytes left of a read in {u}-byte units",
                self.path.display(),
                sealed.len - sealed.pos
            )));
        }
        let from = sealed.pos;
        self.check_route(route, sealed.at + from as u64, n)?;
        let src = &sealed.buf[from..from + n];
        let mut i = 0;
        while i < n {
            let hole = is_zero(&src[i..i + u]);
            let mut j = i + u;
            while j < n && is_zero(&src[j..j + u]) == hole {
                j += u;
            }
            let part = dst.subslice(i, j - i).map_err(guest_range)?;
            if hole {
                let mut k = 0;
                while k < j - i {
                    let m = (j - i - k).min(ZEROS.len());
                    part.subslice(k, m)
                        .map_err(guest_range)?
                        .copy_from(&ZEROS[..m]);
                    k += m;
                }
            } else {
                let at = sealed.at + (from + i) as u64;
                route.each_side(at, j - i, |run, at, side| {
                    let dst = part.subslice(run.start, run.len()).map_err(guest_range)?;
                    side.cipher.decrypt_sectors_into(
                        &src[i + run.start..i + run.end],
                        &dst,
                        at,
                        self.unit,
                    )
                })?;
            }
            i = j;
        }
        sealed.pos += n;
        Ok(())
    }

    /// Starts a sealed write of guest offset `offset`: the buffer is emptied.
    pub fn begin_seal(&self, sealed: &mut Sealed, offset: u64) {
        sealed.at = offset;
        sealed.len = 0;
        sealed.pos = 0;
    }

    /// Enciphers `src` (guest memory, whole units) as the next bytes of the write that
    /// [`EncryptedDisk::begin_seal`] started. Guest memory is only read.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the write would not be whole units inside the disk or
    /// would overflow the buffer.
    pub fn seal_from<B: BitmapSlice>(
        &self,
        route: &Route<'_>,
        sealed: &mut Sealed,
        src: &VolatileSlice<'_, B>,
    ) -> Result<()> {
        let n = src.len();
        let at = sealed.at + sealed.len as u64;
        self.check_step(sealed, sealed.at, sealed.len + n)?;
        self.check_route(route, at, n)?;
        let dst = &mut sealed.buf[sealed.len..sealed.len + n];
        route.each_side(at, n, |run, at, side| {
            let src = src.subslice(run.start, run.len()).map_err(guest_range)?;
            side.cipher
                .encrypt_sectors_from(&src, &mut dst[run], at, self.unit)
        })?;
        sealed.len += n;
        Ok(())
    }

    /// Writes the bytes sealed since [`EncryptedDisk::begin_seal`] at their offset; the
    /// buffer is then empty. Durable after [`EncryptedDisk::flush`].
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_sealed(&self, route: &Route<'_>, sealed: &mut Sealed) -> Result<()> {
        let n = std::mem::take(&mut sealed.len);
        self.check_route(route, sealed.at, n)?;
        self.write_raw(route, &sealed.buf[..n], sealed.at)
    }

    /// A step must stay inside the range its route was let through for: an online job's
    /// window may be rewritten anywhere else.
    fn check_route(&self, route: &Route<'_>, offset: u64, len: usize) -> Result<()> {
        if route.covers(offset, len) {
            Ok(())
        } else {
            Err(Error::input(format!(
                "{}: a step of {len} bytes at {offset} is outside the range its route was let through for",
                self.path.display()
            )))
        }
    }

    fn check_step(&self, sealed: &Sealed, offset: u64, len: usize) -> Result<()> {
        if len > sealed.capacity() || !self.whole_units(offset, len as u64) {
            return Err(Error::input(format!(
                "{}: a step of {len} bytes at {offset} is not whole {}-byte units inside the disk's {} bytes and a buffer of {}",
                self.path.display(),
                self.unit.bytes(),
                self.len,
                sealed.capacity()
            )));
        }
        Ok(())
    }
}

fn guest_range(e: vm_memory::volatile_memory::Error) -> Error {
    Error::input(format!("guest memory: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::disk_with;
    use super::*;
    use crate::Scratch;

    #[test]
    fn out_of_place_reads_and_writes_match_read_at_and_write_at() {
        // Encrypted with both units, and a plaintext disk (`serve --plaintext`).
        for unit in [
            Some(vmcrypt_xts::SectorSize::S512),
            Some(vmcrypt_xts::SectorSize::S4096),
            None,
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let plain: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8 + 1).collect();
            let disk = match unit {
                Some(unit) => disk_with(dir.path(), &plain, unit).0,
                None => {
                    let img = dir.path().join("p.img");
                    std::fs::write(&img, &plain).expect("write");
                    EncryptedDisk::open_plaintext(&img).expect("open")
                }
            };
            let mut sealed = Sealed::new(64 * 1024);
            // A read of 40 KiB opened into three guest segments.
            let mut guest = vec![0u8; 40 * 1024];
            {
                let r = disk.route(8192, 44 * 1024);
                disk.read_sealed(&r, &mut sealed, 8192, guest.len())
                    .expect("read");
                let (a, rest) = guest.split_at_mut(4096);
                let (b, c) = rest.split_at_mut(20 * 1024);
                for seg in [a, b, c] {
                    disk.open_into(&r, &mut sealed, &VolatileSlice::from(seg))
                        .expect("open");
                }
                // Nothing more was read.
                let mut more = [0u8; 4096];
                assert!(
                    disk.open_into(&r, &mut sealed, &VolatileSlice::from(&mut more[..]))
                        .is_err()
                );
            }
            assert_eq!(guest, plain[8192..8192 + 40 * 1024], "unit {unit:?}");
            // A write of two guest segments; the guest's bytes are untouched.
            let mut w1 = vec![0x11u8; 8192];
            let mut w2 = vec![0x22u8; 4096];
            {
                let r = disk.route(16384, 12288);
                disk.begin_seal(&mut sealed, 16384);
                disk.seal_from(&r, &mut sealed, &VolatileSlice::from(&mut w1[..]))
                    .expect("seal");
                disk.seal_from(&r, &mut sealed, &VolatileSlice::from(&mut w2[..]))
                    .expect("seal");
                disk.write_sealed(&r, &mut sealed).expect("write");
            }
            assert!(w1.iter().all(|b| *b == 0x11) && w2.iter().all(|b| *b == 0x22));
            let mut back = vec![0u8; 12288];
            disk.read_at(&mut back, 16384).expect("read_at");
            assert_eq!(&back[..8192], &w1[..]);
            assert_eq!(&back[8192..], &w2[..]);
            // And what write_at writes, open_into reads.
            let mut scratch = Scratch::new(8192);
            disk.write_at(&[0x33u8; 8192], 65536, &mut scratch)
                .expect("write_at");
            let mut g = vec![0u8; 8192];
            {
                let r = disk.route(65536, 8192);
                disk.read_sealed(&r, &mut sealed, 65536, 8192)
                    .expect("read");
                disk.open_into(&r, &mut sealed, &VolatileSlice::from(&mut g[..]))
                    .expect("open");
            }
            assert!(g.iter().all(|b| *b == 0x33));
            if unit.is_none() {
                disk.flush().expect("flush");
                let f = std::fs::read(dir.path().join("p.img")).expect("file");
                assert_eq!(&f[16384..16384 + 8192], &w1[..], "stored as written");
                assert!(f[65536..65536 + 8192].iter().all(|b| *b == 0x33));
            }
        }
    }

    #[test]
    fn holes_read_as_zeros_and_bad_steps_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain: Vec<u8> = (0..128 * 1024u32).map(|i| (i % 241) as u8 + 1).collect();
        let (disk, _img) = disk_with(dir.path(), &plain, vmcrypt_xts::SectorSize::S4096);
        disk.discard(8192, 8192).expect("discard");
        let mut sealed = Sealed::new(32 * 1024);
        let mut g = vec![0xeeu8; 24 * 1024];
        {
            let r = disk.route(4096, g.len());
            disk.read_sealed(&r, &mut sealed, 4096, g.len())
                .expect("read");
            disk.open_into(&r, &mut sealed, &VolatileSlice::from(&mut g[..]))
                .expect("open");
        }
        assert_eq!(&g[..4096], &plain[4096..8192]);
        assert!(g[4096..12288].iter().all(|b| *b == 0), "the hole");
        assert_eq!(&g[12288..], &plain[16384..28672]);

        let len = disk.len();
        {
            let r = disk.route(0, len as usize);
            for (off, n) in [
                (512u64, 4096usize),
                (0, 1024),
                (len - 4096, 8192),
                (0, 64 * 1024),
            ] {
                assert!(
                    disk.read_sealed(&r, &mut sealed, off, n).is_err(),
                    "{off} {n}"
                );
            }
            disk.begin_seal(&mut sealed, len - 4096);
            let mut two = vec![1u8; 8192];
            assert!(
                disk.seal_from(&r, &mut sealed, &VolatileSlice::from(&mut two[..]))
                    .is_err()
            );
            let mut odd = vec![1u8; 512];
            disk.begin_seal(&mut sealed, 0);
            assert!(
                disk.seal_from(&r, &mut sealed, &VolatileSlice::from(&mut odd[..]))
                    .is_err()
            );
            // Nothing was sealed, so nothing is written.
            disk.write_sealed(&r, &mut sealed).expect("empty write");
        }
        // A step outside the range its route was let through for is refused, reading and
        // writing, and nothing is written.
        {
            let r = disk.route(0, 8192);
            assert!(disk.read_sealed(&r, &mut sealed, 8192, 4096).is_err());
            assert!(disk.read_sealed(&r, &mut sealed, 4096, 8192).is_err());
            let mut w = vec![9u8; 4096];
            disk.begin_seal(&mut sealed, 8192);
            assert!(
                disk.seal_from(&r, &mut sealed, &VolatileSlice::from(&mut w[..]))
                    .is_err()
            );
            disk.begin_seal(&mut sealed, 4096);
            disk.seal_from(&r, &mut sealed, &VolatileSlice::from(&mut w[..]))
                .expect("inside");
            // Moved past the route by hand: the write is refused.
            sealed.at = 8192;
            assert!(disk.write_sealed(&r, &mut sealed).is_err());
        }
        let mut back = vec![0u8; 4096];
        disk.read_at(&mut back, 0).expect("read");
        assert_eq!(back, plain[..4096]);
    }
}
