//! The disks of a running VM: each held by a serving process (`vmcrypt serve`), which is
//! then the only one that may change it. A VM job that meets such a disk has its server do
//! the disk's part online (issue 18); the caller that can reach the servers (the CLI, over
//! their control sockets) gives the job a [`ServedDisks`].
//!
//! Only the deep rekey is done this way: it stages the VMX for the next generation first,
//! has each disk rekeyed (online by its server, or offline), and commits the VMX once every
//! disk is at the new generation, as offline. The server checks that the VMX it is named
//! lists its disk and is staged for that disk's next generation before it starts, so a
//! lone request can never move one disk of a VM ahead of the others.

use std::path::{Path, PathBuf};

use super::Vm;
use crate::Result;

/// The servers of a VM's disks, as a VM job reaches them.
pub trait ServedDisks {
    /// Whether a serving process holds `disk` (a descriptor as the VMX names it) and
    /// answers.
    fn serves(&self, disk: &Path) -> bool;

    /// Has the server of `disk` carry out its online deep rekey as a disk of the VM `vmx`
    /// (or go on with the one under way) and follows it to its end; returns the bytes
    /// rekeyed.
    ///
    /// # Errors
    /// The server's refusal or failure; [`crate::Error::Cancelled`] when the caller stopped
    /// following (the job goes on in the server, and the VM job, run again, picks it up).
    fn deep_rekey(&self, disk: &Path, vmx: &Path) -> Result<u64>;
}

/// The disks of `vm` that a server holds.
pub(crate) fn served_disks(vm: &Vm, served: Option<&dyn ServedDisks>) -> Vec<PathBuf> {
    let Some(s) = served else {
        return Vec::new();
    };
    vm.disks()
        .iter()
        .filter(|d| s.serves(&d.path))
        .map(|d| d.path.clone())
        .collect()
}
