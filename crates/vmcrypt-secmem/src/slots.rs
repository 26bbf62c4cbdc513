//! Memory for cached keys that never reaches swap or a core dump: anonymous pages of their own,
//! locked in RAM (`mlock`), excluded from core dumps (`MADV_DONTDUMP`), zeroed before they are
//! given back. The three memory system calls take raw pointers.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;

use zeroize::Zeroize;

use crate::{Error, Result};

/// Fixed-size slots of `SLOT` bytes in locked, non-dumpable pages.
pub struct LockedSlots<const SLOT: usize> {
    ptr: NonNull<u8>,
    len: usize,
    slots: usize,
}

// SAFETY: the pages are owned by this value alone (a private anonymous mapping nobody else
// has a pointer to); access goes through `&self`/`&mut self` like a `Box<[u8]>`.
unsafe impl<const SLOT: usize> Send for LockedSlots<SLOT> {}
// SAFETY: as above; shared references only read.
unsafe impl<const SLOT: usize> Sync for LockedSlots<SLOT> {}

impl<const SLOT: usize> LockedSlots<SLOT> {
    /// Maps, locks and marks non-dumpable room for `slots` slots (rounded up to whole pages).
    ///
    /// # Errors
    /// When the pages cannot be locked (RLIMIT_MEMLOCK too low: the message says how much is
    /// needed and how to raise it), or for no slot at all.
    pub fn new(slots: usize) -> Result<Self> {
        let page = rustix::param::page_size();
        let want = slots
            .checked_mul(SLOT)
            .filter(|&n| n > 0)
            .ok_or_else(|| Error("a locked key store needs at least one slot".into()))?;
        let len = want.div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping at an address of the kernel's choosing
        // aliases nothing; the result is checked before use.
        let raw = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .map_err(|e| Error(format!("mapping {len} bytes for the key cache: {e}")))?;
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| Error("mmap returned a null mapping".into()))?;
        let slots_now = len / SLOT;
        let this = LockedSlots {
            ptr,
            len,
            slots: slots_now,
        };
        // SAFETY: [ptr, ptr + len) is the mapping made above, owned by `this`.
        unsafe { rustix::mm::mlock(raw, len) }.map_err(|e| {
            Error(format!(
                "locking {len} bytes of key cache in RAM (mlock: {e}); raise the limit, e.g. \
                 `ulimit -l {}` or LimitMEMLOCK= in the agent's systemd unit",
                len.div_ceil(1024) + 64
            ))
        })?;
        // SAFETY: as above; MADV_DONTDUMP changes no content.
        unsafe { rustix::mm::madvise(raw, len, rustix::mm::Advice::LinuxDontDump) }.map_err(
            |e| {
                Error(format!(
                    "excluding the key cache from core dumps (madvise: {e})"
                ))
            },
        )?;
        Ok(this)
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, initialised (anonymous pages are zero),
        // alive as long as `self`, and only mutated through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Slot `i` (panics past [`LockedSlots::slots`], a caller bug).
    pub fn get(&self, i: usize) -> &[u8; SLOT] {
        let s = &self.bytes()[i * SLOT..(i + 1) * SLOT];
        s.try_into().unwrap_or_else(|_| unreachable!("slot length"))
    }

    /// Slot `i`, writable.
    pub fn get_mut(&mut self, i: usize) -> &mut [u8; SLOT] {
        let s = &mut self.bytes_mut()[i * SLOT..(i + 1) * SLOT];
        s.try_into().unwrap_or_else(|_| unreachable!("slot length"))
    }

    /// Zeroes slot `i`.
    pub fn clear(&mut self, i: usize) {
        self.get_mut(i).zeroize();
    }
}

impl<const SLOT: usize> Drop for LockedSlots<SLOT> {
    fn drop(&mut self) {
        self.bytes_mut().zeroize();
        let raw = self.ptr.as_ptr().cast::<c_void>();
        // SAFETY: the mapping made in `new`, not used after this; unlocking and unmapping it
        // cannot affect other memory. Errors would only leak the (zeroed) pages.
        unsafe {
            let _ = rustix::mm::munlock(raw, self.len);
            let _ = rustix::mm::munmap(raw, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_locked_zeroed_and_separate() {
        let mut s = LockedSlots::<32>::new(3).expect("locked pages");
        assert!(s.slots() >= 3);
        assert_eq!(s.get(0), &[0u8; 32]);
        s.get_mut(1).copy_from_slice(&[7u8; 32]);
        assert_eq!(s.get(0), &[0u8; 32]);
        assert_eq!(s.get(1), &[7u8; 32]);
        s.clear(1);
        assert_eq!(s.get(1), &[0u8; 32]);
        // The pages are locked: /proc/self/status counts them in VmLck.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let locked_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmLck line");
        assert!(locked_kb >= 4, "VmLck {locked_kb} kB");
        // And this mapping itself is locked ("lo") and left out of core dumps ("dd").
        let start = s.ptr.as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut lines = smaps.lines();
        let mut flags = None;
        while let Some(l) = lines.next() {
            let Some(range) = l.split_whitespace().next() else {
                continue;
            };
            let Some((a, _)) = range.split_once('-') else {
                continue;
            };
            if usize::from_str_radix(a, 16).ok() == Some(start) {
                flags = lines
                    .by_ref()
                    .find_map(|l| l.strip_prefix("VmFlags:"))
                    .map(str::to_string);
                break;
            }
        }
        let flags = flags.expect("the mapping is in /proc/self/smaps");
        let has = |f: &str| flags.split_whitespace().any(|x| x == f);
        assert!(has("lo") && has("dd"), "VmFlags:{flags}");
    }
}
