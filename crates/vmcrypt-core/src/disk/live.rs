//! An encrypted disk opened for live I/O: what an NBD or vhost-user server reads and writes
//! for a running guest, by guest byte offset, with the XTS tweak of each data unit derived
//! here, never by the caller.
//!
//! The handle holds the disk's lock for its whole life, so no vmcrypt job (and no QEMU tool
//! that takes its image locks) can change the disk under a running guest. I/O is `pread` /
//! `pwrite` at the payload's place in its file; methods take `&self`, so one handle serves many
//! threads, each with its own [`Scratch`] (the hot path allocates nothing).
//!
//! Ranges are in 512-byte blocks ([`MIN_BLOCK`]). A data unit covered in part is
//! read-modify-written under a per-unit lock, so two writers of the halves of one unit never
//! lose each other's bytes; whole units are written directly. Guest writes that overlap while
//! both are in flight have no defined result on any block device, and none here either.
//!
//! Holes (crate::holes): an all-zero unit on disk reads as zeros; [`EncryptedDisk::discard`]
//! and [`EncryptedDisk::write_zeroes`] punch holes for the whole units they cover.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use vmcrypt_xts::SectorSize;
use zeroize::Zeroizing;

use super::DiskState;
use crate::engine::Storage;
use crate::engine::online::OnlineJournal;
use crate::keysafe::KeyRing;
use crate::lock::DiskLock;
use crate::provider::ProviderRegistry;
use crate::{Error, Result, holes};

mod cipher;
mod files;
mod job;
mod route;
mod shallow;
#[doc(hidden)]
pub use files::{Files, OnDisk, Store};
pub use job::{CONTROL_EXT, JobKind, JobStatus, ONLINE_WINDOW, control_path};
pub use route::Route;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod online_convert_tests;
#[cfg(test)]
mod online_crash_tests;
#[cfg(test)]
mod online_job_tests;
#[cfg(test)]
mod online_tests;
#[cfg(test)]
mod plaintext_tests;
use route::{Router, Side};

#[cfg(feature = "guest-memory")]
mod guest;
#[cfg(feature = "guest-memory")]
pub use guest::Sealed;

/// The alignment of every range: a logical block of every virtual disk.
pub const MIN_BLOCK: u64 = 512;

/// Stripes of the partial-unit locks (a partial write locks the stripe of its unit).
const STRIPES: usize = 64;

/// The largest data unit.
const MAX_UNIT: usize = 4096;

/// An online job reads, reciphers and writes its window in pieces of this size, in parallel
/// (whole units of every size).
const WINDOW_PIECE: usize = 128 << 10;

/// A worker's buffer for writes: plaintext is copied into it and encrypted there, so a
/// caller's buffer (a client's data, guest memory) is never modified and never holds
/// ciphertext. Its size bounds one step of a write, not the write. Zeroized on drop.
pub struct Scratch {
    buf: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("bytes", &self.buf.len())
            .finish()
    }
}

impl Scratch {
    /// The default step: 1 MiB.
    pub const DEFAULT: usize = 1 << 20;

    /// A buffer of `bytes` rounded up to whole 4096-byte units (at least one).
    pub fn new(bytes: usize) -> Scratch {
        let bytes = bytes.div_ceil(MAX_UNIT).max(1) * MAX_UNIT;
        Scratch {
            buf: Zeroizing::new(vec![0u8; bytes]),
        }
    }
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch::new(Scratch::DEFAULT)
    }
}

/// An encrypted disk open for reading and writing by guest offset; see the module docs.
pub struct EncryptedDisk {
    _lock: DiskLock,
    path: PathBuf,
    payload_path: PathBuf,
    /// The payload file (a simulated store in the power-loss tests).
    payload: Store,
    /// Where the payload and the journal are opened.
    files: std::sync::Arc<dyn Files>,
    /// The metadata and the online job, if any.
    control: Mutex<job::Control>,
    /// The key of each unit (two during an online job), and the gate of the job's window.
    keys: Router,
    unit: SectorSize,
    len: u64,
    partial: [Mutex<()>; STRIPES],
}

impl std::fmt::Debug for EncryptedDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedDisk")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("unit", &self.unit.bytes())
            .finish_non_exhaustive()
    }
}

impl EncryptedDisk {
    /// Opens an encrypted disk under its lock and unwraps its DEK through `registry`.
    ///
    /// # Errors
    /// [`Error::InUse`] when a job or program holds the disk; [`Error::NotEncrypted`];
    /// [`Error::JobUnderWay`] while an in-place job is unfinished (resume it first);
    /// [`Error::Integrity`] for a payload that does not match its metadata;
    /// [`Error::UnwrapFailed`]; provider and I/O errors.
    pub fn open(path: &Path, registry: &dyn ProviderRegistry) -> Result<EncryptedDisk> {
        Self::open_with(path, &KeyRing::new(registry))
    }

    /// [`EncryptedDisk::open`] with the KEKs of a job that may have fetched them already.
    pub(crate) fn open_with(path: &Path, ring: &KeyRing<'_>) -> Result<EncryptedDisk> {
        Self::open_in(path, ring, std::sync::Arc::new(OnDisk))
    }

    /// [`EncryptedDisk::open`] with the payload and the journal in `files` (the power-loss
    /// tests' simulated stores).
    #[doc(hidden)]
    pub fn open_on(
        path: &Path,
        registry: &dyn ProviderRegistry,
        files: std::sync::Arc<dyn Files>,
    ) -> Result<EncryptedDisk> {
        Self::open_in(path, &KeyRing::new(registry), files)
    }

    fn open_in(
        path: &Path,
        ring: &KeyRing<'_>,
        files: std::sync::Arc<dyn Files>,
    ) -> Result<EncryptedDisk> {
        let (lock, disk) = super::open_for_job(path)?;
        // A journal beside a disk with no job recorded is left by a start that crashed.
        let disk = super::cleanup::clear_unrecorded_job(disk)?;
        let meta = disk.require_encrypted()?.clone();
        let (current, job) = match meta.state {
            DiskState::Encrypted => (
                Side {
                    cipher: cipher::UnitCipher::Xts(disk.open_key(ring)?.secret.xts()?),
                    base: meta.identity.payload_offset,
                },
                None,
            ),
            s if s.is_online() => {
                let sides = job::recorded_job(&disk, ring, files.as_ref())?;
                (sides.old, Some((sides.new, sides.job)))
            }
            other => return Err(Error::job_under_way(path, other.as_str())),
        };
        let payload = files.open_payload(disk.payload_path())?;
        tracing::info!(disk = %path.display(), bytes = meta.identity.payload_size, "disk open for live I/O");
        let mut opened = EncryptedDisk {
            _lock: lock,
            path: path.to_path_buf(),
            payload_path: disk.payload_path().to_path_buf(),
            payload,
            files,
            control: Mutex::new(job::Control { disk, job: None }),
            keys: Router::new(current),
            unit: meta.identity.sector_size,
            len: meta.identity.payload_size,
            partial: std::array::from_fn(|_| Mutex::new(())),
        };
        if let Some((new, job)) = job {
            opened.resume_job(new, job)?;
            tracing::info!(disk = %path.display(), done = opened.keys.boundary(), "online job taken up");
        }
        Ok(opened)
    }

    /// Opens a plaintext disk (one vmcrypt has not encrypted: no metadata) under its lock for
    /// live I/O, as `vmcrypt serve --plaintext` serves it: bytes are stored as the guest
    /// sees them, in 512-byte blocks, and the lock keeps every other writer away as it does
    /// for an encrypted disk.
    ///
    /// # Errors
    /// [`Error::InUse`] when a job or program holds the disk; [`Error::InvalidInput`] for an
    /// encrypted disk (serve it with its key) or a payload that is empty or not whole
    /// 512-byte blocks; [`Error::Io`].
    pub fn open_plaintext(path: &Path) -> Result<EncryptedDisk> {
        Self::open_plaintext_on(path, std::sync::Arc::new(OnDisk))
    }

    /// [`EncryptedDisk::open_plaintext`] with the payload and the journal in `files`.
    #[doc(hidden)]
    pub fn open_plaintext_on(
        path: &Path,
        files: std::sync::Arc<dyn Files>,
    ) -> Result<EncryptedDisk> {
        let (lock, disk) = super::open_for_job(path)?;
        let disk = super::cleanup::clear_unrecorded_job(disk)?;
        if let Some(meta) = disk.encryption() {
            return Err(Error::input(format!(
                "{} is encrypted ({}): serve it without --plaintext",
                path.display(),
                meta.state.as_str()
            )));
        }
        let len = disk.payload_len();
        if len == 0 || !len.is_multiple_of(MIN_BLOCK) {
            return Err(Error::input(format!(
                "{}: {len} bytes is not a whole number of 512-byte blocks",
                path.display()
            )));
        }
        let payload = files.open_payload(disk.payload_path())?;
        tracing::info!(disk = %path.display(), bytes = len, "plaintext disk open for live I/O");
        Ok(EncryptedDisk {
            _lock: lock,
            path: path.to_path_buf(),
            payload_path: disk.payload_path().to_path_buf(),
            payload,
            files,
            keys: Router::new(Side {
                cipher: cipher::UnitCipher::Plain,
                base: disk.payload_offset(),
            }),
            control: Mutex::new(job::Control { disk, job: None }),
            unit: SectorSize::S512,
            len,
            partial: std::array::from_fn(|_| Mutex::new(())),
        })
    }

    /// Whether the disk is served as plaintext ([`EncryptedDisk::open_plaintext`]).
    pub fn is_plaintext(&self) -> bool {
        self.control().disk.encryption().is_none()
    }

    /// The disk that was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The guest-visible size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the disk has no bytes (never, for a disk vmcrypt encrypted).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The XTS data unit in bytes (512 or 4096): ranges of whole aligned units need no
    /// read-modify-write.
    pub fn unit_size(&self) -> usize {
        self.unit.bytes()
    }

    /// Reads and decrypts `buf.len()` bytes at guest byte `offset` (both multiples of 512).
    /// The whole units are read straight into `buf` and decrypted there.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range not in 512-byte blocks or past the end (nothing
    /// is read); [`Error::Io`].
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(offset, buf.len())?;
        let r = self.route(offset, buf.len());
        self.for_each_part(offset, buf.len(), |at, range, whole| {
            let part = &mut buf[range];
            if whole {
                self.read_units(&r, part, at)
            } else {
                let (start, from) = self.unit_of(at);
                let mut block = Zeroizing::new([0u8; MAX_UNIT]);
                let block = &mut block[..self.unit.bytes()];
                self.read_units(&r, block, start)?;
                part.copy_from_slice(&block[from..from + part.len()]);
                Ok(())
            }
        })
    }

    /// Encrypts and writes `buf` at guest byte `offset` (both multiples of 512), through
    /// `scratch`; `buf` is not modified. Durable after [`EncryptedDisk::flush`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range not in 512-byte blocks or past the end (nothing
    /// is written); [`Error::Io`].
    pub fn write_at(&self, buf: &[u8], offset: u64, scratch: &mut Scratch) -> Result<()> {
        self.check(offset, buf.len())?;
        let r = self.route(offset, buf.len());
        self.for_each_part(offset, buf.len(), |at, range, whole| {
            let part = &buf[range];
            if whole {
                let size = scratch.buf.len();
                for (i, step) in part.chunks(size).enumerate() {
                    let sealed = &mut scratch.buf[..step.len()];
                    sealed.copy_from_slice(step);
                    let off = at + (i * size) as u64;
                    r.each_side(off, step.len(), |run, at, side| {
                        let bytes = &mut sealed[run];
                        side.cipher.encrypt_sectors(bytes, at, self.unit)?;
                        self.payload.write_at(bytes, side.base + at)
                    })?;
                }
                Ok(())
            } else {
                self.patch_unit(&r, at, scratch, |block, from| {
                    block[from..from + part.len()].copy_from_slice(part);
                })
            }
        })
    }

    /// Makes `len` bytes at `offset` read as zeros: the whole units a hole (or, with
    /// `allocate`, zero bytes written in place, which read as zeros just the same), the units
    /// covered in part read-modify-written.
    ///
    /// # Errors
    /// As [`EncryptedDisk::write_at`].
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        allocate: bool,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let len = self.check(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        let r = self.route(offset, len);
        self.for_each_part(offset, len, |at, range, whole| {
            let n = (range.end - range.start) as u64;
            if whole {
                if allocate || !self.punch(&r, at, n)? {
                    self.write_zero_bytes(&r, at, n, scratch)?;
                }
                Ok(())
            } else {
                self.patch_unit(&r, at, scratch, |block, from| {
                    block[from..from + n as usize].fill(0);
                })
            }
        })
    }

    /// Gives back the room of the whole units in `len` bytes at `offset` (a hole: they read
    /// as zeros); units covered in part are left as they are, as a discard may.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a range not in 512-byte blocks or past the end; [`Error::Io`].
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let len = self.check(offset, usize::try_from(len).unwrap_or(usize::MAX))?;
        // A hole is the same under any key, but the job's window must not change under it.
        let r = self.route(offset, len);
        self.for_each_part(offset, len, |at, range, whole| {
            if whole {
                self.punch(&r, at, (range.end - range.start) as u64)?;
            }
            Ok(())
        })
    }

    /// Makes every write so far durable (`fdatasync` of the payload file).
    ///
    /// # Errors
    /// [`Error::Io`]; a failed flush is never retried (the page cache may have dropped the
    /// data), it is reported.
    pub fn flush(&self) -> Result<()> {
        self.payload.sync()
    }

    /// Splits `len` bytes at `offset` into the unit covered in part at the start, the whole
    /// units, and the unit covered in part at the end; calls `f(guest offset, range in the
    /// caller's buffer, whole)` for each that is not empty.
    fn for_each_part(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, std::ops::Range<usize>, bool) -> Result<()>,
    ) -> Result<()> {
        let unit = self.unit.bytes() as u64;
        let end = offset + len as u64;
        let head_end = if offset.is_multiple_of(unit) {
            offset
        } else {
            offset.next_multiple_of(unit).min(end)
        };
        let tail_start = if end.is_multiple_of(unit) {
            end
        } else {
            (end - end % unit).max(head_end)
        };
        let at = |o: u64| (o - offset) as usize;
        for (from, to, whole) in [
            (offset, head_end, false),
            (head_end, tail_start, true),
            (tail_start, end, false),
        ] {
            if to > from {
                f(from, at(from)..at(to), whole)?;
            }
        }
        Ok(())
    }

    /// Starts an online job of `kind` towards `new`: from now on the units below the job's
    /// boundary (0 at first) are under `new`. Waits for the requests in flight. The caller
    /// records the job durably before the first window (the online job, issue 18).
    pub(crate) fn begin_windows(&self, kind: JobKind, new: Side) {
        self.keys.begin(kind, new);
    }

    /// Locks the next window of an online job, the `len` bytes at the boundary (whole
    /// units), and puts them into `buf` under the new key, while guests go on: requests that
    /// touch the window wait until it is unlocked, the others never do. Nothing is written:
    /// the caller journals `buf`, then [`EncryptedDisk::write_window`], then marks the window
    /// done durably and calls [`route::WindowLock::done`] (the boundary moves past the
    /// window). Dropped before that, the lock leaves the boundary where it was.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] outside a job or for a window not whole units inside the disk
    /// or larger than `buf`; I/O errors.
    pub(crate) fn lock_window(&self, len: u64, buf: &mut [u8]) -> Result<route::WindowLock<'_>> {
        let at = self
            .keys
            .boundary()
            .ok_or_else(|| Error::input("no online job is under way"))?;
        let n = len as usize;
        if len == 0 || !self.whole_units(at, len) || buf.len() < n {
            return Err(Error::input(format!(
                "{}: a window of {len} bytes at {at} is not whole units inside the disk",
                self.path.display()
            )));
        }
        let lock = self.keys.lock_window(at, at + len);
        let buf = &mut buf[..n];
        lock.with_sides(|old, new| {
            use rayon::prelude::*;
            // In pieces on every core, each read and reciphered in cache: guests that touch
            // the window wait for all of this.
            buf.par_chunks_mut(WINDOW_PIECE)
                .enumerate()
                .try_for_each(|(i, piece)| {
                    let from = at + (i * WINDOW_PIECE) as u64;
                    self.payload.read_at(piece, old.base + from)?;
                    holes::for_each_data_run(piece, self.unit, |run, o| {
                        let o = from + o as u64;
                        old.cipher.decrypt_sectors(run, o, self.unit)?;
                        new.cipher.encrypt_sectors(run, o, self.unit)?;
                        Ok(())
                    })
                })
        })
        .ok_or_else(|| Error::input("no online job is under way"))??;
        Ok(lock)
    }

    /// Writes a locked window's bytes under the new key (what [`EncryptedDisk::lock_window`]
    /// put in `buf`) over the payload at the new side's place, durably (`fdatasync`),
    /// keeping its holes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `buf` is shorter than the window; I/O errors (the window
    /// may then be written in part: the caller's journal restores it).
    pub(crate) fn write_window(&self, lock: &route::WindowLock<'_>, buf: &[u8]) -> Result<()> {
        let (at, end) = lock.range();
        let bytes = buf
            .get(..(end - at) as usize)
            .ok_or_else(|| Error::input("the window's bytes are shorter than the window"))?;
        let (to, moved) = lock
            .with_sides(|old, new| (new.base, old.base != new.base))
            .ok_or_else(|| Error::input("no online job is under way"))?;
        use rayon::prelude::*;
        // In place, all-zero units are skipped: they read as zeros on the payload already (a
        // hole, or zeros written), since the window was read while locked, and writing them
        // would fill the disk's holes. Moved, the new place holds a done window's old bytes:
        // zero units are punched there (or zeros written, where the file system cannot).
        bytes
            .par_chunks(WINDOW_PIECE)
            .enumerate()
            .try_for_each(|(i, piece)| {
                let from = at + (i * WINDOW_PIECE) as u64;
                holes::runs(piece, self.unit).try_for_each(|(a, b, zero)| -> Result<()> {
                    let place = to + from + a as u64;
                    let write = !zero || (moved && !self.payload.punch(place, (b - a) as u64)?);
                    if write {
                        self.payload.write_at(&piece[a..b], place)?;
                    }
                    Ok(())
                })
            })?;
        self.flush()
    }

    /// One window of an online rekey, crash-safely: lock it, record its new bytes in the
    /// journal, write them over the payload, mark the window done, unlock it (each step
    /// durable before the next; see engine::online). Returns false, doing nothing, once the
    /// boundary is at the end of the disk.
    ///
    /// # Errors
    /// As [`EncryptedDisk::lock_window`]; journal and payload I/O errors (the window then
    /// stays locked until the error is returned and is done again when the job goes on).
    pub(crate) fn window_step(
        &self,
        journal: &OnlineJournal,
        store: &dyn Storage,
        buf: &mut [u8],
    ) -> Result<bool> {
        let Some(at) = self.keys.boundary() else {
            return Err(Error::input("no online job is under way"));
        };
        if at >= self.len {
            return Ok(false);
        }
        let n = journal.window().min(self.len - at);
        let lock = self.lock_window(n, buf)?;
        crate::failpoint::hit("online-window-locked");
        journal.record(store, at, &buf[..n as usize])?;
        crate::failpoint::hit("online-slot-synced");
        self.write_window(&lock, buf)?;
        crate::failpoint::hit("online-window-synced");
        journal.mark_done(store, at)?;
        crate::failpoint::hit("online-done-synced");
        lock.done();
        Ok(true)
    }

    /// Takes up an online job after a restart, before the disk is served: the journal says
    /// where it was; a window that was locked when the process died is written back from its
    /// slot (durably); units below the boundary are under `new` from now on.
    ///
    /// # Errors
    /// [`Error::Integrity`] for a journal that fails authentication or does not fit; I/O
    /// errors. Nothing is written when a check fails.
    pub(crate) fn resume_windows(
        &self,
        kind: JobKind,
        new: Side,
        journal: &OnlineJournal,
        store: &dyn Storage,
    ) -> Result<()> {
        let r = journal.recover(store)?;
        if let Some((at, bytes)) = &r.replay {
            self.payload.write_at(bytes, new.base + *at)?;
            self.flush()?;
        }
        self.keys.resume(kind, new, r.boundary);
        Ok(())
    }

    /// Ends an online job whose boundary reached the end of the disk: every unit is under
    /// the new key from now on.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the boundary has not reached the end.
    pub(crate) fn finish_windows(&self) -> Result<()> {
        match self.keys.boundary() {
            Some(b) if b == self.len => {
                self.keys.finish();
                Ok(())
            }
            _ => Err(Error::input(
                "the online job has not reached the end of the disk",
            )),
        }
    }

    /// Whether `len` bytes at `offset` are whole data units inside the disk: what the
    /// out-of-place calls and the windows of an online job take.
    pub fn whole_units(&self, offset: u64, len: u64) -> bool {
        let u = self.unit.bytes() as u64;
        offset.is_multiple_of(u)
            && len.is_multiple_of(u)
            && offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Lets an I/O of `len` bytes at guest `offset` through the gate of an online job (at
    /// once unless it touches the window being rewritten) and gives the key of each of its
    /// units. Every read and write of guest data holds one for as long as it touches the
    /// disk; the out-of-place calls take it from the caller.
    pub fn route(&self, offset: u64, len: usize) -> Route<'_> {
        self.keys.enter(offset, offset.saturating_add(len as u64))
    }

    /// Reads whole units at guest offset `at` and decrypts them; holes read as zeros.
    fn read_units(&self, r: &Route<'_>, buf: &mut [u8], at: u64) -> Result<()> {
        r.each_side(at, buf.len(), |run, at, side| {
            let bytes = &mut buf[run];
            self.payload.read_at(bytes, side.base + at)?;
            side.cipher.open_units(bytes, at, self.unit)
        })
    }

    /// Where guest offset 0 of the units outside a job is in the payload file (0 unless an
    /// offline in-place encryption moved the payload).
    pub(crate) fn base(&self) -> u64 {
        self.keys.base()
    }

    /// Read-modify-writes the unit holding guest offset `at`, under its stripe's lock:
    /// `patch(plaintext unit, offset of at in it)`.
    fn patch_unit(
        &self,
        r: &Route<'_>,
        at: u64,
        scratch: &mut Scratch,
        patch: impl FnOnce(&mut [u8], usize),
    ) -> Result<()> {
        let (start, from) = self.unit_of(at);
        let n = self.unit.bytes() as u64;
        let _serial = self.partial[(start / n) as usize % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let block = &mut scratch.buf[..n as usize];
        self.read_units(r, block, start)?;
        patch(block, from);
        r.side(start, start + n)
            .0
            .cipher
            .encrypt_sectors(block, start, self.unit)?;
        self.write_raw(r, block, start)
    }

    /// The start of the unit holding guest offset `at`, and `at`'s offset in it.
    fn unit_of(&self, at: u64) -> (u64, usize) {
        let n = self.unit.bytes() as u64;
        (at - at % n, (at % n) as usize)
    }

    /// Writes bytes as they are (ciphertext, or zeros) at guest offset `at`, each run at its
    /// side's place.
    fn write_raw(&self, r: &Route<'_>, bytes: &[u8], at: u64) -> Result<()> {
        r.each_side(at, bytes.len(), |run, at, side| {
            self.payload.write_at(&bytes[run], side.base + at)
        })
    }

    fn write_zero_bytes(
        &self,
        r: &Route<'_>,
        at: u64,
        len: u64,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let step = scratch.buf.len() as u64;
        scratch.buf.fill(0);
        let mut done = 0;
        while done < len {
            let n = step.min(len - done);
            self.write_raw(r, &scratch.buf[..n as usize], at + done)?;
            done += n;
        }
        Ok(())
    }

    /// Punches a hole; false when the file system cannot.
    fn punch(&self, r: &Route<'_>, at: u64, len: u64) -> Result<bool> {
        let mut punched = true;
        r.each_side(at, len as usize, |run, at, side| {
            punched &= self
                .payload
                .punch(side.base + at, (run.end - run.start) as u64)?;
            Ok(())
        })?;
        Ok(punched)
    }

    /// Checks a range; returns its length.
    fn check(&self, offset: u64, len: usize) -> Result<usize> {
        let n = len as u64;
        let fits = offset.checked_add(n).is_some_and(|end| end <= self.len);
        if !fits || !offset.is_multiple_of(MIN_BLOCK) || !n.is_multiple_of(MIN_BLOCK) {
            return Err(Error::input(format!(
                "{}: I/O of {n} bytes at {offset} is not whole {MIN_BLOCK}-byte blocks inside the disk's {} bytes",
                self.path.display(),
                self.len
            )));
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::provider::KeyProvider;
    use crate::provider::native::NativeProvider;
    use crate::{DiskJob, NoProgress};

    #[test]
    fn reads_and_writes_by_offset_match_the_offline_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = dir.path().join("native.keystore");
        NativeProvider::create("native", &ks).expect("keystore");
        let registry = move |name: &str| -> Result<Arc<dyn KeyProvider>> {
            Ok(Arc::new(NativeProvider::open(name, &ks)?))
        };
        let img = dir.path().join("d.img");
        let plain: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&img, &plain).expect("write");
        let never = AtomicBool::new(false);
        DiskJob::encrypt(&img)
            .provider("native")
            .run(&registry, &NoProgress, &never)
            .expect("encrypt");
        let mut expect = plain.clone();
        {
            let disk = EncryptedDisk::open(&img, &registry).expect("open");
            assert_eq!(disk.len(), plain.len() as u64);
            let again = std::thread::scope(|s| {
                s.spawn(|| EncryptedDisk::open(&img, &registry).map(|_| ()))
                    .join()
                    .expect("thread")
            });
            assert!(
                matches!(again, Err(Error::InUse { .. })),
                "the handle holds the disk: {again:?}"
            );
            // A small scratch, so writes take several steps.
            let mut scratch = Scratch::new(8192);
            let mut buf = vec![0u8; 8192];
            disk.read_at(&mut buf, 4096).expect("read");
            assert_eq!(buf, plain[4096..12288]);
            let new = vec![0xabu8; 3 * 4096];
            disk.write_at(&new, 8192, &mut scratch).expect("write");
            assert_eq!(
                new,
                vec![0xabu8; 3 * 4096],
                "the caller's buffer is not touched"
            );
            expect[8192..8192 + 3 * 4096].copy_from_slice(&new);
            // 512-byte blocks inside a unit, across a boundary, and into whole units.
            for (at, n) in [(512u64, 512usize), (3584, 1024), (32768 - 512, 4096 + 1024)] {
                let bytes: Vec<u8> = (0..n).map(|i| (i % 7) as u8 + 1).collect();
                disk.write_at(&bytes, at, &mut scratch).expect("partial");
                expect[at as usize..at as usize + n].copy_from_slice(&bytes);
            }
            // Zeroes: punched whole units, a patched partial one, and allocated zeroes.
            disk.write_zeroes(65536 + 512, 3 * 4096, false, &mut scratch)
                .expect("zeroes");
            expect[65536 + 512..65536 + 512 + 3 * 4096].fill(0);
            disk.write_zeroes(131072, 4096, true, &mut scratch)
                .expect("allocated zeroes");
            expect[131072..131072 + 4096].fill(0);
            disk.discard(196608, 8192).expect("discard");
            expect[196608..196608 + 8192].fill(0);
            // Reads of partial units, and of the holes.
            for (at, n) in [
                (512u64, 1024usize),
                (3584, 1024),
                (65536, 4 * 4096),
                (196608, 8192),
            ] {
                let mut got = vec![0xffu8; n];
                disk.read_at(&mut got, at).expect("read");
                assert_eq!(got, expect[at as usize..at as usize + n], "{at} {n}");
            }
            for (at, n) in [(100u64, 4096usize), (4096, 100), (plain.len() as u64, 512)] {
                assert!(disk.read_at(&mut vec![0; n], at).is_err(), "{at} {n}");
                assert!(
                    disk.write_at(&vec![0; n], at, &mut scratch).is_err(),
                    "{at} {n}"
                );
            }
            assert!(
                disk.write_zeroes(plain.len() as u64 - 512, 1024, false, &mut scratch)
                    .is_err()
            );
            assert!(disk.discard(u64::MAX - 511, 512).is_err());
            disk.flush().expect("flush");
        }
        // The punched units are holes in the file.
        let on_disk = std::fs::read(&img).expect("read image");
        assert!(
            on_disk[65536 + 4096..65536 + 3 * 4096]
                .iter()
                .all(|&b| b == 0)
        );
        assert!(on_disk[196608..196608 + 8192].iter().all(|&b| b == 0));
        let out = dir.path().join("d.plain");
        DiskJob::decrypt(&img)
            .output(&out)
            .run(&registry, &NoProgress, &never)
            .expect("decrypt");
        assert_eq!(std::fs::read(&out).expect("read"), expect);
    }
}
