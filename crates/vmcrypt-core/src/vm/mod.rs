//! Whole VMs: the `.vmx` file and every disk it references.
//!
//! An encrypted VMX carries, in clear, only what is needed to find and identify the VM and its
//! disks (see [`stays_in_clear`]); every other entry moves into `encryption.data`, sealed with
//! the VM configuration key, which is wrapped under the VM's KEK in `encryption.keySafe`. Each
//! disk has its own DEK wrapped under the same KEK in its descriptor. Metadata in the VMX:
//!
//! ```text
//! encryption.keySafe = "vmware:key/list/(pair/(fqid/<VMWARE-NULL>/PROVIDER/KEYID,AES%2d256%2dGCM,...))"
//! encryption.data = "BASE64(nonce || AES-256-GCM(config key, moved lines))"
//! vmcrypt.version = "1"
//! vmcrypt.vmUuid = "..."          # bound into every keySafe of the VM
//! vmcrypt.keyGeneration = "1"     # bound too; the disks must agree
//! vmcrypt.rekeyGeneration = "2"   # only while a shallow rekey is under way
//! vmcrypt.state = "encrypted"     # or encrypting / decrypting while a VM job runs
//! ```

mod decrypt;
mod encrypt;
mod inspect;
mod job;
mod keys;
mod rekey;
mod resume;
mod served;

pub use inspect::{VmDiskInfo, VmInfo, vm_inspect};
pub use job::{VmJob, lock_vm};
pub use served::ServedDisks;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::locator::KeyLocator;
use crate::secret::{ConfigKey, random_fill};
use crate::settings::{Flavor, Settings};
use crate::wrap::{aead_open, aead_seal};
use crate::{Error, Result};

/// The VMX key holding the VM keySafe.
pub const VMX_KEYSAFE: &str = "encryption.keySafe";
/// The VMX key holding the sealed entries.
pub const VMX_DATA: &str = "encryption.data";
const PREFIX: &str = "vmcrypt.";
const DATA_AAD: &[u8] = b"vmcrypt vm data\0";
const BLOB_MAGIC: &[u8; 4] = b"VMCD";

/// Entries of an encrypted VMX that stay readable, and why:
/// - `.encoding`, `config.version`, `virtualHW.version`: needed to parse the file at all;
/// - `displayName`, `guestOS`, `uuid.bios`, `uuid.location`, `vc.uuid`: how operators and the
///   inventory find and identify the VM;
/// - controller and disk entries (`scsiN...`, `sataN...`, `nvmeN...`, `ideN...`): where the
///   disks are, needed to open them (each disk carries its own keySafe);
/// - `encryption.*`, `vmcrypt.*`: the encryption metadata itself.
///
/// Everything else (annotations, network addresses, guestinfo, tools settings, serial and
/// parallel port targets, shared folders, ...) is sealed into `encryption.data`.
pub fn stays_in_clear(key: &str) -> bool {
    const EXACT: &[&str] = &[
        ".encoding",
        "config.version",
        "virtualhw.version",
        "displayname",
        "guestos",
        "uuid.bios",
        "uuid.location",
        "vc.uuid",
    ];
    let k = key.to_ascii_lowercase();
    EXACT.contains(&k.as_str())
        || k.starts_with("encryption.")
        || k.starts_with(PREFIX)
        || disk_device(&k).is_some()
}

/// For `scsi0:1.fileName` and kin: the controller kind, else None. Controller entries
/// (`scsi0.present`) count too.
fn disk_device(k: &str) -> Option<&'static str> {
    for kind in ["scsi", "sata", "nvme", "ide"] {
        if let Some(rest) = k.strip_prefix(kind) {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && matches!(rest.as_bytes().get(digits), Some(b'.') | Some(b':')) {
                return Some(kind);
            }
        }
    }
    None
}

/// A disk a VMX references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The VMX key (`scsi0:0.fileName`).
    pub key: String,
    /// The descriptor path.
    pub path: PathBuf,
}

/// State of a VM job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmState {
    /// Every disk encrypted.
    Encrypted,
    /// `vm encrypt` started and did not finish (run it again, or `vm decrypt`).
    Encrypting,
    /// `vm decrypt` started and did not finish (run it again).
    Decrypting,
}

impl VmState {
    /// The name in the VMX.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Encrypted => "encrypted",
            VmState::Encrypting => "encrypting",
            VmState::Decrypting => "decrypting",
        }
    }
}

/// The clear encryption metadata of a VMX.
#[derive(Debug, Clone)]
pub struct VmMeta {
    /// The VM's vmcrypt uuid.
    pub vm_uuid: String,
    /// Key generation.
    pub generation: u64,
    /// Generation of the new wrapping while a shallow rekey is under way.
    pub rekey_generation: Option<u64>,
    /// `encryption.keySafe`.
    pub key_safe: KeyLocator,
    /// Job state.
    pub state: VmState,
}

/// An opened VMX.
#[derive(Debug, Clone)]
pub struct Vm {
    path: PathBuf,
    settings: Settings,
    meta: Option<VmMeta>,
    disks: Vec<VmDisk>,
}

impl Vm {
    /// Reads a VMX, its metadata and its disk list.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::InvalidSettings`].
    pub fn open(path: &Path) -> Result<Vm> {
        let settings = Settings::read(path, Flavor::Vmx)?;
        let meta = read_meta(&settings, path)?;
        let disks = find_disks(&settings, path);
        let mut seen: Vec<(PathBuf, &str)> = Vec::new();
        for d in &disks {
            if !d.path.exists() {
                continue;
            }
            crate::disk::check_inside_folder(&d.path, path)?;
            // The same disk under two names (name, ./name, an absolute path, a symlink) would
            // be encrypted twice, and then decrypt to noise.
            let real = d
                .path
                .canonicalize()
                .map_err(Error::io("resolve", &d.path))?;
            if let Some((_, first)) = seen.iter().find(|(p, _)| *p == real) {
                return Err(Error::settings(
                    path,
                    None,
                    format!(
                        "{} and {} name the same disk {}",
                        first,
                        d.key,
                        real.display()
                    ),
                ));
            }
            seen.push((real, &d.key));
        }
        Ok(Vm {
            path: path.to_path_buf(),
            settings,
            meta,
            disks,
        })
    }

    /// The VMX path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The encryption metadata, if the VM is (being) encrypted.
    pub fn meta(&self) -> Option<&VmMeta> {
        self.meta.as_ref()
    }

    /// The disks the VMX references (VMDK descriptors; CD images are skipped).
    pub fn disks(&self) -> &[VmDisk] {
        &self.disks
    }

    /// Writes the metadata (atomically, durably).
    pub(crate) fn write_meta(&mut self, m: &VmMeta) -> Result<()> {
        self.settings.set(VMX_KEYSAFE, &m.key_safe.render())?;
        self.settings.set(&format!("{PREFIX}version"), "1")?;
        self.settings.set(&format!("{PREFIX}vmUuid"), &m.vm_uuid)?;
        self.settings
            .set(&format!("{PREFIX}keyGeneration"), &m.generation.to_string())?;
        match m.rekey_generation {
            Some(g) => self
                .settings
                .set(&format!("{PREFIX}rekeyGeneration"), &g.to_string())?,
            None => {
                self.settings.remove(&format!("{PREFIX}rekeyGeneration"));
            }
        }
        self.settings
            .set(&format!("{PREFIX}state"), m.state.as_str())?;
        self.save()?;
        self.meta = Some(m.clone());
        Ok(())
    }

    fn save(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        self.settings.check_room(&self.path, 0)?;
        let mode = std::fs::metadata(&self.path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        crate::fsutil::write_atomic(&self.path, self.settings.render().as_bytes(), mode)
    }

    /// Moves every entry that does not stay in clear out of the VMX and seals it, with the
    /// information needed to put each line back where it was.
    pub(crate) fn seal_config(&mut self, key: &ConfigKey, vm_uuid: &str) -> Result<()> {
        let mut blob = Zeroizing::new(Vec::new());
        blob.extend_from_slice(BLOB_MAGIC);
        blob.push(1);
        blob.push(u8::from(self.settings.ends_with_newline()));
        let mut moved = Vec::new();
        let mut i = 0;
        let mut original_index = 0u32;
        while i < self.settings.line_count() {
            let take = self
                .settings
                .line_key(i)
                .is_some_and(|k| !stays_in_clear(k));
            if take {
                let (text, eol) = self
                    .settings
                    .take_line(i)
                    .ok_or_else(|| Error::input("line vanished"))?;
                moved.push((original_index, Zeroizing::new(text), eol));
            } else {
                i += 1;
            }
            original_index += 1;
        }
        blob.extend_from_slice(&(moved.len() as u32).to_be_bytes());
        for (idx, text, eol) in &moved {
            blob.extend_from_slice(&idx.to_be_bytes());
            blob.extend_from_slice(&(text.len() as u32).to_be_bytes());
            blob.extend_from_slice(text.as_bytes());
            blob.push(match *eol {
                "\n" => 1,
                "\r\n" => 2,
                _ => 0,
            });
        }
        let mut nonce = [0u8; 12];
        random_fill(&mut nonce)?;
        let mut sealed = nonce.to_vec();
        sealed.extend(aead_seal(
            key.expose_secret(),
            &nonce,
            &data_aad(vm_uuid),
            &blob,
        )?);
        self.settings.set(VMX_DATA, &B64.encode(sealed))
    }

    /// Opens `encryption.data`: checks it (tamper => [`Error::UnwrapFailed`]) and returns the
    /// sealed lines with their original positions, and whether the file ended in a newline.
    pub(crate) fn open_config(&self, key: &ConfigKey, vm_uuid: &str) -> Result<SealedLines> {
        let data = self
            .settings
            .get(VMX_DATA)
            .ok_or_else(|| Error::settings(&self.path, None, format!("missing {VMX_DATA}")))?;
        let raw = B64.decode(data).map_err(|_| Error::UnwrapFailed)?;
        if raw.len() < 12 + 16 {
            return Err(Error::UnwrapFailed);
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: &[u8; 12] = nonce.try_into().map_err(|_| Error::UnwrapFailed)?;
        let blob = aead_open(key.expose_secret(), nonce, &data_aad(vm_uuid), ct)?;
        parse_blob(&blob).ok_or(Error::UnwrapFailed)
    }

    /// Puts the sealed lines back and removes the encryption metadata.
    pub(crate) fn restore_config(&mut self, lines: &SealedLines) -> Result<()> {
        self.settings.remove(VMX_KEYSAFE);
        self.settings.remove(VMX_DATA);
        self.settings.remove_prefix(PREFIX);
        for (idx, text, eol) in &lines.lines {
            let at = (*idx as usize).min(self.settings.line_count());
            self.settings.insert_line(at, text, eol)?;
        }
        if lines.final_newline {
            if !self.settings.ends_with_newline() {
                // The file ended in a newline: the last line gets one back.
                let n = self.settings.line_count();
                if let Some((text, _)) = self.settings.take_line(n - 1) {
                    self.settings.insert_line(n - 1, &text, "\n")?;
                }
            }
        } else {
            self.settings.strip_final_newline();
        }
        self.save()?;
        self.meta = None;
        Ok(())
    }
}

/// Lines sealed in `encryption.data`.
pub(crate) struct SealedLines {
    lines: Vec<(u32, Zeroizing<String>, &'static str)>,
    final_newline: bool,
}

fn data_aad(vm_uuid: &str) -> Vec<u8> {
    let mut a = DATA_AAD.to_vec();
    a.extend_from_slice(vm_uuid.as_bytes());
    a
}

fn parse_blob(b: &[u8]) -> Option<SealedLines> {
    let mut p = b.strip_prefix(BLOB_MAGIC.as_slice())?;
    let take = |p: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        let (h, t) = (p.get(..n)?, p.get(n..)?);
        *p = t;
        Some(h.to_vec())
    };
    let u32_at = |p: &mut &[u8]| -> Option<u32> {
        take(p, 4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    };
    if take(&mut p, 1)? != [1] {
        return None;
    }
    let final_newline = take(&mut p, 1)?[0] == 1;
    let count = u32_at(&mut p)?;
    let mut lines = Vec::new();
    for _ in 0..count {
        let idx = u32_at(&mut p)?;
        let len = u32_at(&mut p)? as usize;
        let text = Zeroizing::new(String::from_utf8(take(&mut p, len)?).ok()?);
        let eol = match take(&mut p, 1)?[0] {
            0 => "",
            1 => "\n",
            2 => "\r\n",
            _ => return None,
        };
        lines.push((idx, text, eol));
    }
    p.is_empty().then_some(SealedLines {
        lines,
        final_newline,
    })
}

fn read_meta(s: &Settings, path: &Path) -> Result<Option<VmMeta>> {
    let Some(ks) = s.get(VMX_KEYSAFE) else {
        return Ok(None);
    };
    let get = |k: &str| {
        s.get(&format!("{PREFIX}{k}"))
            .ok_or_else(|| Error::settings(path, None, format!("missing {PREFIX}{k}")))
    };
    let num = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .map_err(|_| Error::settings(path, None, format!("{PREFIX}{k} is not a number")))
    };
    if get("version")? != "1" {
        return Err(Error::Unsupported {
            what: format!("vmcrypt VM metadata version {:?}", get("version")?),
        });
    }
    let state = match get("state")? {
        "encrypted" => VmState::Encrypted,
        "encrypting" => VmState::Encrypting,
        "decrypting" => VmState::Decrypting,
        _ => {
            return Err(Error::settings(
                path,
                None,
                format!("unknown {PREFIX}state"),
            ));
        }
    };
    Ok(Some(VmMeta {
        vm_uuid: get("vmUuid")?.to_string(),
        generation: num("keyGeneration")?,
        rekey_generation: match s.get(&format!("{PREFIX}rekeyGeneration")) {
            Some(_) => Some(num("rekeyGeneration")?),
            None => None,
        },
        key_safe: KeyLocator::parse(ks)?,
        state,
    }))
}

/// An encrypted (or encrypting) VM in `disk`'s folder whose VMX lists `disk`, if any. Looks
/// at no more than 64 `.vmx` files; unreadable ones are skipped.
pub(crate) fn encrypted_vm_listing(disk: &Path) -> Option<PathBuf> {
    let real = disk.canonicalize().ok()?;
    let dir = crate::fsutil::parent_dir(disk);
    std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("vmx")))
        .take(64)
        .find(|vmx| {
            Vm::open(vmx).is_ok_and(|vm| {
                vm.meta().is_some()
                    && vm
                        .disks()
                        .iter()
                        .any(|d| d.path.canonicalize().is_ok_and(|p| p == real))
            })
        })
}

fn find_disks(s: &Settings, vmx: &Path) -> Vec<VmDisk> {
    let dir = crate::fsutil::parent_dir(vmx);
    s.entries()
        .filter_map(|(k, v)| {
            let lk = k.to_ascii_lowercase();
            let device = lk.strip_suffix(".filename")?;
            disk_device(&lk)?;
            if !device.contains(':') || !v.to_ascii_lowercase().ends_with(".vmdk") {
                return None;
            }
            let kind = s
                .get(&format!("{device}.deviceType"))
                .unwrap_or("")
                .to_ascii_lowercase();
            if kind.contains("cdrom") {
                return None;
            }
            let p = Path::new(v);
            Some(VmDisk {
                key: k.to_string(),
                path: if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    dir.join(p)
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_list() {
        for k in [
            "displayName",
            "scsi0:0.fileName",
            "sata0.present",
            "nvme0:1.present",
            "encryption.keySafe",
            "uuid.bios",
            ".encoding",
        ] {
            assert!(stays_in_clear(k), "{k}");
        }
        for k in [
            "annotation",
            "ethernet0.generatedAddress",
            "guestinfo.secret",
            "scsiX.bogus",
            "sched.mem.min",
            "tools.syncTime",
        ] {
            assert!(!stays_in_clear(k), "{k}");
        }
    }

    #[test]
    fn blob_parser_rejects_garbage() {
        assert!(parse_blob(b"").is_none());
        assert!(parse_blob(b"VMCD\x01\x01\x00\x00\x00\x01").is_none());
        assert!(parse_blob(b"VMCD\x02\x01\x00\x00\x00\x00").is_none());
        let ok = parse_blob(b"VMCD\x01\x00\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00\x01a\x01")
            .expect("valid");
        assert_eq!(ok.lines.len(), 1);
        assert!(
            parse_blob(b"VMCD\x01\x00\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00\x01a\x01extra")
                .is_none()
        );
    }
}
