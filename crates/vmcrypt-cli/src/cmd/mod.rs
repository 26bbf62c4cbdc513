//! One module per verb; helpers shared by the verbs below.

pub mod agent;
pub mod check;
pub mod disk;
pub mod inspect;
pub mod provider;
pub mod recover;
pub mod topology;
pub mod vm;

use vmcrypt_core::Result;
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;

use crate::cli::Cli;
use crate::config::{Config, ProviderConfig};
use crate::output::Out;

/// Loads the configuration named by the flags.
/// Loads the configuration named by the flags (with `--agent`, providers are the agent's).
pub fn load_config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::load(&Config::locate(cli.config.as_deref())?)?;
    cfg.agent.clone_from(&cli.agent);
    Ok(cfg)
}

/// The provider for a new key: the one named, else the default, else a native provider created
/// on the spot (first use), which the operator is told about.
pub fn provider_for_new_key(
    cfg: &mut Config,
    name: Option<&str>,
    out: &Out,
) -> Result<Box<dyn KeyProvider>> {
    if let Some(n) = name {
        return cfg.open(n);
    }
    if let Some(d) = cfg.default.clone() {
        return cfg.open(&d);
    }
    if cfg.providers.is_empty() && cfg.agent.is_none() {
        let name = "native";
        let ks = cfg.default_keystore(name);
        let p = NativeProvider::create(name, &ks)?;
        cfg.providers.push((
            name.into(),
            ProviderConfig::Native {
                keystore: ks.clone(),
            },
        ));
        cfg.default = Some(name.into());
        cfg.save()?;
        out.note(&format!(
            "vmcrypt: created the native key provider \"native\" (keystore {}, config {}).\n\
             vmcrypt: back it up now: without it the disks it protects cannot be decrypted:\n\
             vmcrypt:     vmcrypt provider backup native --out native-backup.vmcrypt",
            ks.display(),
            cfg.path().display()
        ));
        return Ok(Box::new(p));
    }
    Err(vmcrypt_core::Error::InvalidInput {
        reason:
            "no default key provider: pass --provider NAME or run `vmcrypt provider default NAME`"
                .into(),
    })
}
