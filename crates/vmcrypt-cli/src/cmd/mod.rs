//! One module per verb; helpers shared by the verbs below.

pub mod agent;
pub mod check;
pub mod disk;
pub mod fleet;
pub mod generate;
pub mod inspect;
pub mod online;
pub mod provider;
pub mod recover;
pub mod serve;
pub mod topology;
pub mod vm;

use std::sync::Arc;

use vmcrypt_agent::audit::{AuditLog, Record, Target};
use vmcrypt_core::{Result, Tuning};

use crate::cli::Cli;
use crate::output::Out;
use vmcrypt_agent::config::Config;

/// Loads the configuration named by the flags (with `--agent`, providers are the agent's),
/// with the audit log open when one is set: every provider it opens is audited.
pub fn load_config(cli: &Cli) -> Result<Config> {
    let mut cfg = Config::load(&Config::locate(cli.config.as_deref())?)?;
    cfg.agent.clone_from(&cli.agent);
    cfg.audit = audit_log(cli, Some(&cfg))?;
    Ok(cfg)
}

static AUDIT: std::sync::OnceLock<Arc<AuditLog>> = std::sync::OnceLock::new();

/// The process's audit log: `--audit-log` (or `VMCRYPT_AUDIT_LOG`), else the config's
/// `audit_log`; opened once, on first need, so that a log that cannot be opened stops the
/// command before it changes anything.
///
/// # Errors
/// What opening the log returned.
pub fn audit_log(cli: &Cli, cfg: Option<&Config>) -> Result<Option<Arc<AuditLog>>> {
    if let Some(log) = AUDIT.get() {
        return Ok(Some(log.clone()));
    }
    let Some(target) = cli
        .audit_log
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| cfg.and_then(|c| c.audit_log.clone()))
    else {
        return Ok(None);
    };
    let log = AuditLog::open(&Target::parse(&target))?;
    Ok(Some(AUDIT.get_or_init(|| log).clone()))
}

/// The record of a command that is a key operation in itself (a rekey, a backup, a
/// restore, a key revealed, cached keys forgotten), with how it ended; None for the others,
/// whose key operations the providers record.
pub fn command_record<T>(cli: &Cli, r: &Result<T>) -> Option<Record> {
    use crate::cli::{AgentCmd, Command, ProviderCmd, RecoverCmd, VmCmd};
    let path = |p: &std::path::Path| p.display().to_string();
    let rec = match &cli.command {
        Command::Rekey(a) => Record::new("rekey")
            .with("disk", path(&a.disk))
            .with("depth", if a.depth.deep { "deep" } else { "shallow" }),
        Command::Vm(VmCmd::Rekey { vmx, depth, .. }) => Record::new("rekey")
            .with(
                "vmx",
                vmx.iter().map(|p| path(p)).collect::<Vec<_>>().join(" "),
            )
            .with("depth", if depth.deep { "deep" } else { "shallow" }),
        Command::Provider(ProviderCmd::Backup { name, out, .. }) => Record::new("backup")
            .with("provider", name.as_str())
            .with("file", path(out)),
        Command::Provider(ProviderCmd::Restore { file, name, .. }) => {
            let rec = Record::new("restore").with("file", path(file));
            match name {
                Some(n) => rec.with("provider", n.as_str()),
                None => rec,
            }
        }
        Command::Recover(RecoverCmd::DmTable { disk, .. }) => {
            Record::new("reveal-key").with("disk", path(disk))
        }
        Command::Agent(AgentCmd::Forget {
            provider, key_id, ..
        }) => Record::new("forget")
            .with("provider", provider.clone().unwrap_or_default())
            .with("key_id", key_id.clone().unwrap_or_default()),
        _ => return None,
    };
    Some(rec.result(r))
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
