//! Memory for write data in flight: a byte budget shared by every connection, and buffers
//! that are reused rather than allocated per request.
//!
//! A write's data must be read off the socket before a worker can encrypt it, so the bytes of
//! writes in flight are bounded here, whatever the clients' queue depths: a reader whose
//! request does not fit waits until workers give bytes back. Every buffer is of one size,
//! [`STANDARD`], and kept for the next request once given back, so requests allocate nothing:
//! a larger write (up to the protocol's 32 MiB) is held in several buffers, its pieces.
//! Buffers hold plaintext and are zeroed when freed.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use zeroize::Zeroizing;

/// The size of a buffer: a write of up to this many bytes takes one, a larger one takes as
/// many as it needs.
pub(crate) const STANDARD: usize = 1 << 20;

/// The budget and the kept buffers.
#[derive(Debug)]
pub(crate) struct Buffers {
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug)]
struct State {
    free_bytes: usize,
    kept: Vec<Zeroizing<Vec<u8>>>,
    keep_at_most: usize,
}

impl Buffers {
    /// A budget of `bytes` (at least one largest request).
    pub(crate) fn new(bytes: usize) -> Arc<Buffers> {
        Arc::new(Buffers {
            state: Mutex::new(State {
                free_bytes: bytes,
                kept: Vec::new(),
                keep_at_most: bytes / STANDARD,
            }),
            freed: Condvar::new(),
        })
    }

    /// A buffer of `len` bytes, waiting until the budget has room for it. `len` must not
    /// exceed the budget.
    pub(crate) fn take(self: &Arc<Buffers>, len: usize) -> Payload {
        let charge = len.max(1);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while s.free_bytes < charge {
            s = self.freed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.free_bytes -= charge;
        // Zeroed pages are mapped lazily: a new buffer costs what is written into it.
        let mut one = || {
            s.kept
                .pop()
                .unwrap_or_else(|| Zeroizing::new(vec![0u8; STANDARD]))
        };
        let first = one();
        let more = len.div_ceil(STANDARD).saturating_sub(1);
        let rest = (0..more).map(|_| one()).collect();
        Payload {
            first,
            rest,
            len,
            charge,
            owner: Arc::clone(self),
        }
    }

    #[cfg(test)]
    fn free_bytes(&self) -> usize {
        self.state.lock().map(|s| s.free_bytes).unwrap_or(0)
    }
}

/// Write data in flight, in pieces of [`STANDARD`] bytes (the last one shorter); gives its
/// bytes back to the budget when dropped.
#[derive(Debug)]
pub(crate) struct Payload {
    first: Zeroizing<Vec<u8>>,
    /// Further pieces of a write larger than one buffer (empty, and so not allocated, for
    /// the others).
    rest: Vec<Zeroizing<Vec<u8>>>,
    len: usize,
    charge: usize,
    owner: Arc<Buffers>,
}

impl Payload {
    /// The pieces in order, each with its offset in the write.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = (usize, &[u8])> {
        let len = self.len;
        std::iter::once(&self.first)
            .chain(&self.rest)
            .enumerate()
            .map(move |(i, b)| {
                let at = i * STANDARD;
                (at, &b[..(len - at).min(STANDARD)])
            })
    }

    /// The pieces in order, writable.
    pub(crate) fn pieces_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let len = self.len;
        std::iter::once(&mut self.first)
            .chain(&mut self.rest)
            .enumerate()
            .map(move |(i, b)| &mut b[..(len - i * STANDARD).min(STANDARD)])
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        let mut s = self
            .owner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        s.free_bytes += self.charge;
        let first = std::mem::replace(&mut self.first, Zeroizing::new(Vec::new()));
        for buf in std::iter::once(first).chain(self.rest.drain(..)) {
            if s.kept.len() < s.keep_at_most {
                s.kept.push(buf);
            }
        }
        drop(s);
        self.owner.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_budget_bounds_bytes_in_flight_and_buffers_are_reused() {
        let b = Buffers::new(3 * STANDARD);
        let mut one = b.take(4096);
        one.pieces_mut().for_each(|p| p.fill(7));
        let ptr = one.pieces().next().expect("a piece").1.as_ptr();
        drop(one);
        let again = b.take(512);
        let (at, piece) = again.pieces().next().expect("a piece");
        assert_eq!((at, piece.len()), (0, 512));
        assert_eq!(piece.as_ptr(), ptr, "the buffer is reused");
        assert_eq!(again.pieces().count(), 1);
        assert_eq!(b.free_bytes(), 3 * STANDARD - 512);
        // A larger write is held in standard buffers: its pieces.
        let mut big = b.take(2 * STANDARD - 256);
        for (i, p) in big.pieces_mut().enumerate() {
            p.fill(i as u8 + 1);
        }
        let pieces: Vec<(usize, usize, u8)> =
            big.pieces().map(|(at, p)| (at, p.len(), p[0])).collect();
        assert_eq!(
            pieces,
            vec![(0, STANDARD, 1), (STANDARD, STANDARD - 256, 2)]
        );
        // A third request that does not fit waits until one is given back.
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                b.take(STANDARD)
                    .pieces()
                    .map(|(_, p)| p.len())
                    .sum::<usize>()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "over budget: it waits");
        drop(big);
        assert_eq!(waiter.join().expect("join"), STANDARD);
        drop(again);
        assert_eq!(b.free_bytes(), 3 * STANDARD);
        // Every buffer came back to be reused: no request allocated one of its own.
        let kept = b.state.lock().map(|s| s.kept.len()).unwrap_or(0);
        assert_eq!(kept, 3);
    }
}
