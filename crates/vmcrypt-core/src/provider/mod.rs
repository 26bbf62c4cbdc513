//! Key providers: where KEKs live. A provider creates a KEK for a disk or VM and fetches it
//! again by key id. The embedded [`native`] provider derives KEKs from one local key; KMIP
//! providers (a cluster of key servers) implement the same trait in vmcrypt-kmip.

pub mod native;
mod registry;

pub use registry::{Opener, ProviderRegistry, Registry};

use crate::secret::Kek;
use crate::{Error, Result};

/// A key id within a provider: printable ASCII, 1 to 256 bytes. Checked once at construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Validates a key id.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty, overlong or non-printable id.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::input(format!("invalid key id {s:?}")));
        }
        Ok(KeyId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a new KEK is for; providers that name keys (KMIP) use it for the key's Name. Not
/// `non_exhaustive`: the agent protocol encodes every purpose, and a new one changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The KEK of one disk, by the disk's uuid.
    Disk(String),
    /// The KEK of one VM, by the VM's uuid.
    Vm(String),
}

/// A source of KEKs.
pub trait KeyProvider: Send + Sync {
    /// The provider's name (stored in every keySafe it wraps).
    fn name(&self) -> &str;

    /// Creates a new KEK and returns its id with the key.
    ///
    /// # Errors
    /// [`Error::KeyService`] when the provider cannot create keys.
    fn create_kek(&self, purpose: &KeyPurpose) -> Result<(KeyId, Kek)>;

    /// Fetches the KEK with this id.
    ///
    /// # Errors
    /// [`Error::KeyService`] when the provider cannot be reached or does not have the key.
    fn fetch_kek(&self, id: &KeyId) -> Result<Kek>;

    /// Fetches the KEK with this id to open a keySafe of `purpose`'s disk or VM. The same
    /// as [`KeyProvider::fetch_kek`] for every provider but an audited one, which records
    /// the disk or VM.
    ///
    /// # Errors
    /// As [`KeyProvider::fetch_kek`].
    fn fetch_kek_for(&self, id: &KeyId, purpose: &KeyPurpose) -> Result<Kek> {
        let _ = purpose;
        self.fetch_kek(id)
    }

    /// How each of the provider's servers has fared since it was opened, for a long-running
    /// process's metrics; empty for a provider without servers (native). A wrapper passes its
    /// inner provider's on.
    fn servers(&self) -> Vec<ServerStat> {
        Vec::new()
    }
}

/// One server's record, as [`KeyProvider::servers`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    /// `host:port`.
    pub server: String,
    /// Operations it failed (unreachable, timed out, garbage): each one cost a failover.
    pub failures: u64,
    /// Times it was tried after the others because it had failed recently (demotion).
    pub demotions: u64,
}
