//! The ground floor every job stands on: progress reporting, what a job did, and how many
//! worker threads it gets. Nothing here knows about disks, keys or engines; everything above
//! uses it. Cancellation is a shared `AtomicBool`, checked between pieces of work.

use std::time::Duration;

/// Receives progress of long work. All methods have empty defaults.
pub trait Progress: Sync {
    /// The job starts; `total` bytes will be processed.
    fn start(&self, _total: u64) {}
    /// `bytes` more bytes are done.
    fn advance(&self, _bytes: u64) {}
    /// The job ended (successfully or not).
    fn finish(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// What a finished job did.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JobStats {
    /// Payload bytes processed.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Worker threads for a job: `requested`, else one per core; at least 1.
pub fn worker_threads(requested: Option<usize>) -> usize {
    requested
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}
