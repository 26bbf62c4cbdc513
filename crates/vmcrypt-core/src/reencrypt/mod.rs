//! Crash-safe in-place jobs: encryption, decryption and deep rekey of a payload that survive a
//! crash or power loss at any instant with no byte lost (see [`engine`] for the protocol and
//! docs/crash-safety.md for why every crash point is safe).

pub mod engine;
pub mod journal;
pub mod pieces;
pub mod shift;
pub mod storage;
pub mod writeback;

pub use engine::{Job, Transform};
pub use shift::ShiftJob;
pub use storage::{FileStorage, Storage};
