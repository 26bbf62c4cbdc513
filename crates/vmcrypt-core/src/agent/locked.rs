//! Locked, non-dumpable memory for cached keys and process hardening. The code (it takes raw
//! pointers) lives in vmcrypt-secmem, so that this crate can forbid `unsafe`.

pub use vmcrypt_secmem::{LockedSlots, process_dumpable};

use crate::Result;

/// Makes this process non-dumpable: no core file (RLIMIT_CORE 0 as well), and other processes
/// of the same user cannot ptrace it or read its /proc/PID/mem. For every process that holds
/// keys: the agent, and the CLI while it runs a job.
///
/// # Errors
/// [`crate::Error::Unsupported`] if the kernel refuses.
pub fn harden_process() -> Result<()> {
    vmcrypt_secmem::harden_process().map_err(Into::into)
}
