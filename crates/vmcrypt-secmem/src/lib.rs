//! vmcrypt-secmem: the system calls of vmcrypt that take raw pointers, and nothing else.
//!
//! - [`LockedSlots`]: memory for cached keys that never reaches swap or a core dump;
//! - [`LockedBox`]: the same for one value, such as the key schedule of a served disk;
//! - [`harden_process`]: no core dumps, no ptrace by other processes of the user;
//! - [`ofd`]: open file description locks, the lock QEMU takes on its images;
//! - [`take_listen_fds`]: the sockets systemd passes at exec (socket activation).
//!
//! This crate and the XTS kernel are the only `unsafe` code of vmcrypt: vmcrypt-core forbids
//! it. Every block says why it is sound.
//!
//! ```
//! let mut slots = vmcrypt_secmem::LockedSlots::<32>::new(4)?;
//! slots.get_mut(0).copy_from_slice(&[7u8; 32]);
//! assert_eq!(slots.get(0), &[7u8; 32]);
//! slots.clear(0);
//! # Ok::<(), vmcrypt_secmem::Error>(())
//! ```
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod boxed;
mod inherited;
pub mod ofd;
mod pages;
mod process;
mod slots;

pub use boxed::{LockedBox, scrub_stack};
pub use inherited::take_listen_fds;
pub use process::{harden_process, process_dumpable};
pub use slots::LockedSlots;

/// What went wrong, in a sentence that says how to fix it where that is known.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
