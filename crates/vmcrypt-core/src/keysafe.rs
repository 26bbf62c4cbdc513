//! The keySafe: one secret (a disk's DEK, or a VM's configuration key) wrapped under one or
//! more KEKs, each wrapping (a [`Pair`]) bound to its context and a key generation
//! ([`crate::wrap`] does the sealing). Everything a job does with a keySafe is here, once,
//! for both kinds of secret:
//! - [`KeySafe::seal`]: a new keySafe, proved to open before it protects anything;
//! - [`KeySafe::open`]: the secret and the KEK that opened it, trying each pair at the current
//!   and (during a rekey) the pending generation;
//! - [`KeySafe::staged`], [`KeySafe::newest_holds`], [`KeySafe::committed`]: the two durable
//!   steps of a rekey (docs in [`crate::disk`]'s shallow rekey), and [`KeySafe::pending_target`];
//! - [`KeyRing`]: the KEKs of one job, each fetched from its provider once, and the one
//!   create-and-verify of a new KEK.
//!
//! It works on the locator and the clear metadata beside it, never on a file: the disk and VM
//! layers read and write the metadata.

use std::cell::RefCell;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::locator::KeyLocator;
use crate::provider::{KeyId, KeyProvider, KeyPurpose, ProviderRegistry};
use crate::secret::{ConfigKey, Dek, Kek};
use crate::wrap::{self, DiskIdentity, VmKeyContext, WrapContext};
use crate::{Error, Result};

/// What a keySafe's pairs are bound to besides the KEK's names and the generation, and how its
/// secret is sealed: a disk ([`DiskBinding`]) or a VM ([`VmBinding`]).
pub(crate) trait Binding {
    /// The secret the keySafe holds.
    type Secret;
    /// Seals `secret` under `kek`, filed as (`provider`, `key_id`), at `generation`.
    fn wrap(&self, kek: &KekRef<'_>, secret: &Self::Secret, generation: u64) -> Result<KeyLocator>;
    /// Opens one pair at `generation`; every failure is [`Error::UnwrapFailed`].
    fn unwrap(&self, kek: &Kek, pair: &Pair<'_>, generation: u64) -> Result<Self::Secret>;
    /// Whether two secrets are equal (in constant time).
    fn same(a: &Self::Secret, b: &Self::Secret) -> bool;
    /// What the keySafe's KEK is fetched for: its disk or VM (for an audit log's record).
    fn purpose(&self) -> KeyPurpose;
}

/// A disk's keySafe holds its DEK, bound to the disk's identity and its VM, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskBinding<'a> {
    pub vm_uuid: Option<&'a str>,
    pub disk: &'a DiskIdentity,
}

impl Binding for DiskBinding<'_> {
    type Secret = Dek;

    fn wrap(&self, kek: &KekRef<'_>, dek: &Dek, generation: u64) -> Result<KeyLocator> {
        wrap::wrap_dek(
            kek.kek,
            dek,
            &self.context(kek.provider, kek.key_id, generation),
        )
    }

    fn unwrap(&self, kek: &Kek, pair: &Pair<'_>, generation: u64) -> Result<Dek> {
        let ctx = self.context(pair.provider, pair.key_id, generation);
        wrap::unwrap_dek(kek, pair.locked, &ctx)
    }

    fn same(a: &Dek, b: &Dek) -> bool {
        bool::from(a.expose_secret().ct_eq(b.expose_secret()))
    }

    fn purpose(&self) -> KeyPurpose {
        KeyPurpose::Disk(self.disk.uuid.clone())
    }
}

impl<'a> DiskBinding<'a> {
    fn context(&self, provider: &'a str, key_id: &'a str, generation: u64) -> WrapContext<'a> {
        WrapContext {
            provider,
            key_id,
            vm_uuid: self.vm_uuid,
            disk: self.disk,
            generation,
        }
    }
}

/// A VM's keySafe holds its configuration key, bound to the VM's uuid.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VmBinding<'a> {
    pub vm_uuid: &'a str,
}

impl Binding for VmBinding<'_> {
    type Secret = ConfigKey;

    fn wrap(&self, kek: &KekRef<'_>, key: &ConfigKey, generation: u64) -> Result<KeyLocator> {
        let ctx = VmKeyContext {
            provider: kek.provider,
            key_id: kek.key_id,
            vm_uuid: self.vm_uuid,
            generation,
        };
        wrap::wrap_config_key(kek.kek, key, &ctx)
    }

    fn unwrap(&self, kek: &Kek, pair: &Pair<'_>, generation: u64) -> Result<ConfigKey> {
        let ctx = VmKeyContext {
            provider: pair.provider,
            key_id: pair.key_id,
            vm_uuid: self.vm_uuid,
            generation,
        };
        wrap::unwrap_config_key(kek, pair.locked, &ctx)
    }

    fn purpose(&self) -> KeyPurpose {
        KeyPurpose::Vm(self.vm_uuid.to_string())
    }

    fn same(a: &ConfigKey, b: &ConfigKey) -> bool {
        bool::from(a.expose_secret().ct_eq(b.expose_secret()))
    }
}

/// One wrapping in a keySafe: which KEK, and the sealed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pair<'a> {
    pub provider: &'a str,
    pub key_id: &'a str,
    pub locked: &'a [u8],
}

impl Pair<'_> {
    fn is_under(&self, kek: &KekRef<'_>) -> bool {
        self.provider == kek.provider && self.key_id == kek.key_id
    }
}

/// A KEK with the names it is filed under.
#[derive(Clone, Copy)]
pub(crate) struct KekRef<'a> {
    pub provider: &'a str,
    pub key_id: &'a str,
    pub kek: &'a Kek,
}

/// A KEK a job holds, with its names.
pub(crate) struct HeldKek {
    pub provider: String,
    pub key_id: String,
    pub kek: Kek,
}

impl HeldKek {
    /// The borrowed form the wrap functions take.
    pub fn as_ref(&self) -> KekRef<'_> {
        KekRef {
            provider: &self.provider,
            key_id: &self.key_id,
            kek: &self.kek,
        }
    }
}

/// What opening a keySafe gives: the secret, and the KEK that opened it.
pub(crate) struct Opened<S> {
    pub secret: S,
    pub kek: HeldKek,
}

/// The KEKs of one job: each (provider, key id) is fetched from its provider once, however
/// many keySafes (a VM and all its disks) it opens. Kept for the job only; zeroed on drop.
pub(crate) struct KeyRing<'r> {
    registry: &'r dyn ProviderRegistry,
    fetched: RefCell<Vec<HeldKek>>,
}

impl<'r> KeyRing<'r> {
    pub fn new(registry: &'r dyn ProviderRegistry) -> Self {
        KeyRing {
            registry,
            fetched: RefCell::new(Vec::new()),
        }
    }

    /// The provider called `name`, from the registry.
    pub fn provider(&self, name: &str) -> Result<Arc<dyn KeyProvider>> {
        self.registry.provider(name)
    }

    /// The KEK (`provider`, `key_id`) of a keySafe of `purpose`'s disk or VM: from this job's
    /// earlier fetch, else from the provider.
    pub fn kek(&self, provider: &str, key_id: &str, purpose: &KeyPurpose) -> Result<HeldKek> {
        let known = self
            .fetched
            .borrow()
            .iter()
            .find(|h| h.provider == provider && h.key_id == key_id)
            .map(|h| Kek::from_slice(h.kek.expose_secret()))
            .transpose()?;
        let kek = match known {
            Some(k) => k,
            None => {
                let k = self
                    .provider(provider)?
                    .fetch_kek_for(&KeyId::new(key_id)?, purpose)?;
                self.remember(provider, key_id, &k)?;
                k
            }
        };
        Ok(HeldKek {
            provider: provider.to_string(),
            key_id: key_id.to_string(),
            kek,
        })
    }

    /// Creates a KEK for `purpose` at `provider` and proves the provider gives it back before
    /// it protects any data (a key the provider cannot return would lose what it wraps).
    ///
    /// # Errors
    /// The provider's errors; [`Error::KeyService`] if it returns another key.
    pub fn create_verified(
        &self,
        provider: &dyn KeyProvider,
        purpose: &KeyPurpose,
    ) -> Result<HeldKek> {
        let (id, kek) = provider.create_kek(purpose)?;
        let back = provider.fetch_kek_for(&id, purpose)?;
        if !bool::from(back.expose_secret().ct_eq(kek.expose_secret())) {
            return Err(Error::key_service(
                provider.name(),
                format!("key {id} came back different from the key just created"),
            ));
        }
        self.remember(provider.name(), id.as_str(), &kek)?;
        Ok(HeldKek {
            provider: provider.name().to_string(),
            key_id: id.to_string(),
            kek,
        })
    }

    fn remember(&self, provider: &str, key_id: &str, kek: &Kek) -> Result<()> {
        self.fetched.borrow_mut().push(HeldKek {
            provider: provider.to_string(),
            key_id: key_id.to_string(),
            kek: Kek::from_slice(kek.expose_secret())?,
        });
        Ok(())
    }
}

/// A keySafe with what its pairs are bound to and its generations, read from the metadata.
pub(crate) struct KeySafe<'a, B> {
    pub locator: &'a KeyLocator,
    pub binding: B,
    /// The generation the keySafe is at.
    pub generation: u64,
    /// During a rekey: the generation of the newest pair.
    pub rekey_generation: Option<u64>,
}

impl<'a, B: Binding> KeySafe<'a, B> {
    /// A new keySafe of one pair holding `secret` under `kek` at `generation`, opened again
    /// before it is returned: a keySafe that does not open never protects data.
    ///
    /// # Errors
    /// [`Error::UnwrapFailed`] if the round trip fails; no randomness for the nonce.
    pub fn seal(
        binding: &B,
        kek: &KekRef<'_>,
        secret: &B::Secret,
        generation: u64,
    ) -> Result<KeyLocator> {
        let locator = KeyLocator::List(vec![binding.wrap(kek, secret, generation)?]);
        let pair = pairs(&locator)
            .first()
            .copied()
            .ok_or(Error::UnwrapFailed)?;
        let back = binding.unwrap(kek.kek, &pair, generation)?;
        if !B::same(&back, secret) {
            return Err(Error::UnwrapFailed);
        }
        Ok(locator)
    }

    /// The pairs vmcrypt can open, oldest first.
    pub fn pairs(&self) -> Vec<Pair<'a>> {
        pairs(self.locator)
    }

    /// Opens the keySafe: each pair in turn, at the current and then the pending generation.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a keySafe with no pair vmcrypt can open; the last pair's
    /// error (provider, [`Error::UnwrapFailed`]) when none opens.
    pub fn open(&self, ring: &KeyRing<'_>) -> Result<Opened<B::Secret>> {
        let pairs = self.pairs();
        if pairs.is_empty() {
            return Err(Error::Unsupported {
                what: "the keySafe has no AES-256-GCM key vmcrypt can open".into(),
            });
        }
        let mut last = Error::UnwrapFailed;
        for pair in pairs {
            let attempt = ring
                .kek(pair.provider, pair.key_id, &self.binding.purpose())
                .and_then(|kek| {
                    std::iter::once(self.generation)
                        .chain(self.rekey_generation)
                        .find_map(|g| self.binding.unwrap(&kek.kek, &pair, g).ok())
                        .map(|secret| Opened { secret, kek })
                        .ok_or(Error::UnwrapFailed)
                });
            match attempt {
                Ok(opened) => return Ok(opened),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Opens one pair at one generation (a deep rekey opens its first and its last).
    pub fn open_pair(
        &self,
        pair: &Pair<'_>,
        generation: u64,
        ring: &KeyRing<'_>,
    ) -> Result<B::Secret> {
        let kek = ring.kek(pair.provider, pair.key_id, &self.binding.purpose())?;
        self.binding.unwrap(&kek.kek, pair, generation)
    }

    /// The KEK of a rekey that was staged and not committed: the newest pair's.
    pub fn pending_target(&self) -> Option<(String, String)> {
        self.pairs()
            .last()
            .map(|p| (p.provider.to_string(), p.key_id.to_string()))
    }

    /// Whether the keySafe is already staged (or committed) for `target` under `new`: its
    /// newest pair is under `new` and a rekey to `target` is recorded or done.
    pub fn is_staged_for(&self, new: &KekRef<'_>, target: u64) -> bool {
        let ends_with_new = self.pairs().last().is_some_and(|p| p.is_under(new));
        let staged = self.rekey_generation == Some(target);
        let committed = self.rekey_generation.is_none() && self.generation == target;
        ends_with_new && (staged || committed)
    }

    /// Stage: the keySafe with `secret` wrapped under `new` at `target` as its newest pair,
    /// beside the pairs it has, less any older pair under that same KEK (a rekey to the KEK it
    /// already has is a re-wrap, not a second copy).
    pub fn staged(&self, secret: &B::Secret, new: &KekRef<'_>, target: u64) -> Result<KeyLocator> {
        let pair = self.binding.wrap(new, secret, target)?;
        let mut items = entries(self.locator);
        items.retain(|it| !pair_of(it).is_some_and(|p| p.is_under(new)));
        items.push(pair);
        Ok(KeyLocator::List(items))
    }

    /// The keySafe with `pair` as its newest entry, beside every one it has (a deep rekey's new
    /// DEK under the same KEK, kept with the old one until the job ends).
    pub fn with_newest(&self, pair: KeyLocator) -> KeyLocator {
        let mut items = entries(self.locator);
        items.push(pair);
        KeyLocator::List(items)
    }

    /// Before a commit: whether the newest pair holds `secret` under `new`, bound to `target`.
    /// A forged `rekeyGeneration` (or any target the keySafe is not bound to) fails here, before
    /// the one write that would make the keySafe unopenable.
    pub fn newest_holds(&self, new: &KekRef<'_>, secret: &B::Secret, target: u64) -> bool {
        self.pairs().last().is_some_and(|p| {
            p.is_under(new)
                && self
                    .binding
                    .unwrap(new.kek, p, target)
                    .is_ok_and(|s| B::same(&s, secret))
        })
    }

    /// [`KeySafe::newest_holds`] as the check before a commit: an [`Error::Integrity`] naming
    /// `file` (the metadata file) when it fails.
    pub fn check_commit(
        &self,
        new: &KekRef<'_>,
        secret: &B::Secret,
        target: u64,
        file: &std::path::Path,
    ) -> Result<()> {
        if self.newest_holds(new, secret, target) {
            return Ok(());
        }
        Err(Error::Integrity {
            path: file.to_path_buf(),
            reason: format!(
                "rekeyGeneration {target} is not what the keySafe's newest key is bound to (altered metadata?); refusing to commit, nothing changed"
            ),
        })
    }

    /// Commit: the keySafe reduced to its newest pair.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty keySafe.
    pub fn committed(&self) -> Result<KeyLocator> {
        entries(self.locator)
            .pop()
            .map(|l| KeyLocator::List(vec![l]))
            .ok_or_else(|| Error::input("empty keySafe"))
    }
}

/// The (provider, key id) pairs of a keySafe, for display.
pub(crate) fn names(ks: &KeyLocator) -> Vec<(String, String)> {
    pairs(ks)
        .into_iter()
        .map(|p| (p.provider.to_string(), p.key_id.to_string()))
        .collect()
}

/// The pairs of a keySafe vmcrypt can open: a single pair or a list's pairs; other entries
/// are skipped.
pub(crate) fn pairs(ks: &KeyLocator) -> Vec<Pair<'_>> {
    match ks {
        KeyLocator::List(items) => items.iter().filter_map(pair_of).collect(),
        other => pair_of(other).into_iter().collect(),
    }
}

fn pair_of(it: &KeyLocator) -> Option<Pair<'_>> {
    match it {
        KeyLocator::Pair { locker, mac, data } if mac == wrap::WRAP_ALG => match locker.as_ref() {
            KeyLocator::Fqid {
                provider, key_id, ..
            } => Some(Pair {
                provider,
                key_id,
                locked: data,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The entries of a keySafe: a list's items, or the one locator.
fn entries(ks: &KeyLocator) -> Vec<KeyLocator> {
    match ks {
        KeyLocator::List(items) => items.clone(),
        other => vec![other.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::tests::disk;

    #[test]
    fn stage_then_commit_keeps_only_the_new_pair_and_refuses_a_forged_target() {
        let d = disk();
        let binding = DiskBinding {
            vm_uuid: None,
            disk: &d,
        };
        let (old, new) = (Kek::generate().expect("rng"), Kek::generate().expect("rng"));
        let old_ref = KekRef {
            provider: "p",
            key_id: "old",
            kek: &old,
        };
        let new_ref = KekRef {
            provider: "p",
            key_id: "new",
            kek: &new,
        };
        let dek = Dek::generate_xts().expect("rng");
        let sealed = KeySafe::seal(&binding, &old_ref, &dek, 1).expect("seal");
        let ks = KeySafe {
            locator: &sealed,
            binding,
            generation: 1,
            rekey_generation: None,
        };
        assert!(!ks.is_staged_for(&new_ref, 2));
        let staged = ks.staged(&dek, &new_ref, 2).expect("stage");
        let ks = KeySafe {
            locator: &staged,
            rekey_generation: Some(2),
            ..ks
        };
        assert_eq!(ks.pairs().len(), 2);
        assert!(ks.is_staged_for(&new_ref, 2));
        assert_eq!(ks.pending_target(), Some(("p".into(), "new".into())));
        assert!(ks.newest_holds(&new_ref, &dek, 2));
        assert!(!ks.newest_holds(&new_ref, &dek, 3), "a forged target");
        assert!(!ks.newest_holds(&old_ref, &dek, 2), "another KEK");
        let committed = ks.committed().expect("commit");
        let only = pairs(&committed);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].key_id, "new");
        // Staging again under the same KEK replaces its pair instead of adding one.
        let again = ks.staged(&dek, &new_ref, 2).expect("stage");
        assert_eq!(pairs(&again).len(), 2);
    }
}
