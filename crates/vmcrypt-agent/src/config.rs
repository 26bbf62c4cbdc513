//! The configuration file: which key providers exist and which is the default.
//!
//! ```toml
//! default = "native"
//! [providers.native]
//! type = "native"
//! keystore = "/root/.config/vmcrypt/keystores/native.keystore"
//!
//! [providers.site-a]
//! type = "kmip"
//! servers = ["kms-a.example:5696", "kms-b.example:5696", "kms-d.example:5696"]
//! ca = "/etc/vmcrypt/kms-ca.pem"
//! cert = "/etc/vmcrypt/client.pem"
//! key = "/etc/vmcrypt/client.key"
//! server_name = "kms.example"   # optional; default: each server's host
//! timeout = 60                   # seconds a server may take to answer
//! ```
//!
//! Location: `--config`, else `$VMCRYPT_CONFIG`, else for root `/etc/vmcrypt/config.toml`
//! (keystores under `/var/lib/vmcrypt/keystores`), else `$XDG_CONFIG_HOME/vmcrypt/config.toml`
//! or `~/.config/vmcrypt/config.toml`. Native keystores of any other file default to
//! `keystores/NAME.keystore` beside it, so one `--config` keeps a whole setup together.
//! Reading is strict ([`crate::config_parse`]): an unknown key or a bad value is an error
//! that names the key and its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{Error, Result};
use vmcrypt_kmip::provider::{KmipProvider, KmipSettings};

/// One configured provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ProviderConfig {
    /// The embedded provider and its keystore.
    Native {
        /// Keystore file.
        keystore: PathBuf,
    },
    /// A cluster of KMIP servers.
    Kmip(KmipConfig),
}

/// A KMIP cluster's settings as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmipConfig {
    /// host:port, in the order to try them.
    pub servers: Vec<String>,
    /// CA certificate(s) of the servers.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
    /// TLS server name, if not each server's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Response timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Hedge delay for Get in milliseconds (0: off).
    #[serde(default = "default_hedge_ms")]
    pub hedge_ms: u64,
    /// Seconds an unreachable server is tried last for Get (0: off).
    #[serde(default = "default_demote_secs")]
    pub demote_secs: u64,
    /// Keep connections for reuse.
    #[serde(default = "yes", rename = "reuse_connections")]
    pub reuse: bool,
}

fn default_timeout() -> u64 {
    vmcrypt_kmip::provider::DEFAULT_TIMEOUT.as_secs()
}

fn default_hedge_ms() -> u64 {
    vmcrypt_kmip::provider::DEFAULT_HEDGE.as_millis() as u64
}

fn default_demote_secs() -> u64 {
    vmcrypt_kmip::provider::DEFAULT_DEMOTE.as_secs()
}

fn yes() -> bool {
    true
}

/// The file as [`Config::save`] writes it. Loading is [`crate::config_parse`]'s, which refuses
/// every unknown key and names the key of every bad value.
#[derive(Debug, Serialize)]
struct FileForm {
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_log: Option<String>,
    providers: BTreeMap<String, ProviderConfig>,
}

impl KmipConfig {
    /// The library settings for provider `name`.
    pub fn settings(&self, name: &str) -> KmipSettings {
        KmipSettings::new(
            name,
            self.servers.clone(),
            self.ca.clone(),
            self.cert.clone(),
            self.key.clone(),
        )
        .server_name(self.server_name.clone())
        .timeout(std::time::Duration::from_secs(self.timeout))
        .hedge(Some(std::time::Duration::from_millis(self.hedge_ms)).filter(|d| !d.is_zero()))
        .demote(Some(std::time::Duration::from_secs(self.demote_secs)).filter(|d| !d.is_zero()))
        .reuse(self.reuse)
    }

    /// What the file's form cannot say: at least one server, a positive timeout.
    pub(crate) fn check(&self, name: &str) -> std::result::Result<(), String> {
        if self.servers.is_empty() {
            return Err(format!(
                "providers.{name}.servers must list host:port strings"
            ));
        }
        if self.timeout == 0 {
            return Err(format!(
                "providers.{name}.timeout must be a positive number of seconds"
            ));
        }
        Ok(())
    }
}

/// The provider a new key comes from, as [`Config::provider_for_new_key`] chose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeyProvider {
    /// Its name.
    pub name: String,
    /// When it was created just now (first use): its keystore, to be backed up.
    pub created: Option<PathBuf>,
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct Config {
    path: PathBuf,
    /// When set (`--agent`), providers are the agent's, reached through its socket.
    pub agent: Option<PathBuf>,
    /// Name of the default provider.
    pub default: Option<String>,
    /// Providers by name, in name order.
    pub providers: Vec<(String, ProviderConfig)>,
    /// Where key operations are recorded, as the file's `audit_log` says (a path, or
    /// `journald`); `--audit-log` and `VMCRYPT_AUDIT_LOG` come before it.
    pub audit_log: Option<String>,
    /// The open audit log: when set, every provider [`Config::open`] gives records its
    /// creates and fetches there.
    pub audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
    /// The file's bytes as loaded (None: it did not exist), so that a save can tell whether
    /// another command changed it in between.
    loaded: Option<Vec<u8>>,
}

/// The host's configuration, for root when neither `--config` nor `$VMCRYPT_CONFIG` names one.
pub const SYSTEM_CONFIG: &str = "/etc/vmcrypt/config.toml";

/// The host's state: native keystores of [`SYSTEM_CONFIG`] (`keystores/NAME.keystore`).
pub const SYSTEM_STATE: &str = "/var/lib/vmcrypt";

/// [`Config::locate`] with the environment and the user given, for tests.
fn locate_with(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    root: bool,
) -> Result<PathBuf> {
    // Absolute, so that keystore paths written into the file work from any directory.
    let abs = |p: PathBuf| {
        std::path::absolute(&p).map_err(|e| Error::Io {
            op: "resolve",
            path: p,
            source: e,
        })
    };
    // An empty variable counts as unset.
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty());
    if let Some(p) = flag {
        return abs(p.to_path_buf());
    }
    if let Some(p) = set(env("VMCRYPT_CONFIG")) {
        return abs(PathBuf::from(p));
    }
    if root {
        return Ok(PathBuf::from(SYSTEM_CONFIG));
    }
    let base = match set(env("XDG_CONFIG_HOME")) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(set(env("HOME")).ok_or_else(|| Error::InvalidInput {
            reason: "neither XDG_CONFIG_HOME nor HOME is set; use --config".into(),
        })?)
        .join(".config"),
    };
    abs(base.join("vmcrypt").join("config.toml"))
}

fn changed_meanwhile(path: &Path) -> Error {
    Error::InvalidInput {
        reason: format!(
            "{} was changed by another command while this one ran; nothing was saved: run the command again",
            path.display()
        ),
    }
}

impl Config {
    /// The config path: `--config`, else `$VMCRYPT_CONFIG`, else [`SYSTEM_CONFIG`] for root
    /// (a host service), else the user's `$XDG_CONFIG_HOME/vmcrypt/config.toml` (or
    /// `~/.config/...`).
    pub fn locate(flag: Option<&Path>) -> Result<PathBuf> {
        locate_with(
            flag,
            &|k| std::env::var_os(k),
            rustix::process::geteuid().is_root(),
        )
    }

    /// Loads the file, or an empty configuration if it does not exist yet.
    pub fn load(path: &Path) -> Result<Config> {
        let mut cfg = Config {
            path: path.to_path_buf(),
            agent: None,
            default: None,
            providers: Vec::new(),
            audit_log: None,
            audit: None,
            loaded: None,
        };
        // Non-blocking, regular files only, bounded: a FIFO or /dev/zero given as the config
        // is an error at once.
        let bytes = match vmcrypt_core::fsutil::read_bounded(path, vmcrypt_core::settings::MAX_SIZE)
        {
            Ok(b) => b,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(cfg);
            }
            Err(e) => return Err(e),
        };
        cfg.loaded = Some(bytes.clone());
        let text = String::from_utf8(bytes).map_err(|_| Error::InvalidSettings {
            path: path.to_path_buf(),
            line: None,
            reason: "not UTF-8 text".into(),
        })?;
        let form = crate::config_parse::parse(&text).map_err(|e| Error::InvalidSettings {
            path: path.to_path_buf(),
            line: e.line,
            reason: e.reason,
        })?;
        cfg.default = form.default;
        cfg.audit_log = form.audit_log;
        cfg.providers = form.providers;
        Ok(cfg)
    }

    /// Writes the file atomically, unless another command changed it since it was loaded:
    /// two provider commands at once must not silently drop each other's change. The file is
    /// locked while it is compared and replaced; a first file is created with link(2), so two
    /// first saves cannot both land.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the file changed meanwhile (nothing is written: run the
    /// command again); I/O errors.
    pub fn save(&mut self) -> Result<()> {
        let form = FileForm {
            default: self.default.clone(),
            audit_log: self.audit_log.clone(),
            providers: self.providers.iter().cloned().collect(),
        };
        let body = toml::to_string(&form).map_err(|e| Error::InvalidInput {
            reason: format!("cannot write the configuration: {e}"),
        })?;
        let dir = vmcrypt_core::fsutil::parent_dir(&self.path);
        vmcrypt_core::fsutil::create_private_dir(&dir)?;
        let text =
            format!("# vmcrypt configuration (written by vmcrypt; comments are not kept)\n{body}");
        let _lock = self.lock_for_save()?;
        let now = match vmcrypt_core::fsutil::read_bounded(
            &self.path,
            vmcrypt_core::settings::MAX_SIZE,
        ) {
            Ok(b) => Some(b),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if now != self.loaded {
            return Err(changed_meanwhile(&self.path));
        }
        match &self.loaded {
            Some(_) => vmcrypt_core::fsutil::write_atomic(&self.path, text.as_bytes(), 0o600)?,
            None => vmcrypt_core::fsutil::write_new(&self.path, text.as_bytes(), 0o600).map_err(
                |e| match e {
                    Error::Exists { .. } => changed_meanwhile(&self.path),
                    other => other,
                },
            )?,
        }
        self.loaded = Some(text.into_bytes());
        Ok(())
    }

    /// The config file's lock, waiting up to 10 s for another command to finish its save;
    /// none for a file that does not exist yet.
    fn lock_for_save(&self) -> Result<Option<vmcrypt_core::lock::DiskLock>> {
        use vmcrypt_core::lock::{Access, DiskLock};
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match DiskLock::acquire(&[(&self.path, Access::Write)]) {
                Ok(l) => return Ok(Some(l)),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(None);
                }
                Err(Error::InUse { .. }) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The config file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The default keystore path for a native provider: under [`SYSTEM_STATE`] for the
    /// host's configuration ([`SYSTEM_CONFIG`]: /etc is for settings, keys are state), else
    /// `keystores/` beside the file, so that one `--config` keeps a whole setup together.
    pub fn default_keystore(&self, name: &str) -> PathBuf {
        let dir = if self.path == Path::new(SYSTEM_CONFIG) {
            PathBuf::from(SYSTEM_STATE)
        } else {
            vmcrypt_core::fsutil::parent_dir(&self.path)
        };
        dir.join("keystores").join(format!("{name}.keystore"))
    }

    /// A provider's configuration by name.
    pub fn get(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// Opens a provider: the agent's when `--agent` is given, else a configured one; with an
    /// audit log, one whose every create and fetch is recorded.
    pub fn open(&self, name: &str) -> Result<Box<dyn KeyProvider>> {
        let p: Box<dyn KeyProvider> = match &self.agent {
            Some(socket) => Box::new(crate::AgentClient::new(socket).provider(name)),
            None => self.open_local(name)?,
        };
        Ok(match &self.audit {
            Some(log) => Box::new(crate::audit::Audited::new(
                std::sync::Arc::from(p),
                log.clone(),
            )),
            None => p,
        })
    }

    /// The registry of this configuration: each provider opened on first use and kept for
    /// the command (one KMIP connection pool, one memory of failed servers, for every disk).
    /// A provider this configuration does not name is looked for again in its file, which a
    /// long-running process (`vmcrypt serve`) may have seen gain it since it started.
    pub fn registry(&self) -> vmcrypt_core::provider::Registry {
        let cfg = self.clone();
        vmcrypt_core::provider::Registry::new(move |name: &str| {
            if cfg.agent.is_none()
                && cfg.get(name).is_none()
                && let Ok(fresh) = Config::load(&cfg.path)
            {
                return fresh.open(name).map(std::sync::Arc::from);
            }
            cfg.open(name).map(std::sync::Arc::from)
        })
    }

    /// Opens a configured provider, never through an agent.
    pub fn open_local(&self, name: &str) -> Result<Box<dyn KeyProvider>> {
        match self.get(name) {
            Some(ProviderConfig::Native { keystore }) => {
                Ok(Box::new(NativeProvider::open(name, keystore)?))
            }
            Some(ProviderConfig::Kmip(k)) => Ok(Box::new(KmipProvider::new(k.settings(name))?)),
            None => Err(Error::InvalidInput {
                reason: format!(
                    "key provider {name:?} is not configured in {} (add it with `vmcrypt provider add-native {name} --keystore FILE` or `provider restore`)",
                    self.path.display()
                ),
            }),
        }
    }

    /// The provider for a new key: the one named, else the default, else (no provider
    /// configured, no agent) a native provider `native` created on the spot and saved as the
    /// default. Callers check their request first, so that a request that would fail leaves no
    /// provider behind.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when providers exist but none is named or the default; the
    /// errors of creating the keystore and saving the file.
    pub fn provider_for_new_key(&mut self, name: Option<&str>) -> Result<NewKeyProvider> {
        if let Some(n) = name.map(str::to_string).or_else(|| self.default.clone()) {
            return Ok(NewKeyProvider {
                name: n,
                created: None,
            });
        }
        if !self.providers.is_empty() || self.agent.is_some() {
            return Err(Error::input(
                "no default key provider: pass --provider NAME or run `vmcrypt provider default NAME`",
            ));
        }
        let name = "native";
        let ks = self.default_keystore(name);
        NativeProvider::create(name, &ks)?;
        self.providers.push((
            name.into(),
            ProviderConfig::Native {
                keystore: ks.clone(),
            },
        ));
        self.default = Some(name.into());
        self.save()?;
        Ok(NewKeyProvider {
            name: name.into(),
            created: Some(ks),
        })
    }

    /// Validates a provider name (it is written into keySafes and file names).
    pub fn check_name(name: &str) -> Result<()> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidInput {
                reason: format!("provider name {name:?} must be 1-64 letters, digits, '-' or '_'"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write");
        Config::load(&path)
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_line() {
        let kmip = "[providers.k]\ntype = \"kmip\"\nservers = [\"a:5696\"]\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";
        assert!(load(kmip).is_ok());
        for (text, needle, line) in [
            (format!("{kmip}servrs = [\"b:5696\"]\n"), "servrs", Some(7)),
            ("defualt = \"k\"\n".to_string(), "defualt", Some(1)),
            (
                "[providers.n]\ntype = \"native\"\nkeystore = \"x\"\nkeystor = \"y\"\n".to_string(),
                "keystor",
                None,
            ),
            (
                "[providers.n]\ntype = \"vault\"\n".to_string(),
                "vault",
                None,
            ),
            (kmip.replace("[\"a:5696\"]", "[]"), "must list", None),
            (format!("{kmip}timeout = 0\n"), "positive", None),
            (format!("{kmip}timeout = -1\n"), "-1", None),
        ] {
            match load(&text) {
                Err(Error::InvalidSettings {
                    reason, line: l, ..
                }) => {
                    assert!(reason.contains(needle), "{needle}: {reason}");
                    if line.is_some() {
                        assert_eq!(l, line, "{needle}: {reason}");
                    }
                }
                other => panic!("{needle}: {other:?}"),
            }
        }
    }

    #[test]
    fn root_gets_the_host_config_and_users_their_own() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let user = env(&[("HOME", "/home/op"), ("XDG_CONFIG_HOME", "")]);
        let xdg = env(&[("HOME", "/home/op"), ("XDG_CONFIG_HOME", "/x")]);
        let named = env(&[("HOME", "/root"), ("VMCRYPT_CONFIG", "/srv/v.toml")]);
        let at = |flag: Option<&str>, e: &dyn Fn(&str) -> Option<std::ffi::OsString>, root| {
            locate_with(flag.map(Path::new), e, root).expect("located")
        };
        assert_eq!(at(None, &user, true), Path::new(SYSTEM_CONFIG));
        assert_eq!(at(None, &xdg, true), Path::new(SYSTEM_CONFIG));
        assert_eq!(
            at(None, &user, false),
            Path::new("/home/op/.config/vmcrypt/config.toml")
        );
        assert_eq!(at(None, &xdg, false), Path::new("/x/vmcrypt/config.toml"));
        assert_eq!(at(None, &named, true), Path::new("/srv/v.toml"));
        assert_eq!(at(Some("/f.toml"), &named, true), Path::new("/f.toml"));
        let none = |_: &str| None;
        assert!(locate_with(None, &none, false).is_err());
        // Keys are state: the host's keystores under /var/lib, anyone else's beside the file.
        let mut host = Config::load(Path::new("/nonexistent/dir/config.toml")).expect("empty");
        assert_eq!(
            host.default_keystore("n"),
            Path::new("/nonexistent/dir/keystores/n.keystore")
        );
        host.path = PathBuf::from(SYSTEM_CONFIG);
        assert_eq!(
            host.default_keystore("n"),
            Path::new("/var/lib/vmcrypt/keystores/n.keystore")
        );
    }

    #[test]
    fn a_saved_file_loads_back_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let mut cfg = Config::load(&path).expect("empty");
        cfg.default = Some("k".into());
        cfg.audit_log = Some("/var/log/vmcrypt/audit.jsonl".into());
        cfg.providers.push((
            "k".into(),
            ProviderConfig::Kmip(KmipConfig {
                servers: vec!["a:5696".into(), "b:5696".into()],
                ca: "ca.pem".into(),
                cert: "c.pem".into(),
                key: "k.pem".into(),
                server_name: Some("kms".into()),
                timeout: 7,
                hedge_ms: 0,
                demote_secs: 30,
                reuse: false,
            }),
        ));
        cfg.providers.push((
            "n".into(),
            ProviderConfig::Native {
                keystore: "n.keystore".into(),
            },
        ));
        cfg.save().expect("save");
        let back = Config::load(&path).expect("load");
        assert_eq!(back.default, cfg.default);
        assert_eq!(back.audit_log, cfg.audit_log);
        assert_eq!(back.providers, cfg.providers);
    }
}
