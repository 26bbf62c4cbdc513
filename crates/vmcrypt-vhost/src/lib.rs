//! vmcrypt-vhost: an encrypted disk served to QEMU guests as a vhost-user-blk device, on the
//! rust-vmm crates (vhost, vhost-user-backend, virtio-queue, vm-memory) and
//! [`vmcrypt_core::EncryptedDisk`], which owns the disk's lock, its key and every XTS tweak.
//!
//! The guest sees an ordinary virtio-blk disk whose logical block is the disk's data unit, so
//! no request needs a read-modify-write. Every request is decoded and checked against the disk
//! before anything is read or written ([`request`]); one worker per virtqueue serves it with
//! buffers of its own. docs/live-io.md tells the story.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod hostbench;
pub mod request;
mod server;
#[cfg(test)]
mod tests;

pub use server::{VhostOptions, VhostStats, VhostUserBlk};
