//! vmcrypt-serve: encrypted disks served live to running VMs and their tools, over the
//! protocols QEMU speaks, on top of [`vmcrypt_core::EncryptedDisk`] (which owns the disk's lock,
//! its key and every XTS tweak).
//!
//! NBD first ([`nbd`]): qemu-img, qemu-io, qemu-nbd's clients and QEMU itself connect to
//! [`nbd::NbdServer`] over a Unix socket or TCP ([`endpoint`]). Every request is decoded and
//! checked against the export before anything touches the disk; a client that stalls is cut
//! off; memory is bounded whatever the clients' queue depths. docs/live-io.md tells the story.
//!
//! The serving process also answers on a private control socket ([`control`]): the CLI
//! starts and follows online jobs there, such as a deep rekey while guests run.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod buffers;
pub mod control;
mod deadline;
pub mod endpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod nbd;

pub use endpoint::{Endpoint, Listener};
pub use nbd::{NbdServer, ServeStats};
