//! Parallel piece workers: the loop that keeps both the AES units and the I/O busy.
//!
//! A range is cut into pieces of [`PIECE`] bytes. Each worker thread owns one buffer and takes
//! the next piece from a shared counter: it reads the piece, transforms it and writes it, all
//! while the bytes are still in its core's L2 cache. With two workers, one worker's `pread` or
//! `pwrite` (a copy done by the kernel) runs while the other encrypts, so reads, writes and
//! encryption overlap without a hand-off between threads.
//!
//! Measured before choosing this shape (docs/performance.md): the earlier loop read 8 MiB,
//! encrypted it on all cores, then wrote it, one phase after another, and so left one core idle
//! during every copy.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use zeroize::Zeroizing;

use crate::Result;

/// Bytes a worker reads, transforms and writes at a time: small enough to stay in L2 between
/// the three steps, large enough that the system calls cost nothing.
pub const PIECE: usize = 256 * 1024;

/// How a run of [`for_each_piece`] ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every piece was done.
    Complete,
    /// `cancel` was set: some pieces were not done (which ones is not defined).
    Cancelled,
}

/// Where every worker's buffer starts: a page boundary, as direct I/O needs (the O_DIRECT rows
/// of the `io_modes` benchmark).
pub const BUFFER_ALIGN: usize = 4096;

/// Runs `work(buffer, offset)` for every piece of `[0, len)` (pieces start at multiples of
/// [`PIECE`]; the buffer has the piece's length) on `threads` worker threads, each with its
/// own zeroized-on-drop buffer. Stops at the first error, which it returns, or when `cancel`
/// is set.
///
/// # Errors
/// The first error `work` returned.
pub fn for_each_piece(
    len: u64,
    threads: usize,
    cancel: &AtomicBool,
    work: impl Fn(&mut [u8], u64) -> Result<()> + Sync,
) -> Result<Ended> {
    for_each_piece_of(PIECE, len, threads, cancel, work)
}

/// [`for_each_piece`] with pieces of `piece` bytes (at least 1). Every buffer starts at a
/// multiple of [`BUFFER_ALIGN`].
///
/// # Errors
/// The first error `work` returned.
pub fn for_each_piece_of(
    piece: usize,
    len: u64,
    threads: usize,
    cancel: &AtomicBool,
    work: impl Fn(&mut [u8], u64) -> Result<()> + Sync,
) -> Result<Ended> {
    let piece = piece.max(1);
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<crate::Error>> = Mutex::new(None);
    let worker = || {
        let size = usize::try_from(len).map_or(piece, |l| piece.min(l)).max(1);
        // Over-allocate and start at the first aligned byte: aligned without unsafe code.
        let mut backing = Zeroizing::new(vec![0u8; size + BUFFER_ALIGN]);
        let start = backing
            .as_ptr()
            .align_offset(BUFFER_ALIGN)
            .min(BUFFER_ALIGN);
        let buf = &mut backing[start..start + size];
        loop {
            if stop.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                return;
            }
            let at = next.fetch_add(piece as u64, Ordering::Relaxed);
            if at >= len {
                return;
            }
            let n = (len - at).min(piece as u64) as usize;
            if let Err(e) = work(&mut buf[..n], at) {
                stop.store(true, Ordering::Relaxed);
                let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert(e);
                return;
            }
        }
    };
    let threads = threads.clamp(1, (len.div_ceil(piece as u64)).max(1) as usize);
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(worker);
            }
            worker();
        });
    }
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(if next.load(Ordering::Relaxed) < len {
        Ended::Cancelled
    } else {
        Ended::Complete
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_once_whatever_the_thread_count() {
        for threads in [1, 2, 3, 8] {
            for len in [1u64, 4096, PIECE as u64, PIECE as u64 * 5 + 512] {
                let seen = Mutex::new(Vec::new());
                let ended = for_each_piece(len, threads, &AtomicBool::new(false), |b, at| {
                    seen.lock().expect("lock").push((at, b.len() as u64));
                    Ok(())
                })
                .expect("pieces");
                assert_eq!(ended, Ended::Complete);
                let mut s = seen.into_inner().expect("lock");
                s.sort_unstable();
                let mut expect = 0;
                for (at, n) in s {
                    assert_eq!(at, expect, "{threads} threads, {len} bytes");
                    expect += n;
                }
                assert_eq!(expect, len);
            }
        }
    }

    #[test]
    fn any_piece_size_covers_the_range_from_aligned_buffers() {
        for piece in [1usize, 4096, 1 << 20] {
            let len = 3 * (1u64 << 20) + 512;
            let total = AtomicU64::new(0);
            let ended = for_each_piece_of(piece, len, 3, &AtomicBool::new(false), |b, at| {
                assert_eq!(b.as_ptr() as usize % BUFFER_ALIGN, 0, "buffer alignment");
                assert_eq!(at % piece as u64, 0, "piece start");
                assert!(b.len() <= piece);
                total.fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(())
            })
            .expect("pieces");
            assert_eq!(ended, Ended::Complete);
            assert_eq!(total.into_inner(), len, "piece {piece}");
        }
    }

    #[test]
    fn the_first_error_stops_the_workers() {
        let calls = AtomicU64::new(0);
        let r = for_each_piece(PIECE as u64 * 64, 2, &AtomicBool::new(false), |_, at| {
            calls.fetch_add(1, Ordering::Relaxed);
            if at == PIECE as u64 * 3 {
                Err(crate::Error::input("boom"))
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(crate::Error::InvalidInput { .. })));
        assert!(calls.load(Ordering::Relaxed) < 64);
    }

    #[test]
    fn cancel_is_reported() {
        let cancel = AtomicBool::new(true);
        let r = for_each_piece(PIECE as u64 * 4, 2, &cancel, |_, _| Ok(())).expect("pieces");
        assert_eq!(r, Ended::Cancelled);
    }
}
