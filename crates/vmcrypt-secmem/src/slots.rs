//! Fixed-size slots for cached keys, in [`LockedPages`].

use zeroize::Zeroize;

use crate::pages::LockedPages;
use crate::{Error, Result};

/// Fixed-size slots of `SLOT` bytes in locked, non-dumpable pages, zeroed when dropped.
pub struct LockedSlots<const SLOT: usize> {
    pages: LockedPages,
    slots: usize,
}

impl<const SLOT: usize> LockedSlots<SLOT> {
    /// Maps, locks and marks non-dumpable room for `slots` slots (rounded up to whole pages).
    ///
    /// # Errors
    /// When the pages cannot be locked (RLIMIT_MEMLOCK too low: the message says how much is
    /// needed and how to raise it), or for no slot at all.
    pub fn new(slots: usize) -> Result<Self> {
        let want = slots
            .checked_mul(SLOT)
            .filter(|&n| n > 0)
            .ok_or_else(|| Error("a locked key store needs at least one slot".into()))?;
        let pages = LockedPages::new(want, "the key cache")?;
        Ok(LockedSlots {
            slots: pages.len() / SLOT,
            pages,
        })
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slot `i` (panics past [`LockedSlots::slots`], a caller bug).
    pub fn get(&self, i: usize) -> &[u8; SLOT] {
        let s = &self.pages.bytes()[i * SLOT..(i + 1) * SLOT];
        s.try_into().unwrap_or_else(|_| unreachable!("slot length"))
    }

    /// Slot `i`, writable.
    pub fn get_mut(&mut self, i: usize) -> &mut [u8; SLOT] {
        let s = &mut self.pages.bytes_mut()[i * SLOT..(i + 1) * SLOT];
        s.try_into().unwrap_or_else(|_| unreachable!("slot length"))
    }

    /// Zeroes slot `i`.
    pub fn clear(&mut self, i: usize) {
        self.get_mut(i).zeroize();
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
        // And this mapping itself is locked and left out of core dumps.
        let addr = s.pages.ptr().as_ptr() as usize;
        assert!(
            crate::pages::locked_and_undumpable(addr),
            "VmFlags:{}",
            crate::pages::vm_flags(addr)
        );
    }
}
