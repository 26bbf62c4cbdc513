//! Open file description locks (`F_OFD_SETLK`, `F_OFD_GETLK`): the one fcntl that neither std
//! nor rustix wraps (rustix's `fcntl_lock` takes process-associated POSIX locks, which any
//! `close` of the same file anywhere in the process drops).
//!
//! OFD locks belong to the open file description: they conflict with every other description
//! of the file, in this process too, and they end when its last descriptor closes. QEMU takes
//! the same kind on the images it opens (byte-range read locks from byte 100, one byte per
//! block permission), so a whole-file lock here and QEMU's locks exclude each other.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The kind of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared (`F_RDLCK`): the file must be open for reading.
    Read,
    /// Exclusive (`F_WRLCK`): the file must be open for writing.
    Write,
}

fn flock(kind: Kind, start: u64, len: u64) -> io::Result<libc::flock> {
    let off =
        |v: u64| libc::off_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    // SAFETY: `libc::flock` is a plain C struct of integers; all-zero is a valid value (and
    // l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        Kind::Read => libc::F_RDLCK,
        Kind::Write => libc::F_WRLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = off(start)?;
    // 0 means "to the end of the file, however far it grows".
    fl.l_len = off(len)?;
    Ok(fl)
}

/// Takes a lock on `len` bytes from `start` (0 = to the end, whatever the size) without
/// waiting. Ok(false) when another open file description holds a conflicting lock.
///
/// # Errors
/// The call's error (`EBADF` for a descriptor not open for the kind, `EINVAL`).
pub fn try_lock(file: &File, kind: Kind, start: u64, len: u64) -> io::Result<bool> {
    let fl = flock(kind, start, len)?;
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `file`), and
    // F_OFD_SETLK reads one `struct flock` through the pointer, which points to a live local.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether another open file description holds a lock that conflicts with `kind` on `len`
/// bytes from `start`.
///
/// # Errors
/// The call's error.
pub fn conflicts(file: &File, kind: Kind, start: u64, len: u64) -> io::Result<bool> {
    let mut fl = flock(kind, start, len)?;
    // SAFETY: as in `try_lock`; F_OFD_GETLK writes the first conflicting lock (or F_UNLCK)
    // back into the same live local struct.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
