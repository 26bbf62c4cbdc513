//! One module per verb; helpers shared by the verbs below.

pub mod agent;
pub mod check;
pub mod disk;
pub mod generate;
pub mod inspect;
pub mod online;
pub mod provider;
pub mod recover;
pub mod serve;
pub mod topology;
pub mod vm;

use vmcrypt_core::{Result, Tuning};

use crate::cli::Cli;
use crate::output::Out;
use vmcrypt_agent::config::Config;

/// Loads the configuration named by the flags (with `--agent`, providers are the agent's).
pub fn load_config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::load(&Config::locate(cli.config.as_deref())?)?;
    cfg.agent.clone_from(&cli.agent);
    Ok(cfg)
}

/// The tuning of in-place jobs from the environment (checked by [`crate::environment`]):
/// `VMCRYPT_CHUNK_BYTES` (chunk and window size, a multiple of 4096) and
/// `VMCRYPT_INPLACE_ENGINE=journal` (the journaled engine for every job). Testing and
/// comparison knobs (docs/cli.md).
pub fn tuning() -> Tuning {
    Tuning::default()
        .chunk(crate::environment::chunk_bytes())
        .journal_only(crate::environment::journal_only())
}

/// The name of the provider for a new key ([`Config::provider_for_new_key`]); the operator is
/// told about a provider created on first use, and to back it up.
pub fn provider_for_new_key(cfg: &mut Config, name: Option<&str>, out: &Out) -> Result<String> {
    let p = cfg.provider_for_new_key(name)?;
    if let Some(ks) = &p.created {
        out.note(&format!(
            "vmcrypt: created the native key provider \"{}\" (keystore {}, config {}).\n\
             vmcrypt: back it up now: without it the disks it protects cannot be decrypted:\n\
             vmcrypt:     vmcrypt provider backup {} --out {}-backup.vmcrypt",
            p.name,
            ks.display(),
            cfg.path().display(),
            p.name,
            p.name
        ));
    }
    Ok(p.name)
}
