//! One pass of the cipher over a whole disk's payload, for encrypt and decrypt: in place
//! (crash-safe, an in-place job of [`super::inplace`]) or into a new disk (the copy path of
//! [`crate::engine::copy`], removed again on failure).

use std::sync::atomic::AtomicBool;

use vmcrypt_xts::{Direction, SectorSize};

use super::inplace::{NewJob, run_new};
use super::output::{Cleanup, OutputPaths, created_by_another};
use super::{Disk, EncryptionMeta};
use crate::Result;
use crate::engine::{ImageJob, Transform, Tuning};
use crate::progress::{JobStats, Progress};
use crate::secret::Dek;

/// A payload job and the metadata around it.
pub(crate) struct WholeDisk<'a> {
    pub dek: &'a Dek,
    pub dir: Direction,
    /// Where the payload starts in the source file.
    pub src_offset: u64,
    pub len: u64,
    pub unit: SectorSize,
    pub threads: usize,
    pub tuning: Tuning,
}

impl WholeDisk<'_> {
    /// Runs the job in place, crash-safely (metadata `running` while it runs, then `after`;
    /// resumable if it stops), or into a new disk (which gets `after`).
    pub fn run(
        &self,
        disk: Disk,
        out: Option<OutputPaths>,
        running: &EncryptionMeta,
        after: Option<&EncryptionMeta>,
        progress: &dyn Progress,
        cancel: &AtomicBool,
    ) -> Result<(JobStats, Disk)> {
        match out {
            None => {
                let mut disk = disk;
                let transform = match self.dir {
                    Direction::Encrypt => Transform::Encrypt(self.dek),
                    _ => Transform::Decrypt(self.dek),
                };
                let job = NewJob {
                    transform,
                    running: running.clone(),
                    after: after.cloned(),
                    threads: self.threads,
                    tuning: self.tuning,
                };
                let stats = run_new(&mut disk, job, progress, cancel)?;
                Ok((stats, disk))
            }
            Some(out) => {
                let mut guard = Cleanup(out.created.clone());
                let mut out_disk = out.disk;
                let ran = ImageJob::builder(disk.payload_path(), self.dek)
                    .length(self.len)
                    .sector_size(self.unit)
                    .direction(self.dir)
                    .threads(self.threads)
                    .source_offset(self.src_offset)
                    .output(out_disk.payload_path())
                    .build()
                    .and_then(|job| job.run(progress, cancel));
                let stats = match ran {
                    // Another process created the output first (after our check that it did
                    // not exist): it is that process's file, not ours to remove.
                    Err(e) if created_by_another(&e, out_disk.payload_path()) => {
                        guard.0.clear();
                        return Err(e);
                    }
                    other => other?,
                };
                out_disk.write_meta(after)?;
                guard.0.clear();
                Ok((stats, out_disk))
            }
        }
    }
}
