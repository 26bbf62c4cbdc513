//! vmcrypt-serve: encrypted disks served live to running VMs and their tools, over the
//! protocols QEMU speaks, on top of [`vmcrypt_core::EncryptedDisk`] (which owns the disk's lock,
//! its key and every XTS tweak).
//!
//! This first part is the NBD wire format: the fixed-newstyle handshake ([`nbd::handshake`]),
//! and the transmission phase ([`nbd::wire`]), whose requests are decoded and checked against
//! the export before anything touches the disk. The server follows (issue 16).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod nbd;
