//! Sockets a service manager passed at exec (systemd's socket activation, sd_listen_fds(3)):
//! `LISTEN_PID` names this process, `LISTEN_FDS` says how many descriptors from 3 on are its.
//!
//! Taking a descriptor by number is the one thing here that needs `unsafe`: an `OwnedFd`
//! asserts that nothing else owns the number. The protocol gives these numbers to this process
//! alone, nothing in vmcrypt opens a descriptor by number, and [`take_listen_fds`] hands them
//! out once per process (a second call finds none), so each is owned exactly once.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;

/// The first passed descriptor (SD_LISTEN_FDS_START).
const FIRST: RawFd = 3;

/// More than any service of vmcrypt is given; a larger count is a bad variable.
const MAX: usize = 64;

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The descriptors passed to this process, each close-on-exec from now on: empty when
/// `LISTEN_PID` is unset or names another process (a parent's variables, inherited), or
/// when they were already taken.
///
/// # Errors
/// A `LISTEN_FDS` that is not a count, or a descriptor that is not open.
pub fn take_listen_fds() -> Result<Vec<OwnedFd>, Error> {
    let for_me = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if !for_me || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let raw = std::env::var("LISTEN_FDS").unwrap_or_default();
    let n: usize = raw
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= MAX)
        .ok_or_else(|| Error(format!("LISTEN_FDS={raw:?} is not a count of descriptors")))?;
    let mut fds = Vec::with_capacity(n);
    for i in 0..n {
        let fd = FIRST + i as RawFd;
        // SAFETY: fcntl(F_GETFD) reads the descriptor's flags and touches no memory; on a
        // number that is not open it fails with EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(Error(format!(
                "LISTEN_FDS={n}, but descriptor {fd} is not open: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: descriptor `fd` is open (above) and was passed to this process by the
        // protocol; TAKEN makes this the only place that takes it (module docs).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| Error(format!("descriptor {fd}: {e}")))?;
        fds.push(owned);
    }
    Ok(fds)
}
