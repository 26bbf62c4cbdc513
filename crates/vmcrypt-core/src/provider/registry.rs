//! Providers by name: the one way every job finds the provider a keySafe names.
//!
//! A host agent, the CLI and a test all hand jobs a [`ProviderRegistry`]. A [`Registry`] opens
//! each provider once, on first use, and shares it (`Arc`) with every job and every disk after
//! that, so a KMIP provider's connections and its memory of failed servers serve a whole VM,
//! or a whole agent's life, instead of one lookup. A closure `Fn(&str) -> Result<Arc<dyn
//! KeyProvider>>` is a registry too (tests, a fixed provider).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::KeyProvider;
use crate::Result;

/// Finds a provider by the name recorded in a keySafe.
pub trait ProviderRegistry: Sync {
    /// The provider called `name`.
    ///
    /// # Errors
    /// An unknown name ([`crate::Error::InvalidInput`]) or what opening it returned.
    fn provider(&self, name: &str) -> Result<Arc<dyn KeyProvider>>;
}

impl<F> ProviderRegistry for F
where
    F: Fn(&str) -> Result<Arc<dyn KeyProvider>> + Sync,
{
    fn provider(&self, name: &str) -> Result<Arc<dyn KeyProvider>> {
        self(name)
    }
}

/// How a [`Registry`] opens a provider it has not opened yet.
pub type Opener = dyn Fn(&str) -> Result<Arc<dyn KeyProvider>> + Send + Sync;

/// A registry that opens each provider once and shares it. A provider that fails to open is
/// not remembered: the next call tries again (a provider added to the configuration later is
/// found without a restart).
pub struct Registry {
    open: Box<Opener>,
    opened: Mutex<HashMap<String, Arc<dyn KeyProvider>>>,
}

impl Registry {
    /// A registry that opens providers with `open` on first use.
    pub fn new(
        open: impl Fn(&str) -> Result<Arc<dyn KeyProvider>> + Send + Sync + 'static,
    ) -> Self {
        Registry {
            open: Box::new(open),
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// A registry of one provider, already open: what a job that needs only the provider it
    /// was given uses.
    pub fn of(provider: Arc<dyn KeyProvider>) -> Self {
        let name = provider.name().to_string();
        let r = Registry::new(move |n: &str| {
            Err(crate::Error::input(format!("unknown key provider {n:?}")))
        });
        r.lock().insert(name, provider);
        r
    }

    /// How many providers are open.
    pub fn open_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<dyn KeyProvider>>> {
        self.opened.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProviderRegistry for Registry {
    fn provider(&self, name: &str) -> Result<Arc<dyn KeyProvider>> {
        if let Some(p) = self.lock().get(name) {
            return Ok(p.clone());
        }
        // Opened without the lock held: a KMIP provider may take a while, and another job
        // asking for another provider need not wait. Two first uses race harmlessly; the
        // first one kept wins.
        let p = (self.open)(name)?;
        Ok(self.lock().entry(name.to_string()).or_insert(p).clone())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("opened", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}
