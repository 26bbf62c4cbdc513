//! Anonymous pages of their own, locked in RAM (`mlock`), left out of core dumps
//! (`MADV_DONTDUMP`) and zeroed before they are given back: the home of every long-lived key
//! of vmcrypt ([`crate::LockedSlots`], [`crate::LockedBox`]). The memory system calls take raw
//! pointers.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;

use zeroize::Zeroize;

use crate::{Error, Result};

/// A private anonymous mapping of whole pages, locked and non-dumpable, zero when made.
pub(crate) struct LockedPages {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the pages are owned by this value alone (a private anonymous mapping nobody else
// has a pointer to); the owners hand out access through `&self`/`&mut self` like a `Box`.
unsafe impl Send for LockedPages {}
// SAFETY: as above; `&self` only gives a pointer, the owners decide what it may be used for.
unsafe impl Sync for LockedPages {}

impl LockedPages {
    /// The page size of this system; every mapping is aligned to it.
    pub(crate) fn page() -> usize {
        rustix::param::page_size()
    }

    /// Maps, locks and marks non-dumpable at least `bytes` (more than zero) bytes, rounded up
    /// to whole pages. `what` names the contents in errors ("the key cache").
    ///
    /// # Errors
    /// When the pages cannot be mapped or locked (RLIMIT_MEMLOCK too low: the message says how
    /// much is needed and how to raise it).
    pub(crate) fn new(bytes: usize, what: &str) -> Result<LockedPages> {
        let page = Self::page();
        let len = bytes.max(1).div_ceil(page) * page;
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
        .map_err(|e| Error(format!("mapping {len} bytes for {what}: {e}")))?;
        let ptr = NonNull::new(raw.cast::<u8>())
            .ok_or_else(|| Error("mmap returned a null mapping".into()))?;
        // From here on, dropping `this` unmaps.
        let this = LockedPages { ptr, len };
        // SAFETY: [ptr, ptr + len) is the mapping made above, owned by `this`.
        unsafe { rustix::mm::mlock(raw, len) }.map_err(|e| {
            Error(format!(
                "locking {len} bytes of {what} in RAM (mlock: {e}); raise the limit, e.g. \
                 `ulimit -l {}`, or LimitMEMLOCK= in the service's systemd unit",
                len.div_ceil(1024) + 64
            ))
        })?;
        // SAFETY: as above; MADV_DONTDUMP changes no content.
        unsafe { rustix::mm::madvise(raw, len, rustix::mm::Advice::LinuxDontDump) }
            .map_err(|e| Error(format!("excluding {what} from core dumps (madvise: {e})")))?;
        Ok(this)
    }

    /// The first byte, page-aligned.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Bytes mapped: a whole number of pages.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes, initialised (anonymous pages are zero),
        // alive as long as `self`, and only mutated through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for LockedPages {
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

/// The `VmFlags` of the mapping that starts at `addr`, from /proc/self/smaps (for tests).
#[cfg(test)]
pub(crate) fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let mut lines = smaps.lines();
    while let Some(l) = lines.next() {
        let Some((a, _)) = l.split_whitespace().next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        if usize::from_str_radix(a, 16).ok() == Some(addr) {
            return lines
                .by_ref()
                .find_map(|l| l.strip_prefix("VmFlags:"))
                .map(str::to_string)
                .expect("a VmFlags line");
        }
    }
    panic!("no mapping at {addr:#x} in /proc/self/smaps")
}

/// Whether the mapping at `addr` is locked ("lo") and left out of core dumps ("dd").
#[cfg(test)]
pub(crate) fn locked_and_undumpable(addr: usize) -> bool {
    let flags = vm_flags(addr);
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    has("lo") && has("dd")
}
