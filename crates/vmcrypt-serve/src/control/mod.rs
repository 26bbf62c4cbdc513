//! The control socket of a serving process: how `vmcrypt rekey --deep`, `vmcrypt encrypt
//! --in-place`, `vmcrypt decrypt --in-place` and `vmcrypt jobs` reach the process that holds a
//! disk, to run an online job there (issue 18) and follow it, or to rekey it shallowly.
//!
//! The socket is `PAYLOAD.vmcrypt-control` beside the disk's payload
//! ([`vmcrypt_core::disk::control_path`]), so a client finds it from the disk alone. It is
//! created 0600 from its first instant, and both ends check the other with `SO_PEERCRED`:
//! the server serves its own user and root, a client talks only to a server of its own user
//! or root. Never a TCP port.
//!
//! Protocol: one JSON object per line, a request and its reply, on a connection that may
//! carry several. Lines are capped ([`MAX_LINE`]); a request that does not parse gets an
//! error reply and the connection is closed.

mod client;
mod runner;
mod server;

pub use client::Client;
pub use runner::Rate;
pub use server::ControlServer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest line either end reads.
pub const MAX_LINE: usize = 64 * 1024;

/// A request to the serving process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The server, its disk and its job.
    Status,
    /// Start an online deep rekey (or take a stopped one up again).
    DeepRekey {
        /// Bytes per second at most; none: the default (see [`Rate`]).
        #[serde(default)]
        rate: Option<u64>,
        /// For a disk of a VM: the VMX of the VM's deep rekey, which must list the disk and
        /// be staged for its next generation
        /// ([`vmcrypt_core::EncryptedDisk::start_deep_rekey_of_vm`]).
        #[serde(default)]
        vm: Option<PathBuf>,
    },
    /// Start an online encryption of a plaintext disk served as such (or take a stopped one up
    /// again): a new KEK from this provider (by its name in the server's configuration).
    Encrypt {
        /// The provider of the new KEK.
        provider: String,
        /// Bytes per second at most; none: the default (see [`Rate`]).
        #[serde(default)]
        rate: Option<u64>,
    },
    /// Start an online decryption (or take a stopped one up again); the disk is served as
    /// plaintext once it is done.
    Decrypt {
        /// Bytes per second at most; none: the default (see [`Rate`]).
        #[serde(default)]
        rate: Option<u64>,
    },
    /// A shallow rekey: the DEK re-wrapped under a new KEK from this provider (by its name in
    /// the server's configuration). Metadata only; the reply comes once it is done.
    ShallowRekey {
        /// The provider of the new KEK.
        provider: String,
    },
}

/// An online job as the server reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    /// What the job does ("deep rekey", "encryption" or "decryption").
    pub kind: String,
    /// `running`, `failed` (stopped by an error; a new request takes it up) or `done`.
    pub state: String,
    /// Bytes done.
    pub done: u64,
    /// The disk's size.
    pub len: u64,
    /// The rate cap in bytes per second, if one was asked for.
    #[serde(default)]
    pub rate: Option<u64>,
    /// Why it stopped, when it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Seconds since the job started (or was taken up) in this process.
    #[serde(default)]
    pub seconds: f64,
}

/// An error the server reports: a kind ([`vmcrypt_core::ErrorKind::as_str`]) and a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The error's kind.
    pub kind: String,
    /// Its message, with its causes.
    pub message: String,
}

/// The server's reply to any request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The serving process.
    pub pid: u32,
    /// The disk it serves, as it was named to it.
    pub disk: PathBuf,
    /// The job under way (or stopped by an error), if any.
    #[serde(default)]
    pub job: Option<JobView>,
    /// The last job that finished in this process, if any.
    #[serde(default)]
    pub last: Option<JobView>,
    /// Set when the request failed.
    #[serde(default)]
    pub error: Option<Failure>,
}
