//! Where a served disk's bytes live: its payload and its online job's journal. In service
//! they are files ([`OnDisk`]); the power-loss tests give simulated stores instead, which
//! keep every write since the last sync pending and drop or tear them at a crash, so that
//! the online job is tested at each of its sync points as the offline engines are.

use std::path::Path;

use crate::Result;
use crate::engine::{FileStorage, Storage};

/// A store of a served disk.
pub type Store = Box<dyn Storage + Send>;

/// Opens a served disk's payload and makes and removes its online journal.
#[doc(hidden)]
pub trait Files: Send + Sync {
    /// The payload file, for reading and writing.
    ///
    /// # Errors
    /// I/O errors.
    fn open_payload(&self, path: &Path) -> Result<Store>;
    /// A new journal (refusing to replace one).
    ///
    /// # Errors
    /// I/O errors.
    fn create_journal(&self, path: &Path) -> Result<Store>;
    /// The journal of a recorded job (never through a symlink).
    ///
    /// # Errors
    /// I/O errors.
    fn open_journal(&self, path: &Path) -> Result<Store>;
    /// Removes the journal, durably.
    ///
    /// # Errors
    /// I/O errors.
    fn remove_journal(&self, path: &Path) -> Result<()>;
}

/// The files themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnDisk;

impl Files for OnDisk {
    fn open_payload(&self, path: &Path) -> Result<Store> {
        Ok(Box::new(FileStorage::open(path)?))
    }

    fn create_journal(&self, path: &Path) -> Result<Store> {
        Ok(Box::new(FileStorage::create(path)?))
    }

    fn open_journal(&self, path: &Path) -> Result<Store> {
        Ok(Box::new(FileStorage::open_no_follow(path)?))
    }

    fn remove_journal(&self, path: &Path) -> Result<()> {
        crate::fsutil::remove_durable(path)
    }
}
