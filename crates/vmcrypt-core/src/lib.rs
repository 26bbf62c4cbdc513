//! vmcrypt-core: the library a host agent links to encrypt VM disks and to serve them live.
//!
//! Each disk gets its own data encryption key (DEK, XTS-AES-256), wrapped under a key
//! encryption key (KEK) that lives in a key provider, and stored as a `vmware:key/...` locator
//! in the disk's settings (a VMDK descriptor, or a sidecar beside a raw image).
//!
//! The front door, for a host agent: a [`provider::ProviderRegistry`] (providers by name,
//! each opened once and shared by every job and disk), jobs built then run ([`DiskJob`],
//! [`VmJob`]) giving one serializable [`Report`], and an [`EncryptedDisk`] to read and write
//! by guest offset:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use vmcrypt_core::provider::{KeyProvider, Registry, native::NativeProvider};
//! use vmcrypt_core::{DiskJob, EncryptedDisk, NoProgress, Scratch};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let keystore = dir.path().join("native.keystore");
//! NativeProvider::create("native", &keystore)?;
//! // Providers by name, each opened on first use and then shared.
//! let registry = Registry::new(move |name: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
//!     Ok(Arc::new(NativeProvider::open(name, &keystore)?))
//! });
//! // Encrypt a disk in place: new DEK, wrapped under a new KEK, metadata in disk.img.vmcrypt.
//! let image = dir.path().join("disk.img");
//! std::fs::write(&image, vec![7u8; 64 * 1024])?;
//! let report = DiskJob::encrypt(&image)
//!     .provider("native")
//!     .run(&registry, &NoProgress, &AtomicBool::new(false))?;
//! assert_eq!(report.bytes, 64 * 1024);
//! // Serve it: read and write by guest offset, under the disk's lock.
//! let disk = EncryptedDisk::open(&image, &registry)?;
//! let mut unit = vec![0u8; disk.unit_size()];
//! disk.read_at(&mut unit, 4096)?;
//! assert_eq!(unit, vec![7u8; 4096]);
//! // Each thread that writes has a scratch buffer: data is encrypted there, never in place.
//! let mut scratch = Scratch::default();
//! disk.write_at(&vec![1u8; 4096], 0, &mut scratch)?;
//! disk.flush()?;
//! # Ok(()) }
//! ```
//!
//! Inside, layers point one way (docs/architecture.md): the ground floor ([`Progress`],
//! [`JobStats`], worker threads, cancel flags) under the engines that rewrite payloads, under
//! the keySafe and the key wrap, under disks, under VMs.
//!
//! # Security
//! Secret types ([`secret::Dek`], [`secret::Kek`], [`secret::Kdk`]) zeroize on drop and have no
//! `Clone`, `Debug` or `Display`. A failed unwrap is one opaque error. XTS hides data but does
//! not detect tampering with it; the metadata is authenticated by the key wrap.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
// The system calls that take raw pointers (locked memory, OFD locks) are in vmcrypt-secmem.
#![forbid(unsafe_code)]

pub mod disk;
#[cfg(feature = "testing")]
pub mod engine;
#[cfg(not(feature = "testing"))]
mod engine;
mod error;
mod failpoint;
pub mod fsutil;
mod holes;
mod keysafe;
pub mod locator;
pub mod lock;
mod progress;
pub mod provider;
mod report;
pub mod secret;
pub mod settings;
pub mod vm;
#[cfg(feature = "testing")]
pub mod wrap;
#[cfg(not(feature = "testing"))]
mod wrap;

#[cfg(feature = "guest-memory")]
pub use disk::Sealed;
pub use disk::{DiskJob, EncryptedDisk, JobKind, JobStatus, Route, Scratch};
pub use engine::Tuning;
pub use error::{Error, ErrorKind, Result, error_causes, error_line};
pub use progress::{JobStats, NoProgress, Progress, worker_threads};
pub use report::Report;
pub use vm::VmJob;

pub use vmcrypt_xts::{Direction, SectorSize};
