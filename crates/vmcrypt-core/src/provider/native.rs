//! The embedded key provider: one 256-bit key derivation key (KDK) in a local keystore file,
//! and every KEK derived from it as HKDF-SHA256(KDK, info = label || key id). There is no key
//! database: hosts that share the keystore derive the same KEKs, and losing the keystore loses
//! every disk it protects, which is why it must be backed up ([`NativeProvider::backup`]).
//!
//! Keystore file (settings syntax, mode 0600, refused if group or others can read it):
//! ```text
//! vmcrypt.keystore.version = "1"
//! vmcrypt.keystore.kdk = "BASE64"
//! vmcrypt.keystore.backedUp = "FALSE"
//! ```
//!
//! Backup file: the KDK sealed with AES-256-GCM under a key stretched from a passphrase with
//! Argon2id (64 MiB, 3 passes by default); the parameters are stored and authenticated.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{KeyId, KeyProvider, KeyPurpose};
use crate::fsutil::write_atomic;
use crate::secret::{Kdk, Kek, random_fill, random_uuid};
use crate::settings::{Flavor, Settings};
use crate::{Error, Result};

const KEK_INFO: &[u8] = b"vmcrypt native kek v1\0";
const K_VERSION: &str = "vmcrypt.keystore.version";
const K_KDK: &str = "vmcrypt.keystore.kdk";
const K_BACKED_UP: &str = "vmcrypt.keystore.backedUp";
const B_PREFIX: &str = "vmcrypt.backup.";
const BACKUP_AAD: &[u8] = b"vmcrypt native backup v1\0";
/// Upper bound on Argon2 memory accepted from a backup file (a hostile file must not exhaust RAM).
/// The most memory a backup may ask a restore for: 1 GiB, 16 times the default (backups are
/// written with the defaults).
const MAX_BACKUP_MEMORY_KIB: u32 = 1024 * 1024;

/// Argon2id parameters for backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for BackupParams {
    fn default() -> Self {
        BackupParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

/// A keystore must belong to the user running vmcrypt (or root), and sit in a folder that
/// nobody else can write (or that is sticky, like /tmp): whoever can replace the file can
/// hand vmcrypt a KDK of their choosing, and every disk encrypted after that is theirs.
fn check_owner_and_folder(
    path: &Path,
    meta: &std::fs::Metadata,
) -> std::result::Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let trusted = |uid: u32| uid == me || uid == 0;
    if !trusted(meta.uid()) {
        return Err(format!(
            "owned by uid {}, not by this user ({me}) or root; refusing a key another user controls",
            meta.uid()
        ));
    }
    let dir = crate::fsutil::parent_dir(path);
    let d = std::fs::metadata(&dir).map_err(|e| format!("cannot read its folder: {e}"))?;
    let sticky = d.mode() & 0o1000 != 0;
    if !trusted(d.uid()) || (d.mode() & 0o022 != 0 && !sticky) {
        return Err(format!(
            "its folder {} can be written by others (mode {:o}, owner uid {}); move the keystore to a private folder",
            dir.display(),
            d.mode() & 0o7777,
            d.uid()
        ));
    }
    Ok(())
}

/// The native key provider.
pub struct NativeProvider {
    name: String,
    path: PathBuf,
    kdk: Kdk,
    backed_up: bool,
}

impl NativeProvider {
    /// Creates a new keystore with a fresh KDK at `path`; refuses to overwrite an existing file.
    ///
    /// # Errors
    /// [`Error::Exists`] if the file exists; [`Error::Io`].
    pub fn create(name: &str, path: &Path) -> Result<Self> {
        if path.exists() {
            return Err(Error::Exists {
                path: path.to_path_buf(),
            });
        }
        let kdk = Kdk::generate()?;
        let p = NativeProvider {
            name: name.to_string(),
            path: path.to_path_buf(),
            kdk,
            backed_up: false,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsutil::create_private_dir(dir)?;
        }
        p.save(true)?;
        tracing::info!(provider = name, keystore = %path.display(), "created native keystore");
        Ok(p)
    }

    /// Opens an existing keystore.
    ///
    /// # Errors
    /// [`Error::Keystore`] if it is missing, readable by others, or malformed.
    pub fn open(name: &str, path: &Path) -> Result<Self> {
        let ks = |reason: String| Error::Keystore {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| {
            ks(if e.kind() == std::io::ErrorKind::NotFound {
                "not found (restore it from its backup with `vmcrypt provider restore`)".into()
            } else {
                format!("cannot read: {e}")
            })
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(ks(format!(
                "mode {:o} lets others read it; run `chmod 600 {}`",
                meta.permissions().mode() & 0o777,
                path.display()
            )));
        }
        check_owner_and_folder(path, &meta).map_err(ks)?;
        let s = Settings::read(path, Flavor::Vmx)?;
        if s.get(K_VERSION) != Some("1") {
            return Err(ks("not a vmcrypt keystore (version 1)".into()));
        }
        let raw = Zeroizing::new(
            B64.decode(s.get(K_KDK).ok_or_else(|| ks("no key".into()))?)
                .map_err(|_| ks("key is not base64".into()))?,
        );
        let kdk = Kdk::from_slice(&raw).map_err(|_| ks("key has the wrong length".into()))?;
        let backed_up = s
            .get(K_BACKED_UP)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let p = NativeProvider {
            name: name.to_string(),
            path: path.to_path_buf(),
            kdk,
            backed_up,
        };
        if !backed_up {
            tracing::warn!(
                "native keystore {} (provider {name}) has no backup: if it is lost, every disk it protects is lost; run `vmcrypt provider backup {name} --out FILE`",
                path.display()
            );
        }
        Ok(p)
    }

    /// Whether a backup has been exported.
    pub fn is_backed_up(&self) -> bool {
        self.backed_up
    }

    /// The keystore path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Exports the KDK under a passphrase to `out` (refusing to overwrite) and marks the
    /// keystore as backed up.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty passphrase; [`Error::Exists`] for an existing
    /// output; [`Error::Io`].
    pub fn backup(&mut self, out: &Path, passphrase: &[u8], params: BackupParams) -> Result<()> {
        if passphrase.is_empty() {
            return Err(Error::input("the backup passphrase is empty"));
        }
        if out.exists() {
            return Err(Error::Exists {
                path: out.to_path_buf(),
            });
        }
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        random_fill(&mut salt)?;
        random_fill(&mut nonce)?;
        let mut s = Settings::new(
            Flavor::Vmx,
            &[
                "vmcrypt native key provider backup: the key derivation key, sealed under a passphrase.",
                "Restore with `vmcrypt provider restore FILE --name NAME`.",
            ],
        );
        // Version 2 records the provider's name, authenticated with the key: disks name their
        // provider in their keySafes, so a restore under another name would not be found.
        s.set(&format!("{B_PREFIX}version"), "2")?;
        s.set(&format!("{B_PREFIX}provider"), &self.name)?;
        s.set(&format!("{B_PREFIX}kdf"), "argon2id")?;
        s.set(
            &format!("{B_PREFIX}kdf.memoryKiB"),
            &params.memory_kib.to_string(),
        )?;
        s.set(
            &format!("{B_PREFIX}kdf.iterations"),
            &params.iterations.to_string(),
        )?;
        s.set(
            &format!("{B_PREFIX}kdf.parallelism"),
            &params.parallelism.to_string(),
        )?;
        s.set(&format!("{B_PREFIX}salt"), &B64.encode(salt))?;
        s.set(&format!("{B_PREFIX}nonce"), &B64.encode(nonce))?;
        let key = stretch(passphrase, &salt, params)?;
        let aad = backup_aad(&params, &salt, Some(&self.name));
        let ct = crate::wrap::aead_seal(&key, &nonce, &aad, self.kdk.expose_secret())?;
        s.set(&format!("{B_PREFIX}data"), &B64.encode(ct))?;
        // Write through a temp file so a partial backup never looks like a complete one.
        write_atomic(out, s.render().as_bytes(), 0o600)?;
        self.backed_up = true;
        self.save(false)?;
        tracing::info!(provider = %self.name, backup = %out.display(), "native keystore backed up");
        Ok(())
    }

    /// Restores a keystore from a backup into `keystore` (refusing to overwrite), marked as
    /// backed up.
    ///
    /// # Errors
    /// [`Error::WrongPassphrase`] for a wrong passphrase or a tampered backup;
    /// [`Error::InvalidSettings`] for a file that is not a backup.
    pub fn restore(name: &str, backup: &Path, passphrase: &[u8], keystore: &Path) -> Result<Self> {
        if keystore.exists() {
            return Err(Error::Exists {
                path: keystore.to_path_buf(),
            });
        }
        let s = Settings::read(backup, Flavor::Vmx)?;
        let get = |k: &str| {
            s.get(&format!("{B_PREFIX}{k}")).ok_or_else(|| {
                Error::settings(
                    backup,
                    None,
                    format!("not a vmcrypt backup: no {B_PREFIX}{k}"),
                )
            })
        };
        let num = |k: &str| -> Result<u32> {
            get(k)?.parse().map_err(|_| {
                Error::settings(backup, None, format!("{B_PREFIX}{k} is not a number"))
            })
        };
        let info = backup_info_of(&s, backup)?;
        if get("kdf")? != "argon2id" {
            return Err(Error::settings(backup, None, "unsupported backup KDF"));
        }
        let params = BackupParams {
            memory_kib: num("kdf.memoryKiB")?,
            iterations: num("kdf.iterations")?,
            parallelism: num("kdf.parallelism")?,
        };
        if params.memory_kib > MAX_BACKUP_MEMORY_KIB
            || params.iterations > 64
            || params.parallelism > 64
        {
            return Err(Error::settings(backup, None, "KDF parameters out of range"));
        }
        let b64 = |k: &str| {
            B64.decode(get(k)?)
                .map_err(|_| Error::settings(backup, None, format!("{B_PREFIX}{k} is not base64")))
        };
        let salt = b64("salt")?;
        let nonce = b64("nonce")?;
        let data = b64("data")?;
        if nonce.len() != 12 {
            return Err(Error::settings(backup, None, "bad nonce length"));
        }
        let key = stretch(passphrase, &salt, params)?;
        let aad = backup_aad(&params, &salt, info.provider.as_deref());
        let nonce: [u8; 12] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::UnwrapFailed)?;
        let wrong = || Error::WrongPassphrase {
            path: backup.to_path_buf(),
        };
        let raw = crate::wrap::aead_open(&key, &nonce, &aad, &data).map_err(|e| match e {
            Error::UnwrapFailed => wrong(),
            other => other,
        })?;
        let kdk = Kdk::from_slice(&raw).map_err(|_| wrong())?;
        let p = NativeProvider {
            name: name.to_string(),
            path: keystore.to_path_buf(),
            kdk,
            backed_up: true,
        };
        if let Some(dir) = keystore.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsutil::create_private_dir(dir)?;
        }
        p.save(true)?;
        Ok(p)
    }

    /// What a backup file says about itself (its version, the provider it was made from),
    /// without its passphrase: `provider restore` restores under the recorded name by default
    /// and warns when told another.
    ///
    /// # Errors
    /// [`Error::InvalidSettings`] for a file that is not a backup or of an unknown version.
    pub fn backup_info(backup: &Path) -> Result<BackupInfo> {
        backup_info_of(&Settings::read(backup, Flavor::Vmx)?, backup)
    }

    /// Writes the keystore: a new one only if none exists (`new`), else in place of the old.
    fn save(&self, new: bool) -> Result<()> {
        let mut s = Settings::new(
            Flavor::Vmx,
            &[
                "vmcrypt native key provider keystore. SECRET: whoever reads this file can decrypt every disk it protects.",
                "Losing it loses those disks: keep the backup made by `vmcrypt provider backup`.",
            ],
        );
        s.set(K_VERSION, "1")?;
        s.set(
            K_KDK,
            Zeroizing::new(B64.encode(self.kdk.expose_secret())).as_str(),
        )?;
        s.set(K_BACKED_UP, if self.backed_up { "TRUE" } else { "FALSE" })?;
        let text = Zeroizing::new(s.render());
        if new {
            crate::fsutil::write_new(&self.path, text.as_bytes(), 0o600)
        } else {
            write_atomic(&self.path, text.as_bytes(), 0o600)
        }
    }

    fn derive(&self, id: &KeyId) -> Result<Kek> {
        let hk = Hkdf::<Sha256>::new(None, self.kdk.expose_secret());
        let mut info = KEK_INFO.to_vec();
        info.extend_from_slice(id.as_str().as_bytes());
        let mut res = Ok(());
        let kek = Kek::init_with_mut(|k| {
            res = hk
                .expand(&info, k)
                .map_err(|_| Error::input("HKDF output length"));
        });
        res.map(|()| kek)
    }
}

impl KeyProvider for NativeProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn create_kek(&self, _purpose: &KeyPurpose) -> Result<(KeyId, Kek)> {
        let id = KeyId::new(random_uuid()?)?;
        let kek = self.derive(&id)?;
        Ok((id, kek))
    }

    fn fetch_kek(&self, id: &KeyId) -> Result<Kek> {
        self.derive(id)
    }
}

fn stretch(passphrase: &[u8], salt: &[u8], p: BackupParams) -> Result<Zeroizing<[u8; 32]>> {
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, Some(32))
        .map_err(|e| Error::input(format!("Argon2 parameters: {e}")))?;
    // The memory is allocated here, fallibly, and only if the host has it: a backup that asks
    // for more is an error, never an abort or an OOM kill.
    let blocks = params.block_count();
    let bytes = blocks.saturating_mul(std::mem::size_of::<argon2::Block>());
    if let Some(avail) = mem_available()
        && bytes as u64 > avail
    {
        return Err(Error::input(format!(
            "the backup's Argon2 parameters need {} MiB of memory; this host has {} MiB available",
            bytes >> 20,
            avail >> 20
        )));
    }
    let mut memory: Vec<argon2::Block> = Vec::new();
    memory.try_reserve_exact(blocks).map_err(|_| {
        Error::input(format!(
            "cannot allocate the {} MiB the backup's Argon2 parameters need",
            bytes >> 20
        ))
    })?;
    memory.resize(blocks, argon2::Block::default());
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    let r = a
        .hash_password_into_with_memory(passphrase, salt, out.as_mut(), &mut memory)
        .map_err(|e| Error::input(format!("Argon2: {e}")));
    // The blocks hold values derived from the passphrase.
    memory.fill(argon2::Block::default());
    std::hint::black_box(&memory);
    r?;
    Ok(out)
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = crate::fsutil::read_bounded(Path::new("/proc/meminfo"), 64 * 1024).ok()?;
    let text = String::from_utf8_lossy(&text);
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What a backup's seal authenticates besides the key: its KDF parameters, its salt and, from
/// version 2 on, the provider's name (length-prefixed after the salt).
fn backup_aad(p: &BackupParams, salt: &[u8], provider: Option<&str>) -> Vec<u8> {
    let mut a = BACKUP_AAD.to_vec();
    for v in [p.memory_kib, p.iterations, p.parallelism] {
        a.extend_from_slice(&v.to_be_bytes());
    }
    a.extend_from_slice(salt);
    if let Some(name) = provider {
        a.extend_from_slice(&(name.len() as u32).to_be_bytes());
        a.extend_from_slice(name.as_bytes());
    }
    a
}

fn backup_info_of(s: &Settings, backup: &Path) -> Result<BackupInfo> {
    let version = match s.get(&format!("{B_PREFIX}version")) {
        Some("1") => 1,
        Some("2") => 2,
        Some(v) => {
            return Err(Error::settings(
                backup,
                None,
                format!("unsupported backup version {v:?} (this vmcrypt reads 1 and 2)"),
            ));
        }
        None => {
            return Err(Error::settings(
                backup,
                None,
                format!("not a vmcrypt backup: no {B_PREFIX}version"),
            ));
        }
    };
    let provider = match version {
        1 => None,
        _ => Some(
            s.get(&format!("{B_PREFIX}provider"))
                .ok_or_else(|| {
                    Error::settings(
                        backup,
                        None,
                        format!("not a vmcrypt backup: no {B_PREFIX}provider"),
                    )
                })?
                .to_string(),
        ),
    };
    Ok(BackupInfo { version, provider })
}

/// What a backup says about itself, read without the passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The format version (1: no provider name recorded; 2: recorded).
    pub version: u32,
    /// The name of the provider it was made from (version 2).
    pub provider: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: BackupParams = BackupParams {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn keystore_life_cycle() {
        let d = tempfile::tempdir().expect("tempdir");
        let ks = d.path().join("native.keystore");
        let mut p = NativeProvider::create("native", &ks).expect("create");
        assert!(
            NativeProvider::create("native", &ks).is_err(),
            "overwrote a keystore"
        );
        assert_eq!(
            std::fs::metadata(&ks).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let (id, kek) = p.create_kek(&KeyPurpose::Disk("d".into())).expect("kek");
        let again = NativeProvider::open("native", &ks).expect("open");
        assert_eq!(
            again.fetch_kek(&id).expect("fetch").expose_secret(),
            kek.expose_secret()
        );
        assert!(!again.is_backed_up());

        let backup = d.path().join("backup");
        assert!(p.backup(&backup, b"", FAST).is_err());
        p.backup(&backup, b"correct horse", FAST).expect("backup");
        assert!(
            NativeProvider::open("native", &ks)
                .expect("open")
                .is_backed_up()
        );

        let restored_path = d.path().join("restored.keystore");
        assert!(matches!(
            NativeProvider::restore("r", &backup, b"wrong", &restored_path),
            Err(Error::WrongPassphrase { .. })
        ));
        assert!(!restored_path.exists());
        let r = NativeProvider::restore("r", &backup, b"correct horse", &restored_path)
            .expect("restore");
        assert_eq!(
            r.fetch_kek(&id).expect("fetch").expose_secret(),
            kek.expose_secret()
        );

        // A tampered parameter breaks the seal.
        let text = std::fs::read_to_string(&backup)
            .expect("read")
            .replace("iterations = \"1\"", "iterations = \"2\"");
        let tampered = d.path().join("tampered");
        std::fs::write(&tampered, text).expect("write");
        assert!(
            NativeProvider::restore(
                "r",
                &tampered,
                b"correct horse",
                &d.path().join("t.keystore")
            )
            .is_err()
        );
    }

    #[test]
    fn a_backup_records_its_provider_and_the_seal_covers_the_name() {
        let d = tempfile::tempdir().expect("tempdir");
        let ks = d.path().join("k");
        let mut p = NativeProvider::create("site-a", &ks).expect("create");
        let (id, kek) = p.create_kek(&KeyPurpose::Disk("d".into())).expect("kek");
        let backup = d.path().join("backup");
        p.backup(&backup, b"correct horse", FAST).expect("backup");
        assert_eq!(
            NativeProvider::backup_info(&backup).expect("info"),
            BackupInfo {
                version: 2,
                provider: Some("site-a".into())
            }
        );
        // Renaming the provider in the file breaks the seal: the name cannot be swapped.
        let text = std::fs::read_to_string(&backup).expect("read");
        let renamed = d.path().join("renamed");
        std::fs::write(&renamed, text.replace("\"site-a\"", "\"site-b\"")).expect("write");
        assert_eq!(
            NativeProvider::backup_info(&renamed)
                .expect("info")
                .provider
                .as_deref(),
            Some("site-b")
        );
        assert!(matches!(
            NativeProvider::restore("x", &renamed, b"correct horse", &d.path().join("x.ks")),
            Err(Error::WrongPassphrase { .. })
        ));
        // A version 1 backup (no name; the seal without it) still restores.
        let mut s = Settings::read(&backup, Flavor::Vmx).expect("settings");
        let salt = B64
            .decode(s.get(&format!("{B_PREFIX}salt")).expect("salt"))
            .expect("b64");
        let nonce = [9u8; 12];
        let key = stretch(b"correct horse", &salt, FAST).expect("stretch");
        let ct = crate::wrap::aead_seal(
            &key,
            &nonce,
            &backup_aad(&FAST, &salt, None),
            p.kdk.expose_secret(),
        )
        .expect("seal");
        s.set(&format!("{B_PREFIX}version"), "1").expect("set");
        s.set(&format!("{B_PREFIX}nonce"), &B64.encode(nonce))
            .expect("set");
        s.set(&format!("{B_PREFIX}data"), &B64.encode(ct))
            .expect("set");
        let text = s
            .render()
            .replace(&format!("{B_PREFIX}provider = \"site-a\"\n"), "");
        let v1 = d.path().join("v1");
        std::fs::write(&v1, text).expect("write");
        assert_eq!(
            NativeProvider::backup_info(&v1).expect("info"),
            BackupInfo {
                version: 1,
                provider: None
            }
        );
        let r = NativeProvider::restore("site-a", &v1, b"correct horse", &d.path().join("r.ks"))
            .expect("restore a version 1 backup");
        assert_eq!(
            r.fetch_kek(&id).expect("fetch").expose_secret(),
            kek.expose_secret()
        );
        // An unknown version is refused with its number.
        let v9 = d.path().join("v9");
        std::fs::write(
            &v9,
            std::fs::read_to_string(&backup)
                .expect("read")
                .replace("version = \"2\"", "version = \"9\""),
        )
        .expect("write");
        let e = NativeProvider::backup_info(&v9).expect_err("version 9");
        assert!(e.to_string().contains("\"9\""), "{e}");
    }

    #[test]
    fn refuses_loose_permissions_and_garbage() {
        let d = tempfile::tempdir().expect("tempdir");
        let ks = d.path().join("k");
        NativeProvider::create("native", &ks).expect("create");
        std::fs::set_permissions(&ks, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            NativeProvider::open("native", &ks),
            Err(Error::Keystore { .. })
        ));
        std::fs::write(d.path().join("g"), "hello world\n").expect("write");
        std::fs::set_permissions(d.path().join("g"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        assert!(NativeProvider::open("native", &d.path().join("g")).is_err());
        assert!(matches!(
            NativeProvider::open("native", &d.path().join("missing")),
            Err(Error::Keystore { .. })
        ));
    }
}
