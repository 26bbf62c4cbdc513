//! The key cache of a host agent: unwrapped KEKs by (provider, key id), held in locked,
//! non-dumpable memory (`vmcrypt_secmem::LockedSlots`), zeroed when evicted and when the cache is dropped.
//!
//! Why KEKs and not DEKs: one KEK serves a VM's configuration and all its disks, and every
//! operation (open, decrypt, shallow rekey) starts from a KEK fetch; with the KEK cached, the
//! key server is needed again only for a new key. This is what keeps running VMs, and the
//! rescue of a VM whose key server is gone, independent of the key servers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::limit::Limiter;
use super::metrics::AgentMetrics;
use vmcrypt_core::provider::{KeyId, KeyProvider, KeyPurpose};
use vmcrypt_core::secret::Kek;
use vmcrypt_core::{Error, Result};
use vmcrypt_secmem::LockedSlots;

/// Default number of KEKs a cache holds: 32 KiB of locked memory (one page holds 128 keys),
/// within even a container's 64 KiB RLIMIT_MEMLOCK, and more VMs than a host runs.
pub const DEFAULT_CAPACITY: usize = 1024;

struct Inner {
    slots: LockedSlots<{ Kek::LEN }>,
    /// (provider, key id) -> (slot, insertion tick).
    index: HashMap<(String, String), (usize, u64)>,
    free: Vec<usize>,
    tick: u64,
}

/// A shared cache of KEKs. Cheap to clone (an `Arc`); thread-safe.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Mutex<Inner>>,
}

/// What the cache holds, without key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Provider name.
    pub provider: String,
    /// Key id within the provider.
    pub key_id: String,
}

impl KeyCache {
    /// A cache of at least `capacity` KEKs in locked memory.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the memory cannot be locked (see [`LockedSlots::new`]).
    pub fn new(capacity: usize) -> Result<Self> {
        let slots = LockedSlots::new(capacity)?;
        let free = (0..slots.slots()).rev().collect();
        Ok(KeyCache {
            inner: Arc::new(Mutex::new(Inner {
                slots,
                index: HashMap::new(),
                free,
                tick: 0,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the cached KEK, if any.
    pub fn get(&self, provider: &str, key_id: &str) -> Option<Kek> {
        let g = self.lock();
        let &(slot, _) = g.index.get(&(provider.to_string(), key_id.to_string()))?;
        Some(Kek::init_with_mut(|k| k.copy_from_slice(g.slots.get(slot))))
    }

    /// Stores a KEK (replacing the same key's entry). When full, the oldest entry is evicted
    /// (and zeroed), with a warning: size the cache for every VM the host runs.
    pub fn insert(&self, provider: &str, key_id: &str, kek: &Kek) {
        let mut g = self.lock();
        let key = (provider.to_string(), key_id.to_string());
        g.tick += 1;
        let tick = g.tick;
        let slot = if let Some(&(slot, _)) = g.index.get(&key) {
            slot
        } else if let Some(slot) = g.free.pop() {
            slot
        } else {
            let oldest = g
                .index
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, &(s, _))| (k.clone(), s));
            let Some((old_key, slot)) = oldest else {
                return; // no slots at all: cannot happen (LockedSlots has at least one)
            };
            tracing::warn!(
                provider = %old_key.0,
                key_id = %old_key.1,
                capacity = g.slots.slots(),
                "key cache full: evicting the oldest KEK (raise the agent's --cache-size)"
            );
            g.index.remove(&old_key);
            g.slots.clear(slot);
            slot
        };
        g.slots.get_mut(slot).copy_from_slice(kek.expose_secret());
        g.index.insert(key, (slot, tick));
    }

    /// Removes (and zeroes) one entry; true if it was there.
    pub fn evict(&self, provider: &str, key_id: &str) -> bool {
        let mut g = self.lock();
        match g.index.remove(&(provider.to_string(), key_id.to_string())) {
            Some((slot, _)) => {
                g.slots.clear(slot);
                g.free.push(slot);
                true
            }
            None => false,
        }
    }

    /// Removes and zeroes every entry.
    pub fn clear(&self) {
        self.forget(None, None);
    }

    /// Removes and zeroes the entries that match: one key (`provider` and `key_id`), every key
    /// of a provider (`key_id` `None`), or everything (both `None`). Returns how many.
    pub fn forget(&self, provider: Option<&str>, key_id: Option<&str>) -> usize {
        let mut g = self.lock();
        let doomed: Vec<(String, String)> = g
            .index
            .keys()
            .filter(|(p, k)| {
                provider.is_none_or(|want| want == p) && key_id.is_none_or(|want| want == k)
            })
            .cloned()
            .collect();
        for key in &doomed {
            if let Some((slot, _)) = g.index.remove(key) {
                g.slots.clear(slot);
                g.free.push(slot);
            }
        }
        doomed.len()
    }

    /// Number of cached KEKs.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many KEKs fit.
    pub fn capacity(&self) -> usize {
        self.lock().slots.slots()
    }

    /// What is cached (names only), sorted.
    pub fn entries(&self) -> Vec<CacheEntry> {
        let mut v: Vec<CacheEntry> = self
            .lock()
            .index
            .keys()
            .map(|(p, k)| CacheEntry {
                provider: p.clone(),
                key_id: k.clone(),
            })
            .collect();
        v.sort_by(|a, b| (&a.provider, &a.key_id).cmp(&(&b.provider, &b.key_id)));
        v
    }
}

/// A provider seen through the cache: fetches are served from the cache when they can be,
/// and every key fetched or created is cached. Emits a tracing event for every fetch.
pub struct CachingProvider {
    inner: Arc<dyn KeyProvider>,
    cache: KeyCache,
    limit: Option<Arc<Limiter>>,
    metrics: Option<Arc<AgentMetrics>>,
}

impl CachingProvider {
    /// Wraps `inner`, sharing `cache`.
    pub fn new(inner: Arc<dyn KeyProvider>, cache: KeyCache) -> Self {
        CachingProvider {
            inner,
            cache,
            limit: None,
            metrics: None,
        }
    }

    /// Counts hits, misses, creates and provider latency in `m` (the agent's metrics).
    pub fn counted(mut self, m: Arc<AgentMetrics>) -> Self {
        self.metrics = Some(m);
        self
    }

    fn count(&self, f: impl FnOnce(&AgentMetrics)) {
        if let Some(m) = &self.metrics {
            f(m);
        }
    }

    /// Bounds the requests under way at `inner` (shared by every wrapper of one provider).
    pub fn limited(mut self, limit: Arc<Limiter>) -> Self {
        self.limit = Some(limit);
        self
    }
}

impl KeyProvider for CachingProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn servers(&self) -> Vec<vmcrypt_core::provider::ServerStat> {
        self.inner.servers()
    }

    fn create_kek(&self, purpose: &KeyPurpose) -> Result<(KeyId, Kek)> {
        let started = Instant::now();
        let _slot = self.limit.as_ref().map(|l| l.acquire());
        self.count(|m| {
            m.creates.fetch_add(1, Ordering::Relaxed);
            m.in_flight.fetch_add(1, Ordering::Relaxed);
        });
        let r = self.inner.create_kek(purpose);
        self.count(|m| {
            m.in_flight.fetch_sub(1, Ordering::Relaxed);
            if r.is_err() {
                m.create_errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (id, kek) = r?;
        self.cache.insert(self.name(), id.as_str(), &kek);
        tracing::info!(
            provider = %self.name(),
            key_id = %id,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "key created and cached"
        );
        Ok((id, kek))
    }

    fn fetch_kek(&self, id: &KeyId) -> Result<Kek> {
        self.fetch_traced(id).map(|(k, _)| k)
    }
}

impl CachingProvider {
    /// [`KeyProvider::fetch_kek`], saying whether the cache had the key (true) or the provider
    /// was asked: the agent's audit log tells a cache hit from a fetch.
    ///
    /// # Errors
    /// The provider's, when the key is not cached.
    pub fn fetch_traced(&self, id: &KeyId) -> Result<(Kek, bool)> {
        if let Some(k) = self.cache.get(self.name(), id.as_str()) {
            tracing::debug!(provider = %self.name(), key_id = %id, "key fetch: cache hit");
            self.count(|m| {
                m.hits.fetch_add(1, Ordering::Relaxed);
            });
            return Ok((k, true));
        }
        let started = Instant::now();
        let _slot = self.limit.as_ref().map(|l| l.acquire());
        // While this request waited for a slot, another may have fetched the same key.
        if let Some(k) = self.cache.get(self.name(), id.as_str()) {
            tracing::debug!(provider = %self.name(), key_id = %id, "key fetch: cache hit after waiting");
            self.count(|m| {
                m.hits.fetch_add(1, Ordering::Relaxed);
            });
            return Ok((k, true));
        }
        self.count(|m| {
            m.misses.fetch_add(1, Ordering::Relaxed);
            m.in_flight.fetch_add(1, Ordering::Relaxed);
        });
        let r = self.inner.fetch_kek(id);
        self.count(|m| {
            m.in_flight.fetch_sub(1, Ordering::Relaxed);
            m.fetch_seconds.observe(started.elapsed());
            if r.is_err() {
                m.fetch_errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        match r.map(|k| (k, false)) {
            Ok((kek, hit)) => {
                self.cache.insert(self.name(), id.as_str(), &kek);
                tracing::info!(
                    provider = %self.name(),
                    key_id = %id,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "key fetch: cache miss, fetched from the provider and cached"
                );
                Ok((kek, hit))
            }
            Err(e) => {
                tracing::warn!(
                    provider = %self.name(),
                    key_id = %id,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "key fetch failed and the key is not cached: {e}"
                );
                Err(e)
            }
        }
    }
}

/// Refuses a capacity of zero with a clear message (for command-line parsing).
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn check_capacity(n: usize) -> Result<usize> {
    if n == 0 {
        return Err(Error::input(
            "the key cache needs room for at least one key",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(b: u8) -> Kek {
        Kek::init_with_mut(|k| k.fill(b))
    }

    #[test]
    fn insert_get_evict_clear() {
        let c = KeyCache::new(4).expect("cache");
        assert!(c.get("p", "1").is_none());
        c.insert("p", "1", &kek(1));
        c.insert("q", "1", &kek(2));
        assert_eq!(c.get("p", "1").expect("hit").expose_secret(), &[1u8; 32]);
        assert_eq!(c.get("q", "1").expect("hit").expose_secret(), &[2u8; 32]);
        c.insert("p", "1", &kek(3));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("p", "1").expect("hit").expose_secret(), &[3u8; 32]);
        assert!(c.evict("p", "1"));
        assert!(!c.evict("p", "1"));
        assert!(c.get("p", "1").is_none());
        c.insert("p", "2", &kek(4));
        c.insert("p", "3", &kek(5));
        assert_eq!(c.forget(Some("p"), Some("2")), 1);
        assert_eq!(c.forget(Some("p"), None), 1, "p/3 left");
        assert_eq!(c.len(), 1, "q/1 kept");
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn full_cache_evicts_the_oldest() {
        let c = KeyCache::new(1).expect("cache");
        let cap = c.capacity();
        for i in 0..=cap {
            c.insert("p", &i.to_string(), &kek(i as u8));
        }
        assert_eq!(c.len(), cap);
        assert!(c.get("p", "0").is_none(), "the oldest went");
        let last = cap.to_string();
        assert_eq!(
            c.get("p", &last).expect("newest").expose_secret(),
            &[cap as u8; 32]
        );
    }
}
