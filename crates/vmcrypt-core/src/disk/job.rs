//! The front door for disk jobs: [`DiskJob`], built then run with a provider registry, a
//! progress sink and a cancel flag, giving one [`Report`].
//!
//! ```no_run
//! # use std::sync::atomic::AtomicBool;
//! # use vmcrypt_core::{DiskJob, NoProgress, SectorSize, provider::ProviderRegistry};
//! # fn f(registry: &dyn ProviderRegistry) -> vmcrypt_core::Result<()> {
//! let report = DiskJob::encrypt("disk.img")
//!     .provider("native")
//!     .sector_size(SectorSize::S4096)
//!     .threads(2)
//!     .in_place()
//!     .run(registry, &NoProgress, &AtomicBool::new(false))?;
//! println!("{} bytes in {:?}", report.bytes, report.elapsed);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use vmcrypt_xts::SectorSize;

use crate::engine::Tuning;
use crate::keysafe::KeyRing;
use crate::progress::{Progress, worker_threads};
use crate::provider::ProviderRegistry;
use crate::report::Report;
use crate::{Error, Result};

/// The options every disk job reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobOptions {
    /// Write the result here; `None` works in place.
    pub output: Option<PathBuf>,
    /// XTS data unit size of a new encryption.
    pub sector_size: SectorSize,
    /// Worker threads (`None`: one per core).
    pub threads: Option<usize>,
    /// Encrypt a file as raw even though its first bytes name another container format.
    pub assume_raw: bool,
    /// Chunk size and engine choice of in-place jobs.
    pub tuning: Tuning,
    /// The provider a new KEK comes from (encrypt, shallow rekey), by its registry name.
    pub provider: Option<String>,
}

/// The setters every job builder has (disk and VM jobs), on a type with `opts: JobOptions`.
macro_rules! common_setters {
    () => {
        /// The provider a new KEK comes from (encrypt and shallow rekey), by its registry name.
        pub fn provider(mut self, name: impl Into<String>) -> Self {
            self.opts.provider = Some(name.into());
            self
        }

        /// The XTS data unit size of a new encryption (default 4096).
        pub fn sector_size(mut self, s: vmcrypt_xts::SectorSize) -> Self {
            self.opts.sector_size = s;
            self
        }

        /// Worker threads (default: one per core).
        pub fn threads(mut self, n: usize) -> Self {
            self.opts.threads = Some(n);
            self
        }

        /// Chunk size and engine choice of in-place jobs (default: what every job should use).
        pub fn tuning(mut self, t: crate::engine::Tuning) -> Self {
            self.opts.tuning = t;
            self
        }
    };
}
pub(crate) use common_setters;

impl JobOptions {
    /// The worker threads to use.
    pub fn worker_threads(&self) -> usize {
        worker_threads(self.threads)
    }
}

/// What an encryption or decryption did.
#[derive(Debug, Clone)]
pub(crate) struct DiskReport {
    pub disk: PathBuf,
    pub payload: PathBuf,
    pub metadata: Option<PathBuf>,
    pub bytes: u64,
    pub elapsed: Duration,
    pub provider: String,
    pub key_id: String,
    pub sector_size: SectorSize,
}

impl DiskReport {
    fn into_report(self, operation: &'static str) -> Report {
        Report {
            operation,
            disk: Some(self.disk),
            payload: Some(self.payload),
            metadata: self.metadata,
            bytes: self.bytes,
            elapsed: self.elapsed,
            provider: Some(self.provider),
            key_id: Some(self.key_id),
            sector_size: Some(self.sector_size.bytes()),
            ..Report::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Encrypt,
    Decrypt,
    RekeyShallow,
    RekeyDeep,
    Resume,
}

/// A job on one disk (a raw image with its sidecar, or a flat VMDK), configured then run.
/// Every job locks the disk for its whole run and checks everything before its first write.
#[derive(Debug, Clone)]
#[must_use = "a job does nothing until it is run"]
pub struct DiskJob {
    verb: Verb,
    path: PathBuf,
    opts: JobOptions,
}

impl DiskJob {
    fn new(verb: Verb, path: impl Into<PathBuf>) -> Self {
        DiskJob {
            verb,
            path: path.into(),
            opts: JobOptions::default(),
        }
    }

    /// Encrypt a plain disk: a new DEK, wrapped under a new KEK from [`DiskJob::provider`].
    pub fn encrypt(path: impl Into<PathBuf>) -> Self {
        Self::new(Verb::Encrypt, path)
    }

    /// Decrypt a disk with the KEK its keySafe names.
    pub fn decrypt(path: impl Into<PathBuf>) -> Self {
        Self::new(Verb::Decrypt, path)
    }

    /// Shallow rekey: the DEK re-wrapped under a new KEK from [`DiskJob::provider`]; no data
    /// sector is touched. An interrupted shallow rekey is finished with its own target KEK.
    pub fn rekey_shallow(path: impl Into<PathBuf>) -> Self {
        Self::new(Verb::RekeyShallow, path)
    }

    /// Deep rekey: a new DEK under the disk's KEK, and every sector re-encrypted in place,
    /// crash-safely.
    pub fn rekey_deep(path: impl Into<PathBuf>) -> Self {
        Self::new(Verb::RekeyDeep, path)
    }

    /// Finish an interrupted job (harmless when there is none): the disk's in-place job, or,
    /// for a path ending in `.vmx`, the VM job ([`crate::VmJob::resume`]).
    pub fn resume(path: impl Into<PathBuf>) -> Self {
        Self::new(Verb::Resume, path)
    }

    common_setters!();

    /// Write the result into a new disk at `out` (encrypt, decrypt).
    pub fn output(mut self, out: impl Into<PathBuf>) -> Self {
        self.opts.output = Some(out.into());
        self
    }

    /// Work in place (the default), crash-safely.
    pub fn in_place(mut self) -> Self {
        self.opts.output = None;
        self
    }

    /// Encrypt the file as raw even though its first bytes name another container format
    /// (qcow2, VHD, ...): for a raw image that merely starts with such bytes.
    pub fn assume_raw(mut self, yes: bool) -> Self {
        self.opts.assume_raw = yes;
        self
    }

    /// The disk this job works on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks everything the job checks before it asks a provider for a key, without touching
    /// anything: a caller that creates a provider on first use calls this first, so that a
    /// request that would fail leaves no trace. The disk's lock is taken and released again.
    /// Only an encryption has such checks; other jobs check under their own run.
    ///
    /// # Errors
    /// As [`DiskJob::run`] for the disk and the output.
    pub fn check(&self) -> Result<()> {
        match self.verb {
            Verb::Encrypt => super::encrypt::check_encrypt(&self.path, &self.opts),
            _ => Ok(()),
        }
    }

    /// Runs the job.
    ///
    /// # Errors
    /// [`Error::InUse`] when another job or program holds the disk; typed input errors
    /// ([`Error::NotEncrypted`], [`Error::AlreadyEncrypted`], [`Error::JobUnderWay`],
    /// [`Error::BelongsToVm`]) and [`Error::InvalidInput`]; [`Error::UnwrapFailed`] or
    /// [`Error::Integrity`] for keys or metadata that do not match; provider and I/O errors;
    /// [`Error::Cancelled`]. The disk is unchanged on every error raised before the job's first
    /// write; an in-place job stopped after it is finished by [`DiskJob::resume`].
    pub fn run(
        &self,
        registry: &dyn ProviderRegistry,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<Report> {
        let ring = KeyRing::new(registry);
        let path = &self.path;
        let new_key_provider = || {
            let name = self
                .opts
                .provider
                .as_deref()
                .ok_or_else(|| Error::input("no key provider named for the new KEK"))?;
            registry.provider(name)
        };
        match self.verb {
            Verb::Encrypt => {
                let provider = new_key_provider()?;
                super::encrypt::encrypt_new_kek(
                    path,
                    provider.as_ref(),
                    &ring,
                    &self.opts,
                    progress,
                    cancel,
                )
                .map(|r| r.into_report("encrypted"))
            }
            Verb::Decrypt => {
                super::decrypt::decrypt(path, &ring, &self.opts, progress, cancel, false)
                    .map(|r| r.into_report("decrypted"))
            }
            Verb::RekeyShallow => {
                let provider = new_key_provider()?;
                let r = super::rekey_shallow::rekey_shallow(path, provider.as_ref(), &ring)?;
                Ok(Report {
                    operation: "rekey",
                    depth: Some("shallow"),
                    disk: Some(path.clone()),
                    elapsed: r.elapsed,
                    provider: Some(r.provider),
                    key_id: Some(r.key_id),
                    generation: Some(r.generation),
                    resumed: Some(r.resumed),
                    ..Report::default()
                })
            }
            Verb::RekeyDeep => {
                let (stats, generation) = super::rekey_deep::rekey_deep(
                    path,
                    &ring,
                    self.opts.worker_threads(),
                    &self.opts.tuning,
                    progress,
                    cancel,
                    false,
                )?;
                Ok(Report {
                    operation: "rekey",
                    depth: Some("deep"),
                    disk: Some(path.clone()),
                    bytes: stats.bytes,
                    elapsed: stats.elapsed,
                    generation: Some(generation),
                    ..Report::default()
                })
            }
            Verb::Resume if is_vmx(path) => {
                crate::VmJob::resume_with(path, self.opts.clone()).run(registry, progress, cancel)
            }
            Verb::Resume => {
                let started = std::time::Instant::now();
                let r = super::resume::resume_with(
                    path,
                    &ring,
                    self.opts.worker_threads(),
                    progress,
                    cancel,
                )?;
                Ok(Report {
                    operation: "resume",
                    disk: Some(path.clone()),
                    was: r.was.map(|s| s.as_str()),
                    from: Some(r.from),
                    bytes: r.bytes,
                    elapsed: started.elapsed(),
                    ..Report::default()
                })
            }
        }
    }
}

fn is_vmx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vmx"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::DiskJob;
    use crate::NoProgress;
    use crate::disk::tests::OPENS;
    use crate::provider::native::NativeProvider;
    use crate::provider::{KeyId, KeyProvider, KeyPurpose, Registry};
    use crate::secret::Kek;

    /// A provider that counts what it is asked.
    struct Counting {
        inner: NativeProvider,
        creates: AtomicUsize,
        fetches: AtomicUsize,
    }

    impl KeyProvider for Counting {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn create_kek(&self, purpose: &KeyPurpose) -> crate::Result<(KeyId, Kek)> {
            self.creates.fetch_add(1, Ordering::Relaxed);
            self.inner.create_kek(purpose)
        }
        fn fetch_kek(&self, id: &KeyId) -> crate::Result<Kek> {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            self.inner.fetch_kek(id)
        }
    }

    #[test]
    fn each_job_opens_its_disk_once_and_asks_for_each_kek_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let counting = Arc::new(Counting {
            inner: NativeProvider::create("native", &dir.path().join("ks")).expect("keystore"),
            creates: AtomicUsize::new(0),
            fetches: AtomicUsize::new(0),
        });
        let registry = Registry::of(counting.clone() as Arc<dyn KeyProvider>);
        let img = dir.path().join("d.img");
        std::fs::write(&img, vec![5u8; 1 << 20]).expect("write");
        let never = AtomicBool::new(false);
        // (job, creates, fetches): a new KEK is fetched back once to prove it returns.
        let jobs = [
            (DiskJob::encrypt(&img).provider("native"), 1, 1),
            (DiskJob::rekey_deep(&img), 0, 1),
            (DiskJob::rekey_shallow(&img).provider("native"), 1, 2),
            (DiskJob::resume(&img), 0, 0),
            (DiskJob::decrypt(&img), 0, 1),
        ];
        for (job, creates, fetches) in jobs {
            let before = (
                OPENS.with(|n| n.get()),
                counting.creates.load(Ordering::Relaxed),
                counting.fetches.load(Ordering::Relaxed),
            );
            job.run(&registry, &NoProgress, &never).expect("job");
            let after = (
                OPENS.with(|n| n.get()),
                counting.creates.load(Ordering::Relaxed),
                counting.fetches.load(Ordering::Relaxed),
            );
            assert_eq!(
                (after.0 - before.0, after.1 - before.1, after.2 - before.2),
                (1, creates, fetches),
                "{job:?}: (disk opens, KEK creates, KEK fetches)"
            );
        }
        assert_eq!(std::fs::read(&img).expect("read"), vec![5u8; 1 << 20]);
    }
}
