//! Wrapping DEKs under KEKs: AES-256-GCM with a random 96-bit nonce and associated data that
//! binds the wrapped key to its context, stored as a `pair` key locator.
//!
//! The pair's plaintext is a crypto dictionary, `type=key:cipher=XTS-AES-256:key=BASE64`; its
//! locked data is `nonce (12) || ciphertext || tag (16)`. The associated data is a fixed label
//! and version followed by every context field, each length-prefixed, so no two contexts encode
//! alike: a keySafe copied to another disk or VM, rolled back to another generation, moved to
//! another provider or key id, or whose image identity (uuid, payload size, data unit size) was
//! edited, fails the tag check with one opaque error.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use vmcrypt_xts::SectorSize;
use zeroize::Zeroizing;

use crate::locator::KeyLocator;
use crate::secret::{ConfigKey, Dek, Kek, random_fill};
use crate::{Error, Result};

/// The MAC name written into `pair` locators for this wrap algorithm.
pub const WRAP_ALG: &str = "AES-256-GCM";
/// The disk cipher named in the crypto dictionary and the associated data.
pub const DISK_CIPHER: &str = "XTS-AES-256";
/// Version of the wrap format (part of the associated data).
pub const WRAP_VERSION: u32 = 1;
const AAD_LABEL: &[u8] = b"vmcrypt keysafe\0";

/// Identity of the disk a DEK belongs to: recorded in clear beside the keySafe and bound into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIdentity {
    /// A random uuid given to the disk when it was first encrypted.
    pub uuid: String,
    /// Payload length in bytes.
    pub payload_size: u64,
    /// The XTS data unit size.
    pub sector_size: SectorSize,
    /// Where the payload starts in its file (non-zero after an in-place job moved it; see
    /// docs/crash-safety.md). Bound into the keySafe so that an edited offset is refused, not
    /// decrypted as garbage.
    pub payload_offset: u64,
}

/// Everything a wrapped DEK is bound to.
#[derive(Debug, Clone)]
pub struct WrapContext<'a> {
    /// Key provider name.
    pub provider: &'a str,
    /// Key id of the KEK within the provider.
    pub key_id: &'a str,
    /// The VM the disk belongs to, if it was encrypted as part of one.
    pub vm_uuid: Option<&'a str>,
    /// The disk.
    pub disk: &'a DiskIdentity,
    /// Key generation: increases with every rekey, so an old keySafe cannot be rolled back in.
    pub generation: u64,
}

impl WrapContext<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut a = AAD_LABEL.to_vec();
        a.extend_from_slice(&WRAP_VERSION.to_be_bytes());
        for f in [
            WRAP_ALG,
            DISK_CIPHER,
            self.provider,
            self.key_id,
            self.vm_uuid.unwrap_or(""),
            &self.disk.uuid,
        ] {
            a.extend_from_slice(&(f.len() as u64).to_be_bytes());
            a.extend_from_slice(f.as_bytes());
        }
        a.push(u8::from(self.vm_uuid.is_some()));
        a.extend_from_slice(&self.disk.payload_size.to_be_bytes());
        a.extend_from_slice(&(self.disk.sector_size.bytes() as u64).to_be_bytes());
        a.extend_from_slice(&self.generation.to_be_bytes());
        // Appended only when non-zero, so keySafes written before payloads could move still
        // open: every field before it has a fixed length or a length prefix.
        if self.disk.payload_offset != 0 {
            a.extend_from_slice(b"payloadOffset");
            a.extend_from_slice(&self.disk.payload_offset.to_be_bytes());
        }
        a
    }
}

/// AES-256-GCM seal with a 96-bit nonce and a 128-bit tag: returns `ciphertext || tag`.
/// The one AEAD primitive of vmcrypt (key wrap, keystore backups).
///
/// # Errors
/// [`Error::InvalidInput`] only if the message is too long for GCM.
pub fn aead_seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>> {
    Aes256Gcm::new(key.into())
        .encrypt(&Nonce::from(*nonce), Payload { msg, aad })
        .map_err(|_| Error::input("AEAD seal failed"))
}

/// AES-256-GCM open of `ciphertext || tag`. Any failure is the opaque [`Error::UnwrapFailed`];
/// the plaintext is zeroized on drop.
///
/// # Errors
/// [`Error::UnwrapFailed`].
pub fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(*nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| Error::UnwrapFailed)
}

/// Wraps a DEK under a KEK into a `pair` locator whose locker is `fqid/<null>/provider/key_id`.
///
/// # Errors
/// [`Error::KeyService`] if no randomness is available for the nonce.
pub fn wrap_dek(kek: &Kek, dek: &Dek, ctx: &WrapContext<'_>) -> Result<KeyLocator> {
    seal_key(
        kek,
        DISK_CIPHER,
        dek.expose_secret(),
        &ctx.aad(),
        ctx.provider,
        ctx.key_id,
    )
}

/// Unwraps a DEK from locked pair data. Every failure (tag, dictionary, key length, equal
/// halves) is the same opaque [`Error::UnwrapFailed`].
///
/// # Errors
/// [`Error::UnwrapFailed`].
pub fn unwrap_dek(kek: &Kek, locked: &[u8], ctx: &WrapContext<'_>) -> Result<Dek> {
    let raw = open_key(kek, locked, DISK_CIPHER, &ctx.aad())?;
    Dek::from_xts_bytes(&raw).map_err(|_| Error::UnwrapFailed)
}

/// The cipher named for a VM configuration key.
pub const CONFIG_CIPHER: &str = "AES-256-GCM";
const VM_AAD_LABEL: &[u8] = b"vmcrypt vm keysafe\0";

/// Everything a wrapped VM configuration key is bound to.
#[derive(Debug, Clone)]
pub struct VmKeyContext<'a> {
    /// Key provider name.
    pub provider: &'a str,
    /// Key id of the KEK.
    pub key_id: &'a str,
    /// The VM's vmcrypt uuid.
    pub vm_uuid: &'a str,
    /// Key generation.
    pub generation: u64,
}

impl VmKeyContext<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut a = VM_AAD_LABEL.to_vec();
        a.extend_from_slice(&WRAP_VERSION.to_be_bytes());
        for f in [
            WRAP_ALG,
            CONFIG_CIPHER,
            self.provider,
            self.key_id,
            self.vm_uuid,
        ] {
            a.extend_from_slice(&(f.len() as u64).to_be_bytes());
            a.extend_from_slice(f.as_bytes());
        }
        a.extend_from_slice(&self.generation.to_be_bytes());
        a
    }
}

/// Wraps a VM configuration key (the key of `encryption.data`).
///
/// # Errors
/// [`Error::KeyService`] if no randomness is available for the nonce.
pub fn wrap_config_key(kek: &Kek, key: &ConfigKey, ctx: &VmKeyContext<'_>) -> Result<KeyLocator> {
    seal_key(
        kek,
        CONFIG_CIPHER,
        key.expose_secret(),
        &ctx.aad(),
        ctx.provider,
        ctx.key_id,
    )
}

/// Unwraps a VM configuration key; every failure is [`Error::UnwrapFailed`].
///
/// # Errors
/// [`Error::UnwrapFailed`].
pub fn unwrap_config_key(kek: &Kek, locked: &[u8], ctx: &VmKeyContext<'_>) -> Result<ConfigKey> {
    let raw = open_key(kek, locked, CONFIG_CIPHER, &ctx.aad())?;
    ConfigKey::from_slice(&raw).map_err(|_| Error::UnwrapFailed)
}

/// Seals `type=key:cipher=CIPHER:key=BASE64` into a pair locator.
fn seal_key(
    kek: &Kek,
    cipher: &str,
    key: &[u8],
    aad: &[u8],
    provider: &str,
    key_id: &str,
) -> Result<KeyLocator> {
    let dict = Zeroizing::new(format!(
        "type=key:cipher={cipher}:key={}",
        Zeroizing::new(B64.encode(key)).as_str()
    ));
    let mut nonce = [0u8; 12];
    random_fill(&mut nonce)?;
    let ct = aead_seal(kek.expose_secret(), &nonce, aad, dict.as_bytes())?;
    let mut data = nonce.to_vec();
    data.extend_from_slice(&ct);
    Ok(KeyLocator::Pair {
        locker: Box::new(KeyLocator::Fqid {
            unique_id: None,
            provider: provider.to_string(),
            key_id: key_id.to_string(),
        }),
        mac: WRAP_ALG.to_string(),
        data,
    })
}

/// Opens a pair's data and returns the key bytes of a dictionary naming `cipher`.
fn open_key(kek: &Kek, locked: &[u8], cipher: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if locked.len() < 12 + 16 {
        return Err(Error::UnwrapFailed);
    }
    let (nonce, ct) = locked.split_at(12);
    let nonce: &[u8; 12] = nonce.try_into().map_err(|_| Error::UnwrapFailed)?;
    let dict = aead_open(kek.expose_secret(), nonce, aad, ct)?;
    let dict = std::str::from_utf8(&dict).map_err(|_| Error::UnwrapFailed)?;
    let mut fields = dict.split(':').map(|kv| kv.split_once('='));
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(Some(("type", "key"))), Some(Some(("cipher", c))), Some(Some(("key", k))), None)
            if c == cipher =>
        {
            Ok(Zeroizing::new(
                B64.decode(k).map_err(|_| Error::UnwrapFailed)?,
            ))
        }
        _ => Err(Error::UnwrapFailed),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A disk identity for tests.
    pub(crate) fn disk() -> DiskIdentity {
        DiskIdentity {
            uuid: "d1".into(),
            payload_size: 1 << 20,
            sector_size: SectorSize::S4096,
            payload_offset: 0,
        }
    }

    fn ctx<'a>(d: &'a DiskIdentity) -> WrapContext<'a> {
        WrapContext {
            provider: "native",
            key_id: "k1",
            vm_uuid: None,
            disk: d,
            generation: 1,
        }
    }

    fn locked(kl: &KeyLocator) -> Vec<u8> {
        crate::keysafe::pairs(kl)[0].locked.to_vec()
    }

    #[test]
    fn round_trip_and_every_context_field_binds() {
        let kek = Kek::generate().expect("rng");
        let dek = Dek::generate_xts().expect("rng");
        let d = disk();
        let kl = wrap_dek(&kek, &dek, &ctx(&d)).expect("wrap");
        let data = locked(&kl);
        let back = unwrap_dek(&kek, &data, &ctx(&d)).expect("unwrap");
        assert_eq!(back.expose_secret(), dek.expose_secret());

        let other_disk = DiskIdentity {
            uuid: "d2".into(),
            ..disk()
        };
        let bigger = DiskIdentity {
            payload_size: 2 << 20,
            ..disk()
        };
        let small_units = DiskIdentity {
            sector_size: SectorSize::S512,
            ..disk()
        };
        let moved = DiskIdentity {
            payload_offset: 64 << 20,
            ..disk()
        };
        let cases: Vec<WrapContext<'_>> = vec![
            WrapContext {
                provider: "other",
                ..ctx(&d)
            },
            WrapContext {
                key_id: "k2",
                ..ctx(&d)
            },
            WrapContext {
                vm_uuid: Some("vm"),
                ..ctx(&d)
            },
            WrapContext {
                generation: 2,
                ..ctx(&d)
            },
            ctx(&other_disk),
            ctx(&bigger),
            ctx(&small_units),
            ctx(&moved),
        ];
        for c in &cases {
            assert!(
                matches!(unwrap_dek(&kek, &data, c), Err(Error::UnwrapFailed)),
                "{c:?}"
            );
        }
        let wrong = Kek::generate().expect("rng");
        assert!(matches!(
            unwrap_dek(&wrong, &data, &ctx(&d)),
            Err(Error::UnwrapFailed)
        ));
        for i in 0..data.len() * 8 {
            let mut flipped = data.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert!(unwrap_dek(&kek, &flipped, &ctx(&d)).is_err(), "bit {i}");
        }
        assert!(unwrap_dek(&kek, &data[..20], &ctx(&d)).is_err());
    }

    #[test]
    fn locator_form() {
        let kek = Kek::generate().expect("rng");
        let dek = Dek::generate_xts().expect("rng");
        let d = disk();
        let s = wrap_dek(&kek, &dek, &ctx(&d)).expect("wrap").render();
        assert!(
            s.starts_with("vmware:key/pair/(fqid/<VMWARE-NULL>/native/k1,AES%2d256%2dGCM,"),
            "{s}"
        );
    }
}
