//! Early writeback: while the workers write a window, a helper thread asks the storage to start
//! making those writes durable, so that the fsync that ends the window finds little left to do.
//!
//! Measured (docs/performance.md): on ext4 an in-place job spent more than half its time in
//! the per-window fsyncs, each flushing 64 MiB that had been written with the disk idle. The
//! helper overlaps that flush with the encryption of the rest of the window. It changes no
//! ordering the crash-safety argument relies on: the window's own fsync still comes after all
//! its writes, and an extra flush only makes more bytes durable sooner.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[cfg(doc)]
use super::storage::Storage;
use crate::Result;

/// Bytes written since the last writeback that start another one.
pub const STEP: u64 = 16 * 1024 * 1024;

/// What the workers tell the helper: how many bytes they have written.
pub struct Written {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    bytes: u64,
    done: bool,
}

impl Written {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts `n` more bytes written.
    pub fn add(&self, n: u64) {
        let mut s = self.lock();
        let before = s.bytes;
        s.bytes += n;
        if before / STEP != s.bytes / STEP {
            self.wake.notify_one();
        }
    }

    fn finish(&self) {
        self.lock().done = true;
        self.wake.notify_one();
    }
}

/// Runs `body`, which counts its writes on the [`Written`] it is given, while a helper thread
/// (when `enabled`: not for files in memory) calls `flush` after every [`STEP`] bytes (for a [`Storage`], its [`Storage::writeback`]).
/// Returns `body`'s result, or else the helper's error (a failed writeback is as final as a
/// failed fsync).
///
/// # Errors
/// `body`'s error, or the first writeback error.
pub fn with_writeback<T>(
    enabled: bool,
    flush: impl Fn() -> Result<()> + Sync,
    body: impl FnOnce(&Written) -> Result<T>,
) -> Result<T> {
    let written = Written {
        state: Mutex::new(State {
            bytes: 0,
            done: false,
        }),
        wake: Condvar::new(),
    };
    if !enabled {
        // A file in memory: no helper thread, nothing to flush.
        return body(&written);
    }
    std::thread::scope(|scope| {
        let helper = scope.spawn(|| -> Result<()> {
            let mut flushed = 0;
            loop {
                let mut s = written.lock();
                while !s.done && s.bytes < flushed + STEP {
                    s = written.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
                }
                if s.done {
                    return Ok(());
                }
                flushed = s.bytes;
                drop(s);
                flush()?;
            }
        });
        let out = body(&written);
        written.finish();
        let flushed = helper
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let out = out?;
        flushed.map(|()| out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::Storage;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        fail: bool,
    }

    impl Storage for Counting {
        fn size(&self) -> Result<u64> {
            Ok(0)
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> Result<()> {
            Ok(())
        }
        fn write_at(&self, _: &[u8], _: u64) -> Result<()> {
            Ok(())
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn set_len(&self, _: u64) -> Result<()> {
            Ok(())
        }
        fn writeback(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                Err(crate::Error::input("injected writeback error"))
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_writeback_per_step_at_most_and_none_for_small_writes() {
        let s = Counting {
            calls: AtomicUsize::new(0),
            fail: false,
        };
        let v = with_writeback(
            true,
            || s.writeback(),
            |w| {
                w.add(STEP / 2);
                Ok(7)
            },
        )
        .expect("runs");
        assert_eq!(v, 7);
        assert_eq!(s.calls.load(Ordering::SeqCst), 0);
        with_writeback(
            true,
            || s.writeback(),
            |w| {
                for _ in 0..8 {
                    w.add(STEP);
                    // Give the helper a chance to run; it may still merge steps.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Ok(())
            },
        )
        .expect("runs");
        let calls = s.calls.load(Ordering::SeqCst);
        assert!((1..=8).contains(&calls), "{calls} writebacks");
    }

    #[test]
    fn a_writeback_error_is_the_result() {
        let s = Counting {
            calls: AtomicUsize::new(0),
            fail: true,
        };
        let r = with_writeback(
            true,
            || s.writeback(),
            |w| {
                w.add(STEP);
                std::thread::sleep(std::time::Duration::from_millis(50));
                Ok(())
            },
        );
        assert!(matches!(r, Err(crate::Error::InvalidInput { .. })), "{r:?}");
    }

    #[test]
    fn the_body_error_wins() {
        let s = Counting {
            calls: AtomicUsize::new(0),
            fail: true,
        };
        let r: Result<()> = with_writeback(
            true,
            || s.writeback(),
            |w| {
                w.add(STEP);
                Err(crate::Error::Cancelled {
                    done: 0,
                    restored: false,
                })
            },
        );
        assert!(matches!(r, Err(crate::Error::Cancelled { .. })), "{r:?}");
    }
}
