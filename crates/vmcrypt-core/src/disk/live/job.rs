//! The online job of a served disk (issue 18): a deep rekey carried out by the process that
//! serves the disk, window by window, while guests go on (routing and the window gate:
//! [`super::route`]; the journal: [`crate::engine::online`]).
//!
//! Order of durable steps, as the offline in-place jobs (disk::inplace):
//! 1. a new DEK is made and wrapped under the disk's KEK beside the old one, then unwrapped
//!    again with the KEK fetched afresh from its provider: the round trip proves the provider
//!    gives the key back before anything depends on it. Nothing is written yet, so a
//!    provider that fails here fails the start and leaves the disk as it was;
//! 2. the journal (`PAYLOAD.vmcrypt-journal`) is created with its header (fsync). A crash
//!    here leaves a stale journal, which the next open clears;
//! 3. the metadata records the job: state `rekeying-online`, its id, both DEKs wrapped;
//! 4. the windows, each journaled;
//! 5. the metadata records the result: the new DEK alone, at the next generation;
//! 6. the journal is removed.
//!
//! [`super::EncryptedDisk::open`] of a disk in state `rekeying-online` takes the job up from
//! its journal before serving it; `vmcrypt resume` finishes it offline.

use std::path::PathBuf;

use super::EncryptedDisk;
use crate::disk::inplace::{job_id_of, journal_path};
use crate::disk::rekey_deep::{rekey_keys, rekey_result};
use crate::disk::{Disk, DiskState, EncryptionMeta};
use crate::engine::journal::JournalKeys;
use crate::engine::online::OnlineJournal;
use crate::engine::{FileStorage, Storage, Transform};
use crate::keysafe::{Binding, DiskBinding, KeyRing};
use crate::provider::ProviderRegistry;
use crate::secret::{Dek, Schedule, random_fill};
use crate::{Error, Result};

/// The default window of an online job: small enough that a guest request touching it waits
/// well under 100 ms (read, recipher, journal, write and three fsyncs of 1 MiB), large enough
/// that the job's fsyncs do not dominate.
pub const ONLINE_WINDOW: u64 = 1 << 20;

/// Suffix of the control socket of the process that serves a disk, beside its payload (as
/// its journal is): `PAYLOAD.vmcrypt-control`.
pub const CONTROL_EXT: &str = "vmcrypt-control";

/// The control socket of the server of the disk whose payload file is `payload`.
pub fn control_path(payload: &std::path::Path) -> PathBuf {
    let mut s = payload.as_os_str().to_os_string();
    s.push(".");
    s.push(CONTROL_EXT);
    PathBuf::from(s)
}

/// What an online job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobKind {
    /// A deep rekey: every unit to a new DEK.
    DeepRekey,
}

impl JobKind {
    /// The job's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::DeepRekey => "deep rekey",
        }
    }
}

/// How far an online job has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// What the job does.
    pub kind: JobKind,
    /// Guest bytes done (under the new key).
    pub done: u64,
    /// The disk's size.
    pub len: u64,
    /// Guest requests let through since the job began (or was taken up): how busy guests
    /// are, for the job's rate control.
    pub requests: u64,
}

/// The disk's metadata and its online job: what only one caller at a time changes.
pub(super) struct Control {
    pub(super) disk: Disk,
    pub(super) job: Option<OnlineJob>,
}

/// An online job under way.
pub(super) struct OnlineJob {
    journal: OnlineJournal,
    store: FileStorage,
    jpath: PathBuf,
    running: EncryptionMeta,
    /// The window being rewritten (ciphertext only).
    buf: Vec<u8>,
}

/// The journal keys of a deep rekey from `old` to `new` (as the offline journal derives
/// them: both DEKs and the job id).
fn journal_keys(old: &Dek, new: &Dek, job_id: [u8; 16]) -> Result<JournalKeys> {
    Ok(Transform::Rekey { old, new }.keys(job_id)?.1)
}

fn unit_of(meta: &EncryptionMeta) -> u32 {
    meta.identity.sector_size.bytes() as u32
}

/// Takes up the online job recorded in `disk`'s metadata (state `rekeying-online`): both
/// DEKs, the journal, where the job stood. Returns the old DEK, the new one and the job; the
/// caller routes by the old key and then resumes the job's boundary.
pub(super) fn recorded_job(disk: &Disk, ring: &KeyRing<'_>) -> Result<(Dek, Dek, OnlineJob)> {
    let meta = disk.require_encrypted()?.clone();
    disk.check_payload()?;
    let job_id = job_id_of(&meta, disk.path())?;
    let (old, new) = rekey_keys(&meta, ring)?;
    let jpath = journal_path(disk.payload_path());
    let store = FileStorage::open_no_follow(&jpath).map_err(|_| Error::Integrity {
        path: jpath.clone(),
        reason: "an online rekey is recorded but its journal cannot be opened".into(),
    })?;
    let journal = OnlineJournal::open(
        journal_keys(&old, &new, job_id)?,
        unit_of(&meta),
        meta.identity.payload_size,
        &store,
    )?;
    let buf = vec![0u8; journal.window() as usize];
    Ok((
        old,
        new,
        OnlineJob {
            journal,
            store,
            jpath,
            running: meta,
            buf,
        },
    ))
}

impl EncryptedDisk {
    /// Starts an online deep rekey of the disk (steps 1-3 of the module docs); the caller
    /// then calls [`EncryptedDisk::job_step`] until it returns false. Guests go on; from now
    /// on the disk has two keys and a boundary between them.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a job is under way already, or for a disk of a VM (rekey
    /// the VM); provider errors (the KEK cannot be fetched, or does not give the new DEK
    /// back): the disk is then as it was; I/O errors.
    pub fn start_deep_rekey(&self, registry: &dyn ProviderRegistry) -> Result<()> {
        self.start_deep_rekey_in(registry, ONLINE_WINDOW)
    }

    pub(super) fn start_deep_rekey_in(
        &self,
        registry: &dyn ProviderRegistry,
        window: u64,
    ) -> Result<()> {
        let mut control = self.control();
        if control.job.is_some() {
            return Err(Error::input(format!(
                "{}: an online job is under way already",
                self.path.display()
            )));
        }
        let disk = &mut control.disk;
        disk.check_meta_room()?;
        let meta = disk.require_settled()?.clone();
        if meta.rekey_generation.is_some() {
            return Err(Error::input(format!(
                "{} has a shallow rekey under way: finish it first",
                self.path.display()
            )));
        }
        if meta.vm_uuid.is_some() {
            return Err(Error::BelongsToVm {
                path: self.path.clone(),
                advice: "rekey the VM (`vmcrypt vm rekey VMX --deep`) while it is powered off"
                    .into(),
            });
        }
        // 1. The new DEK, wrapped beside the old one, and back through the provider.
        let ring = KeyRing::new(registry);
        let old = disk.open_key(&ring)?;
        let new = Dek::generate_xts()?;
        let target = meta.generation + 1;
        let ks = meta.key_safe();
        let pair = ks.binding.wrap(&old.kek.as_ref(), &new, target)?;
        let mut job_id = [0u8; 16];
        random_fill(&mut job_id)?;
        let running = EncryptionMeta {
            key_safe: ks.with_newest(pair),
            rekey_generation: Some(target),
            state: DiskState::RekeyingOnline,
            job: Some(job_id.iter().map(|b| format!("{b:02x}")).collect()),
            ..meta.clone()
        };
        let (_, back) = rekey_keys(&running, &KeyRing::new(registry))?;
        if !DiskBinding::same(&back, &new) {
            return Err(Error::UnwrapFailed);
        }
        let journal = OnlineJournal::new(
            journal_keys(&old.secret, &new, job_id)?,
            unit_of(&running),
            running.identity.payload_size,
            window,
        )?;
        let schedule = new.xts()?;
        // 2. The journal.
        let jpath = journal_path(disk.payload_path());
        let store = FileStorage::create(&jpath)?;
        if let Err(e) = store
            .set_len(journal.journal_len())
            .and_then(|()| journal.begin(&store))
        {
            let _ = crate::fsutil::remove_durable(&jpath);
            return Err(e);
        }
        crate::failpoint::hit("online-journal-created");
        // 3. The job, recorded.
        if let Err(e) = disk.write_meta(Some(&running)) {
            let _ = crate::fsutil::remove_durable(&jpath);
            return Err(e);
        }
        crate::failpoint::hit("online-job-recorded");
        self.begin_rekey(schedule);
        tracing::info!(disk = %self.path.display(), generation = target, "online deep rekey started");
        control.job = Some(OnlineJob {
            buf: vec![0u8; journal.window() as usize],
            journal,
            store,
            jpath,
            running,
        });
        Ok(())
    }

    /// Where the server of this disk listens for control requests ([`control_path`]).
    pub fn control_path(&self) -> PathBuf {
        control_path(&self.payload_path)
    }

    /// The online job under way, if any, and how far it has come.
    pub fn job(&self) -> Option<JobStatus> {
        let done = self.keys.boundary()?;
        Some(JobStatus {
            kind: JobKind::DeepRekey,
            done,
            len: self.len,
            requests: self.keys.requests(),
        })
    }

    /// Does one window of the online job, or, once the boundary is at the end, records the
    /// result (steps 5 and 6). Returns whether there is more to do: false once the job is
    /// finished, or when there is none.
    ///
    /// # Errors
    /// Journal, payload and metadata I/O errors. The job stays recorded: the next step (or
    /// the next start of the server, or `vmcrypt resume`) takes it up where it stopped.
    pub fn job_step(&self) -> Result<bool> {
        let mut control = self.control();
        let Control { disk, job } = &mut *control;
        let Some(j) = job.as_mut() else {
            return Ok(false);
        };
        if self.rekey_step(&j.journal, &j.store, &mut j.buf)? {
            return Ok(true);
        }
        // 5. The result: only the new DEK, which every unit is under now.
        let after = rekey_result(&j.running)?;
        disk.write_meta(Some(&after))?;
        crate::failpoint::hit("online-meta-final");
        self.finish_rekey()?;
        // 6. The journal.
        crate::fsutil::remove_durable(&j.jpath)?;
        tracing::info!(disk = %self.path.display(), generation = after.generation, "online deep rekey done");
        *job = None;
        Ok(false)
    }

    /// Takes up `job` (recorded, opened by [`recorded_job`]) before the disk is served.
    pub(super) fn resume_job(&mut self, new: Schedule, job: OnlineJob) -> Result<()> {
        self.resume_rekey(new, &job.journal, &job.store)?;
        self.control
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .job = Some(job);
        Ok(())
    }

    pub(super) fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
