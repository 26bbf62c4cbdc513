//! The copy path: run the sector cipher over a payload file into a new file (or, for tests
//! and benches, in place without crash safety).
//!
//! A job is built, then run: `ImageJob::builder(src, &dek)...build()?.run(&progress, &cancel)`.
//! `threads` workers each read a 256 KiB piece, encrypt or decrypt it and write it, so reads,
//! writes and the cipher overlap (see [`super::pieces`]); the destination is fsynced
//! at the end, and its writeback is started every 16 MiB along the way so that the final fsync
//! finds little to do ([`super::writeback`]). Progress is reported through the
//! small [`Progress`] trait (the library draws nothing) and a shared flag cancels it between
//! pieces.
//!
//! Why `pread`/`pwrite` and not memory maps: measured on 2 GiB (benches `io_modes`), a map was
//! faster only in place on tmpfs (by 18 %) and slower in the other cases (up to 29 % on
//! ext4); and with `pread`/`pwrite` an I/O error is an error value, not a SIGBUS that kills a
//! host agent (docs/performance.md).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use vmcrypt_xts::{Direction, SectorSize};

use super::pieces::{Ended, for_each_piece};
use super::writeback::with_writeback;
use crate::progress::{JobStats, Progress, worker_threads};
use crate::secret::{Dek, Schedule};
use crate::{Error, Result, holes};

/// A configured job; see the module docs.
pub struct ImageJob {
    src: PathBuf,
    src_offset: u64,
    dst: Option<PathBuf>,
    len: u64,
    xts: Schedule,
    unit: SectorSize,
    dir: Direction,
    threads: usize,
}

/// Builder for [`ImageJob`].
pub struct ImageJobBuilder<'a> {
    src: PathBuf,
    src_offset: u64,
    dek: &'a Dek,
    dst: Option<PathBuf>,
    len: Option<u64>,
    unit: SectorSize,
    dir: Direction,
    threads: usize,
}

impl ImageJob {
    /// Starts building a job over the payload file `src` with key `dek`.
    pub fn builder<'a>(src: &Path, dek: &'a Dek) -> ImageJobBuilder<'a> {
        ImageJobBuilder {
            src: src.to_path_buf(),
            src_offset: 0,
            dek,
            dst: None,
            len: None,
            unit: SectorSize::default(),
            dir: Direction::Encrypt,
            threads: worker_threads(None),
        }
    }

    /// Runs the job. With an output, the output file is created (it must not exist) and
    /// fsynced; in place, the source is rewritten piece by piece and fsynced.
    ///
    /// # Errors
    /// [`Error::Io`] (including a failed fsync, which is never retried); [`Error::Cancelled`]
    /// when `cancel` is set, checked between pieces: `done` bytes (not necessarily a prefix)
    /// are then processed and durable.
    pub fn run(&self, progress: &dyn Progress, cancel: &AtomicBool) -> Result<JobStats> {
        let started = Instant::now();
        let src = OpenOptions::new()
            .read(true)
            .write(self.dst.is_none())
            .open(&self.src)
            .map_err(Error::io("open", &self.src))?;
        let dst_file;
        let (dst, dst_path): (&File, &Path) = match &self.dst {
            Some(p) => {
                use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
                dst_file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(Error::io("create", p))?;
                // The output gets the source's mode; plaintext never more than 0600 (the
                // source's mode or 0600, whichever is stricter), whatever the umask.
                let src_mode = src
                    .metadata()
                    .map_err(Error::io("stat", &self.src))?
                    .permissions()
                    .mode()
                    & 0o777;
                let mode = match self.dir {
                    Direction::Decrypt => src_mode & 0o600,
                    _ => src_mode,
                };
                dst_file
                    .set_permissions(std::fs::Permissions::from_mode(mode))
                    .map_err(Error::io("chmod", p))?;
                // Its full size first: the source's holes are never written, so they stay
                // holes in the output, up to its very end.
                dst_file.set_len(self.len).map_err(Error::io("size", p))?;
                (&dst_file, p)
            }
            None => (&src, &self.src),
        };
        progress.start(self.len);
        let done = std::sync::atomic::AtomicU64::new(0);
        let result = (|| {
            // Worker threads each read, transform and write their own pieces: reads, writes
            // and encryption overlap (super::pieces).
            // A helper flushes the output as it grows, so the final fsync is short
            // (super::writeback). A new file: start its writeback and let its clean pages go; an fsync per step
            // would commit the file system's journal (new blocks) each time
            // (fsutil::start_writeback). In place, pages not yet read must stay cached, so the
            // step is an fdatasync.
            let flush = || {
                if self.dst.is_some() {
                    crate::fsutil::start_writeback(dst)
                } else {
                    dst.sync_data()
                }
                .map_err(Error::io("write back", dst_path))
            };
            let helps = !crate::fsutil::memory_backed(dst);
            let ended = with_writeback(helps, flush, |written| {
                for_each_piece(self.len, self.threads, cancel, |piece, off| {
                    // Holes of the source are skipped and stay holes (crate::holes).
                    let len = piece.len() as u64;
                    let data = holes::data_units(&src, self.src_offset, off, len, self.unit)
                        .map_err(Error::io("seek data in", &self.src))?;
                    for (from, to) in data {
                        let part = &mut piece[(from - off) as usize..(to - off) as usize];
                        src.read_exact_at(part, self.src_offset + from)
                            .map_err(Error::io("read", &self.src))?;
                        match self.dir {
                            Direction::Encrypt => {
                                self.xts.encrypt_sectors(part, from, self.unit)?;
                            }
                            _ => holes::decrypt(&self.xts, part, from, self.unit)?,
                        }
                        dst.write_all_at(part, from)
                            .map_err(Error::io("write", dst_path))?;
                        written.add(part.len() as u64);
                    }
                    done.fetch_add(len, Ordering::Relaxed);
                    progress.advance(len);
                    Ok(())
                })
            })?;
            dst.sync_all().map_err(Error::io("fsync", dst_path))?;
            if ended == Ended::Cancelled {
                return Err(Error::Cancelled {
                    done: done.load(Ordering::Relaxed),
                    restored: false,
                });
            }
            Ok(())
        })();
        progress.finish();
        result?;
        let elapsed = started.elapsed();
        tracing::info!(
            image = %self.src.display(),
            bytes = self.len,
            threads = self.threads,
            secs = elapsed.as_secs_f64(),
            "image job done"
        );
        Ok(JobStats {
            bytes: self.len,
            elapsed,
        })
    }
}

impl ImageJobBuilder<'_> {
    /// Writes the result into a new file instead of in place.
    pub fn output(mut self, dst: &Path) -> Self {
        self.dst = Some(dst.to_path_buf());
        self
    }

    /// Where the payload starts in the source file (default 0). Only with an output: in
    /// place the payload stays where it is.
    pub fn source_offset(mut self, offset: u64) -> Self {
        self.src_offset = offset;
        self
    }

    /// Bytes of payload to process (default: the whole source file).
    pub fn length(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }

    /// The XTS data unit size (default 4096).
    pub fn sector_size(mut self, s: SectorSize) -> Self {
        self.unit = s;
        self
    }

    /// Encrypt or decrypt (default encrypt).
    pub fn direction(mut self, d: Direction) -> Self {
        self.dir = d;
        self
    }

    /// Worker threads (default: all cores).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::Io`] if the source cannot be read; [`Error::InvalidInput`] if the length is
    /// not whole data units or exceeds the source.
    pub fn build(self) -> Result<ImageJob> {
        let file_len = std::fs::metadata(&self.src)
            .map_err(Error::io("read", &self.src))?
            .len();
        let len = self.len.unwrap_or(file_len.saturating_sub(self.src_offset));
        if self
            .src_offset
            .checked_add(len)
            .is_none_or(|end| end > file_len)
        {
            return Err(Error::Integrity {
                path: self.src.clone(),
                reason: format!(
                    "payload should be {len} bytes at offset {} but the file has {file_len}",
                    self.src_offset
                ),
            });
        }
        if self.src_offset != 0 && self.dst.is_none() {
            return Err(Error::input(
                "an in-place image job works on a payload at offset 0",
            ));
        }
        if !len.is_multiple_of(self.unit.bytes() as u64) {
            return Err(Error::input(format!(
                "{}: {len} bytes is not a whole number of {}-byte sectors",
                self.src.display(),
                self.unit.bytes()
            )));
        }
        if self.dst.as_deref() == Some(self.src.as_path()) {
            return Err(Error::input("input and output are the same file"));
        }
        if self.dst.is_none() {
            // In place: fail now, before any metadata says a job is running, if the file
            // cannot be written.
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.src)
                .map_err(Error::io("open for writing", &self.src))?;
        }
        Ok(ImageJob {
            xts: self.dek.xts()?,
            src: self.src,
            src_offset: self.src_offset,
            dst: self.dst,
            len,
            unit: self.unit,
            dir: self.dir,
            threads: self.threads,
        })
    }
}
