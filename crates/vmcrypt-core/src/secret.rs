//! Secret key types. Each zeroizes on drop, has no `Clone`, `Debug` or `Display`, and is read
//! only through `expose_secret()`, so every use is greppable.

use zeroize::Zeroize;

use crate::{Error, Result};

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        pub struct $name(Box<[u8; $len]>);

        impl $name {
            /// Key length in bytes.
            pub const LEN: usize = $len;

            /// Fills a new key in place from a closure (the bytes never live on the stack).
            pub fn init_with_mut(f: impl FnOnce(&mut [u8; $len])) -> Self {
                let mut k = $name(Box::new([0u8; $len]));
                f(&mut k.0);
                k
            }

            /// The key bytes. Every read of key material goes through here.
            pub fn expose_secret(&self) -> &[u8; $len] {
                &self.0
            }

            /// A copy from a slice of exactly the key length.
            ///
            /// # Errors
            /// [`Error::InvalidInput`] on a wrong length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self> {
                if bytes.len() != $len {
                    return Err(Error::input(format!(
                        "{} must be {} bytes, got {}",
                        stringify!($name),
                        $len,
                        bytes.len()
                    )));
                }
                Ok(Self::init_with_mut(|k| k.copy_from_slice(bytes)))
            }

            /// A new key from the operating system's CSPRNG.
            ///
            /// # Errors
            /// [`Error::KeyService`] if the OS has no entropy source.
            pub fn generate() -> Result<Self> {
                let mut res = Ok(());
                let k = Self::init_with_mut(|k| res = random_fill(k));
                res.map(|()| k)
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }
    };
}

secret_key!(
    /// A key encryption key: AES-256, lives in a key provider, wraps DEKs.
    Kek,
    32
);
secret_key!(
    /// The native provider's key derivation key: every native KEK is derived from it.
    Kdk,
    32
);
secret_key!(
    /// A VM configuration key: AES-256-GCM key of the VMX's `encryption.data`.
    ConfigKey,
    32
);
secret_key!(
    /// A disk's data encryption key: XTS-AES-256, two 32-byte halves that must differ.
    /// Use [`Dek::generate_xts`] or [`Dek::from_xts_bytes`], which enforce the halves rule.
    Dek,
    64
);

impl Dek {
    /// A new random XTS key whose halves differ.
    ///
    /// # Errors
    /// [`Error::KeyService`] if the OS has no entropy source.
    pub fn generate_xts() -> Result<Self> {
        loop {
            let dek = Dek::generate()?;
            let (a, b) = dek.expose_secret().split_at(32);
            if a != b {
                return Ok(dek);
            }
        }
    }

    /// An XTS key from 64 bytes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] on a wrong length or equal halves.
    pub fn from_xts_bytes(bytes: &[u8]) -> Result<Self> {
        let dek = Dek::from_slice(bytes)?;
        let (a, b) = dek.expose_secret().split_at(32);
        if subtle::ConstantTimeEq::ct_eq(a, b).into() {
            return Err(Error::input("XTS key halves are equal"));
        }
        Ok(dek)
    }

    /// The XTS key schedule for this key, in locked, non-dumpable pages of its own: the
    /// round keys contain the key and live as long as the job or the served disk. The stack
    /// it was built on is scrubbed before this returns.
    ///
    /// # Errors
    /// [`Error::NoLockedMemory`] when RLIMIT_MEMLOCK leaves no room for one more page (the
    /// message says how to raise it); [`Error::Xts`] never for a key built by this module
    /// (the halves are checked).
    pub fn xts(&self) -> Result<Schedule> {
        let schedule = locked_schedule(self.expose_secret());
        vmcrypt_secmem::scrub_stack::<SCRUB_BYTES>();
        schedule
    }
}

/// An XTS key schedule in locked memory ([`Dek::xts`]); use it as a [`vmcrypt_xts::Xts`].
pub type Schedule = vmcrypt_secmem::LockedBox<vmcrypt_xts::Xts>;

/// Stack scrubbed after a key schedule is built: several times what building one and moving
/// it uses (an `Xts` is under 3 KiB).
const SCRUB_BYTES: usize = 32 * 1024;

/// Builds the schedule in frames below [`Dek::xts`]'s, so that the scrub covers every copy.
#[inline(never)]
fn locked_schedule(key: &[u8; 64]) -> Result<Schedule> {
    let xts = vmcrypt_xts::Xts::new(key)?;
    vmcrypt_secmem::LockedBox::new(xts, "a disk's key schedule").map_err(|e| {
        Error::NoLockedMemory {
            reason: e.to_string(),
        }
    })
}

/// Fills `buf` from the OS CSPRNG.
///
/// # Errors
/// [`Error::NoRandomness`] if the OS has no entropy source.
pub fn random_fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::NoRandomness {
        reason: e.to_string(),
    })
}

/// A random (version 4) UUID in its usual text form.
///
/// # Errors
/// [`Error::KeyService`] if the OS has no entropy source.
pub fn random_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    random_fill(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dek_halves_rule() {
        assert!(Dek::from_xts_bytes(&[3u8; 64]).is_err());
        assert!(Dek::from_xts_bytes(&[3u8; 63]).is_err());
        let dek = Dek::generate_xts().expect("rng");
        assert_ne!(&dek.expose_secret()[..32], &dek.expose_secret()[32..]);
    }

    #[test]
    fn a_key_schedule_takes_one_locked_page_and_encrypts_like_an_unlocked_one() {
        assert!(std::mem::size_of::<vmcrypt_xts::Xts>() <= 4096, "one page");
        let dek = Dek::generate_xts().expect("rng");
        let locked = dek.xts().expect("locked memory");
        let plain = vmcrypt_xts::Xts::new(dek.expose_secret()).expect("schedule");
        let mut a = vec![7u8; 4096];
        let mut b = a.clone();
        locked
            .encrypt_sectors(&mut a, 2560, vmcrypt_xts::SectorSize::S512)
            .expect("encrypt");
        plain
            .encrypt_sectors(&mut b, 2560, vmcrypt_xts::SectorSize::S512)
            .expect("encrypt");
        assert_eq!(a, b);
        assert_ne!(a, vec![7u8; 4096]);
    }

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = random_uuid().expect("rng");
        let b = random_uuid().expect("rng");
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
