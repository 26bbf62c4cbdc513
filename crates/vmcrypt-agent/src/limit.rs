//! A bound on the key fetches an agent has under way at one provider.
//!
//! Why: when a host boots, every VM asks for its key at once. Measured with the boot-storm
//! benchmark (docs/agent.md), 200 simultaneous TLS handshakes against a PyKMIP cluster left
//! handshakes unanswered past the 60 s timeout on all three servers, and fetches failed; the
//! same storm queued in the agent and sent a few at a time (on kept connections) completes in
//! seconds. Requests wait in the agent instead of piling onto the key servers.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Default fetches under way per provider.
pub const DEFAULT_IN_FLIGHT: usize = 8;

/// A counting semaphore.
pub struct Limiter {
    max: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

/// One slot, given back on drop.
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Limiter {
    /// At most `max` (at least 1) permits out at once.
    pub fn new(max: usize) -> Self {
        Limiter {
            max: max.max(1),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot.
    pub fn acquire(&self) -> Permit<'_> {
        let mut busy = self.lock();
        while *busy >= self.max {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy += 1;
        Permit { limiter: self }
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        *self.lock()
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut busy = self.limiter.lock();
        *busy -= 1;
        self.limiter.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_than_max_at_once() {
        let l = Arc::new(Limiter::new(3));
        let peak = Arc::new(AtomicUsize::new(0));
        let now = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (l, peak, now) = (l.clone(), peak.clone(), now.clone());
                std::thread::spawn(move || {
                    let _p = l.acquire();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(l.in_use(), 0);
    }
}
