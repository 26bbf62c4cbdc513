//! Memory for write data in flight: a byte budget shared by every connection, and buffers
//! that are reused rather than allocated per request.
//!
//! A write's data must be read off the socket before a worker can encrypt it, so the bytes of
//! writes in flight are bounded here, whatever the clients' queue depths: a reader whose
//! request does not fit waits until workers give bytes back. Buffers of the usual size are
//! kept for the next request (the hot path allocates nothing); larger ones (up to the
//! protocol's 32 MiB) are allocated for the request and freed after it. Buffers hold
//! plaintext and are zeroed when freed.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use zeroize::Zeroizing;

/// The size of a kept buffer: requests up to it reuse one.
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
        let buf = if len <= STANDARD {
            // Zeroed pages are mapped lazily: a new buffer costs what is written into it.
            s.kept
                .pop()
                .unwrap_or_else(|| Zeroizing::new(vec![0u8; STANDARD]))
        } else {
            Zeroizing::new(vec![0u8; len])
        };
        Payload {
            buf: Some(buf),
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

/// Write data in flight; gives its bytes back to the budget when dropped.
#[derive(Debug)]
pub(crate) struct Payload {
    buf: Option<Zeroizing<Vec<u8>>>,
    len: usize,
    charge: usize,
    owner: Arc<Buffers>,
}

impl Payload {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b[..self.len])
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        self.buf.as_mut().map_or(&mut [], |b| &mut b[..len])
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
        if let Some(buf) = self.buf.take()
            && buf.len() == STANDARD
            && s.kept.len() < s.keep_at_most
        {
            s.kept.push(buf);
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
        one.bytes_mut().fill(7);
        let ptr = one.bytes().as_ptr();
        drop(one);
        let again = b.take(512);
        assert_eq!(again.bytes().as_ptr(), ptr, "the buffer is reused");
        assert_eq!(b.free_bytes(), 3 * STANDARD - 512);
        let big = b.take(2 * STANDARD);
        assert_eq!(big.bytes().len(), 2 * STANDARD);
        // A third request that does not fit waits until one is given back.
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.take(STANDARD).bytes().len())
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "over budget: it waits");
        drop(big);
        assert_eq!(waiter.join().expect("join"), STANDARD);
        drop(again);
        assert_eq!(b.free_bytes(), 3 * STANDARD);
    }
}
