//! vmcrypt-agent: the host agent, a key cache that keeps running VMs independent of their key
//! servers, and the provider configuration every vmcrypt process reads ([`config`]).
//!
//! A hypervisor host keeps the keys of its running VMs in memory, so that losing every key
//! server stops nothing that runs, and so that a VM whose key server is gone for good can be
//! moved to another provider before it powers off (docs/agent.md, the runbook).
//!
//! - [`KeyCache`]: KEKs by (provider, key id) in locked, non-dumpable memory, zeroed on
//!   eviction and drop (`vmcrypt_secmem::LockedSlots`).
//! - [`Agent`]: providers opened once and kept (connections, server health), seen through the
//!   cache, with a bound on the requests under way at each ([`limit`]: a boot storm waits in
//!   the agent instead of drowning the key servers); as a [`vmcrypt_core::provider::ProviderRegistry`] it serves every
//!   disk and VM operation of this library.
//! - [`server::serve`] puts an agent on a Unix socket (0600, peers checked with
//!   `SO_PEERCRED`); [`AgentClient`] is the other end, and hands out providers that route
//!   every key operation through the agent.
//!
//! Every key fetch and failover is a tracing event: cache hits at debug, fetches from a
//! provider and failovers at info and warn.
//!
//! ```
//! use std::sync::Arc;
//! use vmcrypt_agent::{Agent, KeyCache};
//! use vmcrypt_core::provider::{native::NativeProvider, KeyProvider, KeyPurpose};
//! # fn main() -> vmcrypt_core::Result<()> {
//! # let dir = tempfile::tempdir().expect("tempdir");
//! let ks = dir.path().join("native.keystore");
//! NativeProvider::create("native", &ks)?;
//! let agent = Agent::new(
//!     KeyCache::new(64)?,
//!     move |name: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
//!         Ok(Arc::new(NativeProvider::open(name, &ks)?))
//!     },
//! );
//! let (id, _kek) = agent.provider("native")?.create_kek(&KeyPurpose::Vm("vm-1".into()))?;
//! assert_eq!(agent.cache().len(), 1); // later fetches of `id` need no provider
//! let again = agent.provider("native")?.fetch_kek(&id)?;
//! # let _ = again;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

pub mod audit;
pub mod cache;
pub mod client;
pub mod config;
mod config_parse;
pub mod limit;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod systemd;

pub use cache::{CachingProvider, KeyCache};
pub use client::{AgentClient, AgentProvider};
pub use config::{Config, KmipConfig, ProviderConfig};
pub use server::{Agent, Shutdown, bind, serve};

/// Makes this process non-dumpable: no core file (RLIMIT_CORE 0 as well), and other processes
/// of the same user cannot ptrace it or read its /proc/PID/mem. For every process that holds
/// keys: the agent, and the CLI while it runs a job.
///
/// # Errors
/// [`vmcrypt_core::Error::Unsupported`] if the kernel refuses.
pub fn harden_process() -> vmcrypt_core::Result<()> {
    vmcrypt_secmem::harden_process().map_err(Into::into)
}
