//! Which key each data unit of a served disk is under, and the gate an online job (a deep
//! rekey while guests run, issue 18) passes through.
//!
//! Outside a job every unit is under one key and a request only takes a shared lock. During
//! a job the disk holds two keys and a boundary: units below it are under the new key, the
//! others under the old one. The job rewrites one window at a time, just above the boundary:
//! it locks the window ([`Router::lock_window`]), which waits for the requests in flight that
//! touch it and holds back new ones that do; it rewrites the window; then it moves the
//! boundary past the window and unlocks it ([`WindowLock::done`]). Requests that do not touch
//! the window never wait.
//!
//! Each side also says where its guest offset 0 is in the payload file ([`Side::base`]): the
//! same place for both, except in an online decryption of a payload an offline in-place
//! encryption moved up. There the job writes each window's plaintext at the payload's new
//! place (offset 0), over bytes of windows already done, and guests below the boundary
//! read and write there too.
//!
//! Why a request may read the boundary at any moment of its life: the boundary only moves
//! across a locked window, and no request in flight touches that window. Every unit a request
//! does touch is on the same side of the boundary before and after the move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use super::cipher::UnitCipher;
use crate::engine::online::JobKind;

/// One side of the boundary: the key its units are under and where they are in the file.
pub(crate) struct Side {
    pub(crate) cipher: UnitCipher,
    /// Where guest offset 0 of this side is in the payload file.
    pub(crate) base: u64,
}

/// The keys of a served disk.
pub(crate) struct Keys {
    /// The side of every unit outside a job; during one, of the units at or above the
    /// boundary.
    current: Side,
    job: Option<Rekeying>,
}

/// A job under way: what it does and its new key (how far it has come is
/// [`Router::boundary`]).
struct Rekeying {
    kind: JobKind,
    new: Side,
}

/// The requests in flight during a job, and the window the job holds.
#[derive(Default)]
struct Window {
    /// The range the job is rewriting: requests that touch it wait.
    locked: Option<(u64, u64)>,
    /// (id, start, end) of every request in flight during the job.
    in_flight: Vec<(u64, u64, u64)>,
    next_id: u64,
}

/// The keys and the window gate; see the module docs.
pub(crate) struct Router {
    keys: RwLock<Keys>,
    /// During a job, the guest offset below which units are under the new key. Outside the
    /// keys' lock, so that moving it never waits for a request.
    boundary: AtomicU64,
    window: Mutex<Window>,
    moved: Condvar,
}

fn overlaps(a: (u64, u64), start: u64, end: u64) -> bool {
    a.0 < end && start < a.1
}

impl Router {
    pub(crate) fn new(current: Side) -> Router {
        Router {
            keys: RwLock::new(Keys { current, job: None }),
            boundary: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
            moved: Condvar::new(),
        }
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a request for guest bytes `start..end` through: at once outside a job or when the
    /// range does not touch the window being rewritten, else when the window is done. The
    /// request holds the returned route until it has finished with the disk.
    pub(crate) fn enter(&self, start: u64, end: u64) -> Route<'_> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let id = keys.job.as_ref().map(|_| {
            let mut w = self.window();
            while w.locked.is_some_and(|l| overlaps(l, start, end)) {
                w = self.moved.wait(w).unwrap_or_else(PoisonError::into_inner);
            }
            let id = w.next_id;
            w.next_id += 1;
            w.in_flight.push((id, start, end));
            id
        });
        Route {
            keys,
            router: self,
            id,
            range: (start, end),
        }
    }

    /// How many requests were let through since the job began (0 outside one): the job's
    /// rate control reads it to see whether guests are busy.
    pub(crate) fn requests(&self) -> u64 {
        self.window().next_id
    }

    /// Starts a job towards `new`, with the boundary at 0. Waits for the requests in flight
    /// (they were let through without being counted); new ones wait meanwhile.
    ///
    /// # Panics
    /// Never on input: a second job while one is under way is a caller's bug and refused by
    /// the callers before they get here; it is ignored (the first job stays).
    pub(crate) fn begin(&self, kind: JobKind, new: Side) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.job.is_none() {
            self.boundary.store(0, Ordering::SeqCst);
            keys.job = Some(Rekeying { kind, new });
        }
    }

    /// Resumes a job whose windows below `boundary` are done (after a restart, before any
    /// request).
    pub(crate) fn resume(&self, kind: JobKind, new: Side, boundary: u64) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        self.boundary.store(boundary, Ordering::SeqCst);
        keys.job = Some(Rekeying { kind, new });
    }

    /// Where guest offset 0 of the units outside a job (during one, at or above the boundary)
    /// is in the payload file.
    pub(crate) fn base(&self) -> u64 {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
            .base
    }

    /// Ends the job: the new side becomes the side of every unit. Call with no window locked,
    /// once the boundary has reached the end of the disk. Waits for the requests in flight.
    pub(crate) fn finish(&self) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(job) = keys.job.take() {
            keys.current = job.new;
        }
    }

    /// The job's boundary (None outside a job).
    pub(crate) fn boundary(&self) -> Option<u64> {
        self.job().map(|(_, b)| b)
    }

    /// What the job under way does, and its boundary.
    pub(crate) fn job(&self) -> Option<(JobKind, u64)> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.job
            .as_ref()
            .map(|j| (j.kind, self.boundary.load(Ordering::SeqCst)))
    }

    /// Locks guest bytes `start..end` for the job: new requests that touch them wait, and this
    /// returns once none in flight does. The window must start at the boundary.
    pub(crate) fn lock_window(&self, start: u64, end: u64) -> WindowLock<'_> {
        let mut w = self.window();
        w.locked = Some((start, end));
        while w
            .in_flight
            .iter()
            .any(|&(_, s, e)| overlaps((start, end), s, e))
        {
            w = self.moved.wait(w).unwrap_or_else(PoisonError::into_inner);
        }
        WindowLock {
            router: self,
            start,
            end,
        }
    }
}

/// A request's passage through the disk: the keys of its units, held until it is dropped.
pub struct Route<'d> {
    keys: RwLockReadGuard<'d, Keys>,
    router: &'d Router,
    /// Its entry among the requests in flight, during a job.
    id: Option<u64>,
    /// The guest bytes it was let through for.
    #[cfg_attr(not(feature = "guest-memory"), allow(dead_code))]
    range: (u64, u64),
}

impl std::fmt::Debug for Route<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("during_a_job", &self.id.is_some())
            .finish()
    }
}

impl Route<'_> {
    /// Whether `len` bytes at guest `at` are inside the range this route was let through for.
    #[cfg_attr(not(feature = "guest-memory"), allow(dead_code))]
    pub(crate) fn covers(&self, at: u64, len: usize) -> bool {
        at >= self.range.0
            && at
                .checked_add(len as u64)
                .is_some_and(|e| e <= self.range.1)
    }

    /// The side of the unit at guest offset `at`, and the end of the run of units from `at`
    /// on the same side (at most `end`).
    pub(crate) fn side(&self, at: u64, end: u64) -> (&Side, u64) {
        match &self.keys.job {
            Some(job) => {
                let b = self.router.boundary.load(Ordering::SeqCst);
                if at < b {
                    (&job.new, end.min(b))
                } else {
                    (&self.keys.current, end)
                }
            }
            None => (&self.keys.current, end),
        }
    }

    /// Calls `f(range in the caller's buffer, guest offset, side)` for the runs of `len`
    /// bytes at guest offset `at` that are on one side each (one run outside a job).
    pub(crate) fn each_side(
        &self,
        at: u64,
        len: usize,
        mut f: impl FnMut(std::ops::Range<usize>, u64, &Side) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let end = at + len as u64;
        let mut from = at;
        while from < end {
            let (key, to) = self.side(from, end);
            f((from - at) as usize..(to - at) as usize, from, key)?;
            from = to;
        }
        Ok(())
    }
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut w = self.router.window();
            if let Some(i) = w.in_flight.iter().position(|e| e.0 == id) {
                w.in_flight.swap_remove(i);
            }
            drop(w);
            self.router.moved.notify_all();
        }
    }
}

/// The job's hold on a window; see [`Router::lock_window`]. Dropped without
/// [`WindowLock::done`] (an error, a stop), the window is unlocked with the boundary where it
/// was: the window is then rewritten again when the job goes on.
pub(crate) struct WindowLock<'r> {
    router: &'r Router,
    start: u64,
    end: u64,
}

impl WindowLock<'_> {
    /// The guest bytes locked.
    pub(crate) fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// Calls `f(old side, new side)` (the job's two sides; None outside a job).
    pub(crate) fn with_sides<T>(&self, f: impl FnOnce(&Side, &Side) -> T) -> Option<T> {
        let keys = self
            .router
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        keys.job.as_ref().map(|j| f(&keys.current, &j.new))
    }

    /// The window is rewritten under the new key (and durably so): the boundary moves to its
    /// end and the requests waiting for it go on.
    pub(crate) fn done(self) {
        self.router.boundary.store(self.end, Ordering::SeqCst);
    }
}

impl Drop for WindowLock<'_> {
    fn drop(&mut self) {
        self.router.window().locked = None;
        self.router.moved.notify_all();
    }
}
