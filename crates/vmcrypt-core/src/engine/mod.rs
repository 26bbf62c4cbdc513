//! The engines that rewrite a payload, below the disk layer: they know files (a
//! [`Storage`]), keys and byte ranges, never disks, metadata or providers.
//!
//! - [`copy`]: the copy path, a payload into a new file ([`ImageJob`]);
//! - [`InPlace`]: a crash-safe in-place job, driven by one of two engines that survive a crash
//!   or power loss at any instant with no byte lost: the data-shift engine ([`shift`]), which
//!   moves the payload and writes each byte once, and the journaled engine ([`journaled`]),
//!   which keeps it in place and writes each byte twice. See docs/crash-safety.md.
//!
//! Tuning ([`Tuning`]: chunk or window size, engine choice) is a typed option passed down
//! from the front door, never read from the environment here.
//!
//! Only the disk layer uses this module; the power-loss suites and benches reach it through
//! the `testing` feature.

pub mod copy;
pub mod inplace;
pub mod journal;
pub mod journaled;
pub mod online;
pub mod pieces;
pub mod shift;
pub mod storage;
pub mod writeback;

pub use copy::ImageJob;
pub use inplace::{InPlace, Movement, Tuning};
pub use journaled::{Job, Transform};
pub use shift::ShiftJob;
pub use storage::{FileStorage, Storage};

/// Default chunk of the journaled in-place engine: 8 MiB.
pub const DEFAULT_CHUNK: u64 = 8 * 1024 * 1024;

/// Default window of the data-shift engine, and so how far an in-place encryption moves the
/// payload: 64 MiB (or less for a smaller payload). Large windows mean few durability
/// barriers; the price is this much more file while the disk is encrypted (zeros).
pub const DEFAULT_SHIFT: u64 = 64 << 20;
