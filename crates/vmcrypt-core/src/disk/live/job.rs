//! The online job of a served disk (issue 18): a deep rekey, an encryption or a decryption
//! carried out by the process that serves the disk, window by window, while guests go on
//! (routing and the window gate: [`super::route`]; the journal: [`crate::engine::online`]).
//!
//! Order of durable steps, as the offline in-place jobs (disk::inplace):
//! 1. the key the job goes to is made and proven. A deep rekey wraps a new DEK under the
//!    disk's KEK beside the old one; an encryption makes a KEK at the provider and a DEK
//!    wrapped under it; either is then unwrapped again with the KEK fetched afresh from its
//!    provider: the round trip proves the provider gives the key back before anything
//!    depends on it. A decryption unwraps the disk's DEK through its provider. Nothing is
//!    written yet, so a provider that fails here fails the start and leaves the disk as it
//!    was;
//! 2. the journal (`PAYLOAD.vmcrypt-journal`) is created with its header (fsync). A crash
//!    here leaves a stale journal, which the next open clears;
//! 3. the metadata records the job: state `rekeying-online` (both DEKs wrapped),
//!    `encrypting-online` (the new DEK; the payload stays where it is) or `decrypting-online`,
//!    and the job's id;
//! 4. the windows, each journaled;
//! 5. the metadata records the result: the new DEK alone at the next generation, the disk
//!    `encrypted`, or (a decryption) no metadata at all: the disk is served as plaintext
//!    from then on;
//! 6. the journal is removed.
//!
//! [`super::EncryptedDisk::open`] of a disk in one of the online states takes the job up from
//! its journal before serving it; `vmcrypt resume` finishes it offline.
//!
//! The data unit does not change in an online job: a guest's block size cannot change under
//! it. An online encryption uses the 512-byte unit the plaintext disk is served with.
//!
//! The payload stays where it is, except in the decryption of a payload an offline in-place
//! encryption moved up by its shift: there each window's plaintext is written at the
//! payload's new place, offset 0, over the old bytes of windows already done (a window is
//! at most the shift, so it never lands on bytes still needed), and the file is cut to the
//! payload before the metadata is removed (step 5). Cut and not yet recorded, the journal
//! still says every window is done, and the next open or `resume` records the result.

use std::path::{Path, PathBuf};

use super::EncryptedDisk;
use super::cipher::UnitCipher;
use super::files::{Files, Store};
use super::route::Side;
use crate::disk::inplace::{job_id_of, journal_path};
use crate::disk::rekey_deep::{rekey_keys, rekey_result};
use crate::disk::{Disk, DiskIdentity, DiskState, EncryptionMeta};
use crate::engine::Transform;
pub use crate::engine::online::JobKind;
use crate::engine::online::OnlineJournal;
use crate::keysafe::{Binding, DiskBinding, KeyRing, KeySafe};
use crate::provider::{KeyPurpose, ProviderRegistry};
use crate::secret::{Dek, random_fill, random_uuid};
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
    kind: JobKind,
    journal: OnlineJournal,
    store: Store,
    jpath: PathBuf,
    running: EncryptionMeta,
    /// The window being rewritten (ciphertext only).
    buf: Vec<u8>,
}

fn unit_of(meta: &EncryptionMeta) -> u32 {
    meta.identity.sector_size.bytes() as u32
}

/// The sides of a recorded job: before the boundary (`new`) and at or past it (`old`); and
/// the job.
pub(super) struct Sides {
    pub(super) old: Side,
    pub(super) new: Side,
    pub(super) job: OnlineJob,
}

/// Where the payload of a disk recorded in `meta` starts in its file once a job of `kind`
/// is done: at 0 after a decryption, else where it is.
fn new_base(kind: JobKind, meta: &EncryptionMeta) -> u64 {
    match kind {
        JobKind::Decrypt => 0,
        JobKind::DeepRekey | JobKind::Encrypt => meta.identity.payload_offset,
    }
}

/// The kind of job a disk's state records, if it records an online one.
fn kind_of(state: DiskState) -> Option<JobKind> {
    match state {
        DiskState::RekeyingOnline => Some(JobKind::DeepRekey),
        DiskState::EncryptingOnline => Some(JobKind::Encrypt),
        DiskState::DecryptingOnline => Some(JobKind::Decrypt),
        _ => None,
    }
}

/// Takes up the online job recorded in `disk`'s metadata (an online state): its keys, the
/// journal, where the job stood. The caller routes by the old side and then resumes the
/// job's boundary.
pub(super) fn recorded_job(disk: &Disk, ring: &KeyRing<'_>, files: &dyn Files) -> Result<Sides> {
    let meta = disk.require_encrypted()?.clone();
    let kind = kind_of(meta.state)
        .ok_or_else(|| Error::job_under_way(disk.path(), meta.state.as_str()))?;
    disk.check_payload()?;
    let job_id = job_id_of(&meta, disk.path())?;
    let (old, new, keys) = match kind {
        JobKind::DeepRekey => {
            let (old, new) = rekey_keys(&meta, ring)?;
            let keys = Transform::Rekey {
                old: &old,
                new: &new,
            }
            .keys(job_id)?
            .1;
            (
                UnitCipher::Xts(old.xts()?),
                UnitCipher::Xts(new.xts()?),
                keys,
            )
        }
        JobKind::Encrypt | JobKind::Decrypt => {
            let dek = disk.open_key(ring)?.secret;
            let xts = UnitCipher::Xts(dek.xts()?);
            if kind == JobKind::Encrypt {
                let keys = Transform::Encrypt(&dek).keys(job_id)?.1;
                (UnitCipher::Plain, xts, keys)
            } else {
                let keys = Transform::Decrypt(&dek).keys(job_id)?.1;
                (xts, UnitCipher::Plain, keys)
            }
        }
    };
    let jpath = journal_path(disk.payload_path());
    let store = files.open_journal(&jpath).map_err(|_| Error::Integrity {
        path: jpath.clone(),
        reason: format!(
            "an online {} is recorded but its journal cannot be opened",
            kind.as_str()
        ),
    })?;
    let journal = OnlineJournal::open(
        kind,
        keys,
        unit_of(&meta),
        meta.identity.payload_size,
        &*store,
    )?;
    let (from, to) = (meta.identity.payload_offset, new_base(kind, &meta));
    // A window larger than the move would land on bytes still needed. The header is
    // authenticated, so no job of vmcrypt's wrote this one.
    if from != to && journal.window() > from - to {
        return Err(Error::Integrity {
            path: jpath,
            reason: format!(
                "its windows of {} bytes are larger than the {} bytes the payload moves by",
                journal.window(),
                from - to
            ),
        });
    }
    let buf = vec![0u8; journal.window() as usize];
    Ok(Sides {
        old: Side {
            cipher: old,
            base: from,
        },
        new: Side {
            cipher: new,
            base: to,
        },
        job: OnlineJob {
            kind,
            journal,
            store,
            jpath,
            running: meta,
            buf,
        },
    })
}

/// What a job start does with a disk of a VM.
#[derive(Clone, Copy)]
enum OfVm<'a> {
    /// Refuses it, with this advice (what to do instead).
    Refuse(&'a str),
    /// Allows it when the VM's own job, with this VMX, asks (`check_staged_by`).
    StagedBy(&'a Path),
}

/// A fresh job id, and its hex form for the metadata.
fn new_job_id() -> Result<([u8; 16], String)> {
    let mut id = [0u8; 16];
    random_fill(&mut id)?;
    let hex = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok((id, hex))
}

/// What a job about to start goes to: recorded as `running`, journaled under `transform`'s
/// keys, units below the boundary under `new`.
struct Start<'a> {
    kind: JobKind,
    running: EncryptionMeta,
    transform: Transform<'a>,
    job_id: [u8; 16],
    new: Side,
}

impl EncryptedDisk {
    /// Starts an online deep rekey of the disk (steps 1-3 of the module docs); the caller
    /// then calls [`EncryptedDisk::job_step`] until it returns false. Guests go on; from now
    /// on the disk has two keys and a boundary between them.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a job is under way already; [`Error::BelongsToVm`] for a
    /// disk of a VM (rekey the VM); provider errors (the KEK cannot be fetched, or does not
    /// give the new DEK back): the disk is then as it was; I/O errors.
    pub fn start_deep_rekey(&self, registry: &dyn ProviderRegistry) -> Result<()> {
        self.start_deep_rekey_in(registry, None, ONLINE_WINDOW)
    }

    /// [`EncryptedDisk::start_deep_rekey`] of a disk of the VM `vmx`, as that VM's deep
    /// rekey asks (crate::vm::ServedDisks): the VMX must list this disk and be staged for
    /// the disk's next key generation (the VM job stages it first and commits it once every
    /// disk is there), so that no disk of a VM ever moves ahead of the VM on its own.
    ///
    /// # Errors
    /// [`Error::Integrity`] for a VMX that does not list the disk, is another VM's or is not
    /// staged for the disk's next generation; else as [`EncryptedDisk::start_deep_rekey`].
    pub fn start_deep_rekey_of_vm(
        &self,
        registry: &dyn ProviderRegistry,
        vmx: &Path,
    ) -> Result<()> {
        self.start_deep_rekey_in(registry, Some(vmx), ONLINE_WINDOW)
    }

    pub(super) fn start_deep_rekey_in(
        &self,
        registry: &dyn ProviderRegistry,
        vmx: Option<&Path>,
        window: u64,
    ) -> Result<()> {
        let of_vm = match vmx {
            Some(vmx) => OfVm::StagedBy(vmx),
            None => OfVm::Refuse(
                "rekey the VM (`vmcrypt vm rekey VMX --deep`: the servers of its disks rekey them online)",
            ),
        };
        let (mut control, meta) = self.settled_for_job(of_vm)?;
        let disk = &mut control.disk;
        // 1. The new DEK, wrapped beside the old one, and back through the provider.
        let ring = KeyRing::new(registry);
        let old = disk.open_key(&ring)?;
        let new = Dek::generate_xts()?;
        let target = meta.generation + 1;
        let ks = meta.key_safe();
        let pair = ks.binding.wrap(&old.kek.as_ref(), &new, target)?;
        let (job_id, hex) = new_job_id()?;
        let running = EncryptionMeta {
            key_safe: ks.with_newest(pair),
            rekey_generation: Some(target),
            state: DiskState::RekeyingOnline,
            job: Some(hex),
            ..meta.clone()
        };
        let (_, back) = rekey_keys(&running, &KeyRing::new(registry))?;
        if !DiskBinding::same(&back, &new) {
            return Err(Error::UnwrapFailed);
        }
        let start = Start {
            kind: JobKind::DeepRekey,
            running,
            transform: Transform::Rekey {
                old: &old.secret,
                new: &new,
            },
            job_id,
            new: Side {
                cipher: UnitCipher::Xts(new.xts()?),
                base: meta.identity.payload_offset,
            },
        };
        self.begin_job(&mut control, start, window)
    }

    /// Starts an online encryption of a plaintext disk served as such
    /// ([`EncryptedDisk::open_plaintext`]): a new KEK from `provider` (by its name in
    /// `registry`), a new DEK under it, 512-byte data units, the payload where it is (steps
    /// 1-3 of the module docs). The caller then calls [`EncryptedDisk::job_step`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a job is under way already, for an unknown provider, or
    /// for a disk that is encrypted already; [`Error::Unsupported`] for a file whose magic
    /// names another container format; [`Error::BelongsToVm`] for a disk an encrypted VM
    /// lists (encrypt the VM); provider errors (the disk is then as it was); I/O errors.
    pub fn start_encrypt(&self, registry: &dyn ProviderRegistry, provider: &str) -> Result<()> {
        self.start_encrypt_in(registry, provider, ONLINE_WINDOW)
    }

    pub(super) fn start_encrypt_in(
        &self,
        registry: &dyn ProviderRegistry,
        provider: &str,
        window: u64,
    ) -> Result<()> {
        let mut control = self.control();
        self.refuse_second_job(&control)?;
        let disk = &mut control.disk;
        if let Some(m) = disk.encryption() {
            return Err(Error::input(format!(
                "{} is encrypted already ({})",
                self.path.display(),
                m.state.as_str()
            )));
        }
        if let Some(c) = disk.container() {
            return Err(Error::Unsupported {
                what: c.hint(&self.path),
            });
        }
        disk.check_meta_room()?;
        crate::disk::encrypt::refuse_vm_member_in_place(&self.path)?;
        // 1. A new KEK (fetched back by create_verified), a new DEK wrapped under it, and the
        // keySafe opened again through the provider.
        let p = registry.provider(provider)?;
        let ring = KeyRing::new(registry);
        let disk_uuid = random_uuid()?;
        let kek = ring.create_verified(p.as_ref(), &KeyPurpose::Disk(disk_uuid.clone()))?;
        let identity = DiskIdentity {
            uuid: disk_uuid,
            payload_size: self.len,
            sector_size: self.unit,
            payload_offset: self.base(),
        };
        let dek = Dek::generate_xts()?;
        let binding = DiskBinding {
            vm_uuid: None,
            disk: &identity,
        };
        let key_safe = KeySafe::seal(&binding, &kek.as_ref(), &dek, 1)?;
        let (job_id, hex) = new_job_id()?;
        let running = EncryptionMeta {
            identity: identity.clone(),
            generation: 1,
            rekey_generation: None,
            vm_uuid: None,
            key_safe,
            state: DiskState::EncryptingOnline,
            job: Some(hex),
            rekey_payload_offset: None,
        };
        let back = running.key_safe().open(&KeyRing::new(registry))?;
        if !DiskBinding::same(&back.secret, &dek) {
            return Err(Error::UnwrapFailed);
        }
        let start = Start {
            kind: JobKind::Encrypt,
            running,
            transform: Transform::Encrypt(&dek),
            job_id,
            new: Side {
                cipher: UnitCipher::Xts(dek.xts()?),
                base: self.base(),
            },
        };
        self.begin_job(&mut control, start, window)
    }

    /// Starts an online decryption (steps 1-3 of the module docs): the DEK is unwrapped
    /// through its provider, and when the job is done the disk's metadata is removed and it
    /// is served as plaintext. The caller then calls [`EncryptedDisk::job_step`].
    ///
    /// A payload an offline in-place encryption moved up is moved back to the start of its
    /// file as it is decrypted (module docs), in windows of at most the shift.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when a job is under way already, or for a moved payload with
    /// bytes after it in its file (no in-place job leaves that); [`Error::BelongsToVm`] for
    /// a disk of a VM (decrypt the VM); provider errors (the disk is then as it was); I/O
    /// errors.
    pub fn start_decrypt(&self, registry: &dyn ProviderRegistry) -> Result<()> {
        self.start_decrypt_in(registry, ONLINE_WINDOW)
    }

    pub(super) fn start_decrypt_in(
        &self,
        registry: &dyn ProviderRegistry,
        window: u64,
    ) -> Result<()> {
        let (mut control, meta) = self.settled_for_job(OfVm::Refuse(
            "decrypt the VM (`vmcrypt vm decrypt VMX`) while it is powered off",
        ))?;
        let disk = &mut control.disk;
        let shift = meta.identity.payload_offset;
        let window = if shift == 0 {
            window
        } else {
            let size = self.payload.size()?;
            let unit = u64::from(unit_of(&meta));
            if size != shift + self.len || !shift.is_multiple_of(unit) {
                return Err(Error::input(format!(
                    "{}: its payload of {} bytes starts {shift} bytes into {}, which holds {size} bytes: it cannot be moved back to the start while it is served; stop the server and run `vmcrypt decrypt --in-place` offline, or decrypt a copy with --output",
                    self.path.display(),
                    self.len,
                    self.payload_path.display()
                )));
            }
            // A window lands where the window before it was: never on bytes still needed.
            window.min(shift)
        };
        // 1. The DEK, through the provider.
        let dek = disk.open_key(&KeyRing::new(registry))?.secret;
        let (job_id, hex) = new_job_id()?;
        let running = EncryptionMeta {
            state: DiskState::DecryptingOnline,
            job: Some(hex),
            ..meta
        };
        let start = Start {
            kind: JobKind::Decrypt,
            running,
            transform: Transform::Decrypt(&dek),
            job_id,
            new: Side {
                cipher: UnitCipher::Plain,
                base: 0,
            },
        };
        self.begin_job(&mut control, start, window)
    }

    fn refuse_second_job(&self, control: &Control) -> Result<()> {
        match &control.job {
            Some(j) => Err(Error::input(format!(
                "{}: an online {} is under way already",
                self.path.display(),
                j.kind.as_str()
            ))),
            None => Ok(()),
        }
    }

    /// The metadata of an encrypted disk about to start a job, under the control lock: no
    /// job under way, room in the metadata file, no offline job, no shallow rekey under way;
    /// a disk of a VM as `of_vm` says.
    fn settled_for_job(
        &self,
        of_vm: OfVm<'_>,
    ) -> Result<(std::sync::MutexGuard<'_, Control>, EncryptionMeta)> {
        let control = self.control();
        self.refuse_second_job(&control)?;
        control.disk.check_meta_room()?;
        let meta = control.disk.require_settled()?.clone();
        if meta.rekey_generation.is_some() {
            return Err(Error::input(format!(
                "{} has a shallow rekey under way: finish it first",
                self.path.display()
            )));
        }
        match (of_vm, meta.vm_uuid.as_deref()) {
            (OfVm::Refuse(advice), Some(_)) => {
                return Err(Error::BelongsToVm {
                    path: self.path.clone(),
                    advice: advice.to_string(),
                });
            }
            (OfVm::StagedBy(vmx), Some(uuid)) => {
                self.check_staged_by(vmx, uuid, meta.generation + 1)?;
            }
            (OfVm::StagedBy(vmx), None) => {
                return Err(Error::input(format!(
                    "{} belongs to no VM, so {} cannot ask for its rekey",
                    self.path.display(),
                    vmx.display()
                )));
            }
            (OfVm::Refuse(_), None) => {}
        }
        Ok((control, meta))
    }

    /// Checks that the VMX `vmx` is the VM `uuid`'s, lists this disk, and is staged for
    /// generation `target` (read without its lock, which the VM job holds).
    fn check_staged_by(&self, vmx: &Path, uuid: &str, target: u64) -> Result<()> {
        let vm = crate::vm::Vm::open(vmx)?;
        let bad = |reason: String| Error::Integrity {
            path: vmx.to_path_buf(),
            reason,
        };
        let me = std::fs::canonicalize(&self.path).map_err(Error::io("resolve", &self.path))?;
        let listed = vm
            .disks()
            .iter()
            .any(|d| std::fs::canonicalize(&d.path).is_ok_and(|p| p == me));
        if !listed {
            return Err(bad(format!("it does not list {}", self.path.display())));
        }
        match vm.meta() {
            Some(m) if m.vm_uuid != uuid => Err(bad(format!(
                "it is VM {}, and {} belongs to VM {uuid}",
                m.vm_uuid,
                self.path.display()
            ))),
            Some(m) if m.rekey_generation == Some(target) => Ok(()),
            _ => Err(bad(format!(
                "it is not staged for key generation {target}: only the VM's own deep rekey (`vmcrypt vm rekey VMX --deep`) rekeys its disks"
            ))),
        }
    }

    /// Steps 2 and 3 of the module docs, and the job handed to the router.
    fn begin_job(&self, control: &mut Control, start: Start<'_>, window: u64) -> Result<()> {
        let Start {
            kind,
            running,
            transform,
            job_id,
            new,
        } = start;
        let journal = OnlineJournal::new(
            kind,
            transform.keys(job_id)?.1,
            unit_of(&running),
            running.identity.payload_size,
            window,
        )?;
        // 2. The journal.
        let disk = &mut control.disk;
        let jpath = journal_path(disk.payload_path());
        let store = self.files.create_journal(&jpath)?;
        if let Err(e) = store
            .set_len(journal.journal_len())
            .and_then(|()| journal.begin(&*store))
        {
            let _ = self.files.remove_journal(&jpath);
            return Err(e);
        }
        crate::failpoint::hit("online-journal-created");
        // 3. The job, recorded.
        if let Err(e) = disk.write_meta(Some(&running)) {
            let _ = self.files.remove_journal(&jpath);
            return Err(e);
        }
        crate::failpoint::hit("online-job-recorded");
        self.begin_windows(kind, new);
        tracing::info!(disk = %self.path.display(), job = kind.as_str(), generation = running.generation, "online job started");
        control.job = Some(OnlineJob {
            kind,
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
        let (kind, done) = self.keys.job()?;
        Some(JobStatus {
            kind,
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
        if self.window_step(&j.journal, &*j.store, &mut j.buf)? {
            return Ok(true);
        }
        // 5. The result: every unit is under the new side now. A decrypted payload that moved
        // back to the start of its file is cut to its end first: its old place past it held
        // windows already done.
        if j.kind == JobKind::Decrypt && j.running.identity.payload_offset != 0 {
            self.payload.set_len(self.len)?;
            self.payload.sync()?;
            crate::failpoint::hit("online-payload-cut");
        }
        let after = match j.kind {
            JobKind::DeepRekey => Some(rekey_result(&j.running)?),
            JobKind::Encrypt => Some(EncryptionMeta {
                state: DiskState::Encrypted,
                job: None,
                ..j.running.clone()
            }),
            JobKind::Decrypt => None,
        };
        disk.write_meta(after.as_ref())?;
        crate::failpoint::hit("online-meta-final");
        self.finish_windows()?;
        // 6. The journal.
        self.files.remove_journal(&j.jpath)?;
        tracing::info!(disk = %self.path.display(), job = j.kind.as_str(), generation = after.as_ref().map(|m| m.generation), "online job done");
        *job = None;
        Ok(false)
    }

    /// Takes up a recorded job (opened by [`recorded_job`]) before the disk is served.
    pub(super) fn resume_job(&mut self, new: Side, job: OnlineJob) -> Result<()> {
        self.resume_windows(job.kind, new, &job.journal, &*job.store)?;
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
