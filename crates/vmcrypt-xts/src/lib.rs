//! XTS-AES-256 sector cipher for vmcrypt.
//!
//! This crate encrypts and decrypts disk payloads as IEEE 1619 XTS-AES-256, the way LUKS2 and
//! dm-crypt's `aes-xts-plain64` do: the payload is cut into data units of 512 or 4096 bytes and
//! each unit's tweak is the number of its first 512-byte sector (byte offset / 512), as a 128-bit
//! little-endian integer. With 4096-byte units the tweaks are therefore 0, 8, 16, ... (dm-crypt
//! without `iv_large_sectors`).
//!
//! ```
//! use vmcrypt_xts::{SectorSize, Xts};
//! # fn main() -> Result<(), vmcrypt_xts::Error> {
//! let mut key = [0u8; 64];
//! key[32] = 1; // the two halves must differ
//! let xts = Xts::new(&key)?;
//! let mut disk = vec![0u8; 8192];
//! xts.encrypt_sectors(&mut disk, 0, SectorSize::S4096)?;
//! xts.decrypt_sectors(&mut disk, 0, SectorSize::S4096)?;
//! assert!(disk.iter().all(|b| *b == 0));
//! # Ok(()) }
//! ```
//!
//! # Security
//! XTS hides data but does not detect tampering: a changed ciphertext block decrypts to random
//! bytes without any error. Integrity of the metadata is checked elsewhere (the key wrap); the
//! integrity of the data is not protected, as with every sector-level disk cipher.
//!
//! Two backends produce the same bytes ([`Backend`]). On x86-64 CPUs with VAES and VPCLMULQDQ
//! (detected at run time) a vector kernel keeps 16 blocks in flight and computes tweaks in
//! registers. Elsewhere, or with `VMCRYPT_XTS_BACKEND=portable`, a portable kernel batches 512
//! blocks per call of the `aes` crate (which picks AES-NI at run time when it can).
//! [`Xts::par_encrypt_sectors`] spreads large buffers over the current rayon pool and its output
//! does not depend on the number of threads.
//!
//! With the `guest-memory` feature, [`Xts::decrypt_sectors_into`] and
//! [`Xts::encrypt_sectors_from`] work out of place between a buffer and memory shared with a
//! guest (`vm_memory::VolatileSlice`): a device backend decrypts from its file buffer straight
//! into guest memory and encrypts from guest memory into its own buffer, with no extra copy and
//! without ever writing into the guest's buffer of a write.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
// Only `vaes` (the x86-64 fast path) and `shared` (its pointers into guest memory) may use
// `unsafe`; they say why at each use.
#![deny(unsafe_code)]

mod engine;
mod error;
mod sector;
#[cfg(feature = "guest-memory")]
mod shared;
#[cfg(target_arch = "x86_64")]
mod vaes;

pub use engine::{Backend, Direction, Xts};
pub use error::Error;
pub use sector::SectorSize;
