//! What a job that never started leaves behind, cleared before the next job on the disk.

use super::inplace::journal_path;
use super::{Disk, DiskState};
use crate::engine::{FileStorage, Storage};
use crate::{Error, Result};

/// Cleans up after an in-place job that was never recorded (the caller holds the disk's lock,
/// so no live job owns what is removed here): a crash after its journal was created (and,
/// moving up, after the payload file was extended with zeros) but before the metadata
/// recorded it. The journal is removed, and the zeros are cut off again, but only if the file
/// is no longer than that job would have made it and everything past the payload is zeros: no
/// byte that could be data is ever cut. Does nothing when a job is recorded (`resume`
/// finishes that) or no journal exists.
///
/// Returns the disk as it is afterwards (read again only if its payload was cut).
///
/// # Errors
/// [`Error::InvalidInput`] for something other than a regular file where the journal goes;
/// I/O errors.
pub(crate) fn clear_unrecorded_job(disk: Disk) -> Result<Disk> {
    if disk
        .encryption()
        .is_some_and(|m| m.state != DiskState::Encrypted)
    {
        return Ok(disk);
    }
    let path = disk.path().to_path_buf();
    let jpath = journal_path(disk.payload_path());
    match std::fs::symlink_metadata(&jpath) {
        Err(_) => return Ok(disk),
        // vmcrypt only ever makes a regular file there: anything else is not its journal, and
        // not its to remove.
        Ok(m) if !m.is_file() => {
            return Err(Error::input(format!(
                "{} is not a regular file; it is not a vmcrypt journal, so it is left alone: move it away",
                jpath.display()
            )));
        }
        Ok(_) => {}
    }
    if let Some((len, src, dst)) = crate::engine::inplace::claimed_move(&jpath) {
        let (offset, recorded_len) = match disk.encryption() {
            Some(m) => (m.identity.payload_offset, Some(m.identity.payload_size)),
            None => (0, None),
        };
        let payload = FileStorage::open(disk.payload_path())?;
        let size = payload.size()?;
        // The room may be whole or, after a crash while it was made, partly written: any size
        // between the payload's end and the full room, with only zeros past the payload.
        let matches = dst > src
            && src == offset
            && recorded_len.is_none_or(|l| l == len)
            && src.checked_add(len).is_some_and(|end| end < size)
            && dst.checked_add(len).is_some_and(|full| size <= full);
        if matches && zeros_from(&payload, src + len, size)? {
            payload.set_len(src + len)?;
            payload.sync()?;
            tracing::info!(disk = %path.display(), "removed the room made for a job that never started");
            crate::fsutil::remove_durable(&jpath)?;
            return Disk::open(&path);
        }
    }
    crate::fsutil::remove_durable(&jpath)?;
    Ok(disk)
}

/// Whether bytes `[from, to)` of `s` are all zeros.
fn zeros_from(s: &dyn Storage, from: u64, to: u64) -> Result<bool> {
    let mut buf = vec![0u8; crate::engine::pieces::PIECE];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        s.read_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}
