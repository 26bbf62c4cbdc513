//! A shallow rekey of a served disk (issue 18), by the process that serves it: the DEK
//! re-wrapped under a new KEK, metadata only, as offline (disk::rekey_shallow). The DEK does
//! not change, so guests' I/O goes on undisturbed: no request waits for it.

use super::EncryptedDisk;
use crate::disk::rekey_shallow::{RekeyReport, rewrap};
use crate::keysafe::KeyRing;
use crate::provider::ProviderRegistry;
use crate::{Error, Result};

impl EncryptedDisk {
    /// Re-wraps the disk's DEK under a new KEK from `provider` (or completes an interrupted
    /// shallow rekey with its own target KEK), generation + 1, crash-safely (two durable
    /// metadata steps; see disk::rekey_shallow).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] while an online job is under way (shallow rekey once it is
    /// done) or for an unknown provider; [`Error::BelongsToVm`] for a disk of a VM; provider
    /// errors (the disk is then as it was); I/O errors.
    pub fn rekey_shallow(
        &self,
        registry: &dyn ProviderRegistry,
        provider: &str,
    ) -> Result<RekeyReport> {
        let mut control = self.control();
        if control.job.is_some() {
            return Err(Error::input(format!(
                "{}: an online job is under way; rekey --shallow once it is done",
                self.path.display()
            )));
        }
        let p = registry.provider(provider)?;
        rewrap(&mut control.disk, p.as_ref(), &KeyRing::new(registry))
    }
}
