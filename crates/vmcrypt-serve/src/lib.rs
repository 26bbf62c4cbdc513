//! vmcrypt-serve: encrypted disks served live to running VMs and their tools, over the
//! protocols QEMU speaks, on top of [`vmcrypt_core::EncryptedDisk`] (which owns the disk's lock,
//! its key and every XTS tweak).
//!
//! This first part is the NBD wire format of the transmission phase ([`nbd::wire`]): requests
//! decoded and checked against the export before anything touches the disk, and the simple and
//! structured replies. The handshake and the server follow (issue 16).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod nbd;
