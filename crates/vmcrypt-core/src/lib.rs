//! vmcrypt-core: the library a host agent links to encrypt VM disks.
//!
//! Each disk gets its own data encryption key (DEK, XTS-AES-256), wrapped under a key
//! encryption key (KEK) that lives in a key provider, and stored as a `vmware:key/...` locator
//! in the disk's settings (a VMDK descriptor, or a sidecar beside a raw image).
//!
//! The short path, one step at a time:
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use vmcrypt_core::disk::{decrypt_disk, encrypt_disk, DecryptOptions, EncryptOptions, NoProgress};
//! use vmcrypt_core::provider::{native::NativeProvider, KeyProvider};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let image = dir.path().join("disk.img");
//! std::fs::write(&image, vec![7u8; 64 * 1024])?;
//! // A provider: here the embedded one, with its keystore file.
//! let native = NativeProvider::create("native", &dir.path().join("native.keystore"))?;
//! // Encrypt: new DEK, wrapped under a new KEK, metadata in disk.img.vmcrypt.
//! let out = dir.path().join("disk.enc");
//! encrypt_disk(&image, &native, &EncryptOptions::to_output(&out), &NoProgress, &AtomicBool::new(false))?;
//! // Decrypt: the keySafe names the provider; the lookup hands it over.
//! let ks = native.path().to_path_buf();
//! let lookup = move |name: &str| -> vmcrypt_core::Result<Box<dyn KeyProvider>> {
//!     Ok(Box::new(NativeProvider::open(name, &ks)?))
//! };
//! let back = dir.path().join("disk.dec");
//! decrypt_disk(&out, &lookup, &DecryptOptions::to_output(&back), &NoProgress, &AtomicBool::new(false))?;
//! assert_eq!(std::fs::read(&back)?, std::fs::read(&image)?);
//! # Ok(()) }
//! ```
//!
//! # Security
//! Secret types ([`secret::Dek`], [`secret::Kek`], [`secret::Kdk`]) zeroize on drop and have no
//! `Clone`, `Debug` or `Display`. A failed unwrap is one opaque error. XTS hides data but does
//! not detect tampering with it; the metadata is authenticated by the key wrap.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
// The system calls that take raw pointers (locked memory, OFD locks) are in vmcrypt-secmem.
#![forbid(unsafe_code)]

pub mod agent;
pub mod disk;
mod error;
mod failpoint;
pub mod fsutil;
pub mod locator;
pub mod lock;
pub mod provider;
pub mod reencrypt;
pub mod secret;
pub mod settings;
pub mod vm;
pub mod wrap;

pub use error::{Error, ErrorKind, Result, error_causes, error_line};
pub use vmcrypt_xts::{Direction, SectorSize};
