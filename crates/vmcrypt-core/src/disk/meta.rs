//! The encryption metadata of a disk, in clear beside its keySafe: how it is written into a
//! sidecar or descriptor and read back (every field checked), and the keySafe it describes.

use std::path::Path;

use vmcrypt_xts::SectorSize;

use super::KEYSAFE_KEY;
use crate::keysafe::{DiskBinding, KeySafe};
use crate::locator::KeyLocator;
use crate::settings::Settings;
use crate::wrap::{DISK_CIPHER, DiskIdentity};
use crate::{Error, Result};

const FORMAT_VERSION: &str = "1";

/// The container format of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskFormat {
    /// A raw image; metadata in a sidecar.
    Raw,
    /// A VMDK descriptor with one flat extent.
    VmdkFlat,
}

impl DiskFormat {
    /// A short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::VmdkFlat => "vmdk-flat",
        }
    }
}

/// State of an encrypted disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskState {
    /// Fully encrypted.
    Encrypted,
    /// An in-place encryption was started and did not finish.
    Encrypting,
    /// An in-place decryption was started and did not finish.
    Decrypting,
    /// An in-place deep rekey was started and did not finish.
    Rekeying,
    /// A deep rekey by the process serving the disk (online, issue 18) is under way: the
    /// server carries it on when it starts, `resume` finishes it offline.
    RekeyingOnline,
    /// An encryption by the process serving the plaintext disk (online) is under way: units
    /// below the job's boundary are under the DEK, the others plaintext.
    EncryptingOnline,
    /// A decryption by the process serving the disk (online) is under way: units below the
    /// job's boundary are plaintext, the others under the DEK.
    DecryptingOnline,
}

impl DiskState {
    /// The name written in the metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::Encrypted => "encrypted",
            DiskState::Encrypting => "encrypting",
            DiskState::Decrypting => "decrypting",
            DiskState::Rekeying => "rekeying",
            DiskState::RekeyingOnline => "rekeying-online",
            DiskState::EncryptingOnline => "encrypting-online",
            DiskState::DecryptingOnline => "decrypting-online",
        }
    }

    /// Whether a job of the process serving the disk is recorded (`vmcrypt serve` carries
    /// it on, `vmcrypt resume` finishes it offline).
    pub fn is_online(self) -> bool {
        matches!(
            self,
            DiskState::RekeyingOnline | DiskState::EncryptingOnline | DiskState::DecryptingOnline
        )
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "encrypted" => Some(DiskState::Encrypted),
            "encrypting" => Some(DiskState::Encrypting),
            "decrypting" => Some(DiskState::Decrypting),
            "rekeying" => Some(DiskState::Rekeying),
            "rekeying-online" => Some(DiskState::RekeyingOnline),
            "encrypting-online" => Some(DiskState::EncryptingOnline),
            "decrypting-online" => Some(DiskState::DecryptingOnline),
            _ => None,
        }
    }
}

/// The encryption metadata of a disk (no key material; the DEK is wrapped in `key_safe`).
#[derive(Debug, Clone)]
pub struct EncryptionMeta {
    /// What the keySafe is bound to.
    pub identity: DiskIdentity,
    /// Key generation (1 on first encryption).
    pub generation: u64,
    /// During a shallow rekey: the generation of the new wrapping (the last pair of the
    /// keySafe), which coexists with the old one until the rekey commits.
    pub rekey_generation: Option<u64>,
    /// The VM this disk belongs to, if any.
    pub vm_uuid: Option<String>,
    /// The keySafe.
    pub key_safe: KeyLocator,
    /// Job state.
    pub state: DiskState,
    /// Id of the in-place job under way (hex), which names its journal.
    pub job: Option<String>,
    /// During a deep rekey that moves the payload: where the payload goes (the new DEK is
    /// bound to this offset; `identity.payload_offset` is where it comes from).
    pub rekey_payload_offset: Option<u64>,
}

impl EncryptionMeta {
    /// The (provider, key id) pairs the keySafe can be opened with.
    pub fn keys(&self) -> Vec<(String, String)> {
        crate::keysafe::names(&self.key_safe)
    }

    /// The keySafe with what it is bound to.
    pub(crate) fn key_safe(&self) -> KeySafe<'_, DiskBinding<'_>> {
        KeySafe {
            locator: &self.key_safe,
            binding: DiskBinding {
                vm_uuid: self.vm_uuid.as_deref(),
                disk: &self.identity,
            },
            generation: self.generation,
            rekey_generation: self.rekey_generation,
        }
    }
}

pub(crate) fn apply_meta(s: &mut Settings, prefix: &str, m: &EncryptionMeta) -> Result<()> {
    s.set(KEYSAFE_KEY, &m.key_safe.render())?;
    s.set(&format!("{prefix}version"), FORMAT_VERSION)?;
    s.set(&format!("{prefix}cipher"), DISK_CIPHER)?;
    s.set(
        &format!("{prefix}sectorSize"),
        &m.identity.sector_size.bytes().to_string(),
    )?;
    s.set(
        &format!("{prefix}payloadSize"),
        &m.identity.payload_size.to_string(),
    )?;
    s.set(&format!("{prefix}diskUuid"), &m.identity.uuid)?;
    s.set(&format!("{prefix}keyGeneration"), &m.generation.to_string())?;
    match m.rekey_generation {
        Some(g) => s.set(&format!("{prefix}rekeyGeneration"), &g.to_string())?,
        None => {
            s.remove(&format!("{prefix}rekeyGeneration"));
        }
    }
    match &m.vm_uuid {
        Some(v) => s.set(&format!("{prefix}vmUuid"), v)?,
        None => {
            s.remove(&format!("{prefix}vmUuid"));
        }
    }
    match &m.job {
        Some(j) => s.set(&format!("{prefix}job"), j)?,
        None => {
            s.remove(&format!("{prefix}job"));
        }
    }
    match m.identity.payload_offset {
        0 => {
            s.remove(&format!("{prefix}payloadOffset"));
        }
        o => s.set(&format!("{prefix}payloadOffset"), &o.to_string())?,
    }
    match m.rekey_payload_offset {
        Some(o) => s.set(&format!("{prefix}rekeyPayloadOffset"), &o.to_string())?,
        None => {
            s.remove(&format!("{prefix}rekeyPayloadOffset"));
        }
    }
    s.set(&format!("{prefix}state"), m.state.as_str())
}

pub(crate) fn read_meta(s: &Settings, prefix: &str, path: &Path) -> Result<EncryptionMeta> {
    let get = |k: &str| {
        s.get(&format!("{prefix}{k}"))
            .ok_or_else(|| Error::settings(path, None, format!("missing {prefix}{k}")))
    };
    let num = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .map_err(|_| Error::settings(path, None, format!("{prefix}{k} is not a number")))
    };
    if get("version")? != FORMAT_VERSION {
        return Err(Error::Unsupported {
            what: format!(
                "vmcrypt metadata version {:?} in {}",
                get("version")?,
                path.display()
            ),
        });
    }
    if get("cipher")? != DISK_CIPHER {
        return Err(Error::Unsupported {
            what: format!("disk cipher {:?} in {}", get("cipher")?, path.display()),
        });
    }
    let offset = |o: u64| -> Result<u64> {
        if o.is_multiple_of(4096) {
            Ok(o)
        } else {
            Err(Error::settings(
                path,
                None,
                format!("{prefix}payloadOffset is not a multiple of 4096"),
            ))
        }
    };
    let sector_size = SectorSize::from_bytes(num("sectorSize")?)
        .map_err(|e| Error::settings(path, None, e.to_string()))?;
    let key_safe = KeyLocator::parse(
        s.get(KEYSAFE_KEY)
            .ok_or_else(|| Error::settings(path, None, format!("missing {KEYSAFE_KEY}")))?,
    )?;
    let uuid = get("diskUuid")?.to_string();
    let state = DiskState::parse(get("state")?)
        .ok_or_else(|| Error::settings(path, None, format!("unknown {prefix}state")))?;
    Ok(EncryptionMeta {
        identity: DiskIdentity {
            uuid,
            payload_size: num("payloadSize")?,
            sector_size,
            payload_offset: match s.get(&format!("{prefix}payloadOffset")) {
                Some(_) => offset(num("payloadOffset")?)?,
                None => 0,
            },
        },
        generation: num("keyGeneration")?,
        rekey_generation: match s.get(&format!("{prefix}rekeyGeneration")) {
            Some(_) => Some(num("rekeyGeneration")?),
            None => None,
        },
        vm_uuid: s.get(&format!("{prefix}vmUuid")).map(str::to_string),
        key_safe,
        state,
        job: s.get(&format!("{prefix}job")).map(str::to_string),
        rekey_payload_offset: match s.get(&format!("{prefix}rekeyPayloadOffset")) {
            Some(_) => Some(offset(num("rekeyPayloadOffset")?)?),
            None => None,
        },
    })
}
