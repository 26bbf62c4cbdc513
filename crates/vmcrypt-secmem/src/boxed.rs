//! One value in [`LockedPages`] of its own: for a key schedule that lives as long as a served
//! disk, so that the round keys (which contain the key) never reach swap or a core dump.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use crate::Result;
use crate::pages::LockedPages;

/// A `Box` whose memory is locked in RAM, left out of core dumps, and zeroed after the value
/// is dropped. It takes at least one page; meant for a few long-lived secrets, not for many.
///
/// The value is built by the caller and moved in, so a copy of it may remain in the caller's
/// stack frames; callers that care scrub the stack afterwards ([`crate::scrub_stack`]).
pub struct LockedBox<T> {
    pages: LockedPages,
    _owns: PhantomData<T>,
}

// SAFETY: the box owns its `T` exclusively, as `Box<T>` does.
unsafe impl<T: Send> Send for LockedBox<T> {}
// SAFETY: `&LockedBox<T>` only gives `&T`, as `&Box<T>` does.
unsafe impl<T: Sync> Sync for LockedBox<T> {}

impl<T> LockedBox<T> {
    /// Moves `value` into locked pages of its own. `what` names it in errors.
    ///
    /// # Errors
    /// When the pages cannot be mapped or locked (the message says how to raise
    /// RLIMIT_MEMLOCK); `value` is then dropped.
    pub fn new(value: T, what: &str) -> Result<Self> {
        const {
            assert!(
                std::mem::align_of::<T>() <= 4096,
                "LockedBox aligns to pages of at least 4096 bytes"
            )
        };
        let pages = LockedPages::new(std::mem::size_of::<T>(), what)?;
        debug_assert!(std::mem::align_of::<T>() <= LockedPages::page());
        // SAFETY: the mapping is page-aligned (so aligned for `T`), at least `size_of::<T>()`
        // bytes long, writable, owned by `pages` and holds no value yet.
        unsafe { pages.ptr().cast::<T>().as_ptr().write(value) };
        Ok(LockedBox {
            pages,
            _owns: PhantomData,
        })
    }
}

impl<T> Deref for LockedBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `new` wrote a valid `T` there; it lives until `drop`, and `&self` allows
        // shared access only.
        unsafe { self.pages.ptr().cast::<T>().as_ref() }
    }
}

impl<T> DerefMut for LockedBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference.
        unsafe { self.pages.ptr().cast::<T>().as_mut() }
    }
}

impl<T> Drop for LockedBox<T> {
    fn drop(&mut self) {
        // SAFETY: the `T` written by `new`, dropped once, never used again; the pages are
        // zeroed and unmapped right after, when `self.pages` drops.
        unsafe { std::ptr::drop_in_place(self.pages.ptr().cast::<T>().as_ptr()) };
    }
}

/// Overwrites `bytes` of the stack below the caller's frame with zeros: the frames of the
/// functions the caller has just returned from, where a key schedule was built and moved
/// through. Call it right after building a secret that then lives elsewhere.
#[inline(never)]
pub fn scrub_stack<const BYTES: usize>() {
    let mut area = [0u8; BYTES];
    zeroize::Zeroize::zeroize(&mut area[..]);
    std::hint::black_box(&mut area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Secret {
        bytes: [u8; 300],
        drops: Arc<AtomicUsize>,
    }

    impl Drop for Secret {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_locked_box_holds_its_value_in_locked_pages_and_drops_it_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut b = LockedBox::new(
            Secret {
                bytes: [9; 300],
                drops: drops.clone(),
            },
            "a test secret",
        )
        .expect("locked pages");
        assert_eq!(b.bytes, [9; 300]);
        b.bytes[0] = 1;
        assert_eq!(b.bytes[..2], [1, 9]);
        let addr = &*b as *const Secret as usize;
        assert_eq!(addr % LockedPages::page(), 0, "the value starts its page");
        assert!(
            crate::pages::locked_and_undumpable(addr),
            "VmFlags:{}",
            crate::pages::vm_flags(addr)
        );
        // Usable from other threads, like a Box.
        let shared = Arc::new(b);
        let first = std::thread::scope(|s| s.spawn(|| shared.bytes[0]).join().expect("thread"));
        assert_eq!(first, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(shared);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
        scrub_stack::<4096>();
    }
}
