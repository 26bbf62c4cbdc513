//! `provider ...`: add, list, choose, remove, back up and restore key providers.

use serde_json::json;
use vmcrypt_core::provider::native::{BackupParams, NativeProvider};
use vmcrypt_core::{Error, Result};

use super::load_config;
use crate::cli::{Cli, ProviderCmd};
use crate::output::Out;
use crate::passphrase;
use vmcrypt_agent::config::{Config, KmipConfig, ProviderConfig};
use vmcrypt_kmip::provider::KmipProvider;

pub fn run(cli: &Cli, cmd: &ProviderCmd, out: &Out) -> Result<()> {
    let mut cfg = load_config(cli)?;
    match cmd {
        ProviderCmd::AddNative { name, keystore } => {
            Config::check_name(name)?;
            if cfg.get(name).is_some() {
                return Err(Error::InvalidInput {
                    reason: format!("provider {name:?} already exists"),
                });
            }
            let ks = keystore
                .clone()
                .unwrap_or_else(|| cfg.default_keystore(name));
            let created = !ks.exists();
            let p = if created {
                NativeProvider::create(name, &ks)?
            } else {
                NativeProvider::open(name, &ks)?
            };
            cfg.providers.push((
                name.clone(),
                ProviderConfig::Native {
                    keystore: ks.clone(),
                },
            ));
            if cfg.default.is_none() {
                cfg.default = Some(name.clone());
            }
            cfg.save()?;
            let verb = if created {
                "created"
            } else {
                "registered existing"
            };
            if !p.is_backed_up() {
                out.note(&format!(
                    "vmcrypt: back it up now: vmcrypt provider backup {name} --out FILE"
                ));
            }
            out.result(
                &format!("{verb} native provider {name} (keystore {})", ks.display()),
                json!({"provider": name, "type": "native", "keystore": ks, "created": created}),
            );
        }
        ProviderCmd::AddKmip(a) => {
            Config::check_name(&a.name)?;
            if cfg.get(&a.name).is_some() {
                return Err(Error::InvalidInput {
                    reason: format!("provider {:?} already exists", a.name),
                });
            }
            let abs =
                |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            let k = KmipConfig {
                servers: a.server.clone(),
                ca: abs(&a.ca),
                cert: abs(&a.cert),
                key: abs(&a.key),
                server_name: a.server_name.clone(),
                timeout: a.timeout,
                hedge_ms: a.hedge_ms,
                demote_secs: a.demote_secs,
                reuse: !a.no_reuse,
            };
            // Loads the TLS files and checks every address before anything is saved.
            KmipProvider::new(k.settings(&a.name)).map_err(vmcrypt_core::Error::from)?;
            // A name this host cannot resolve now is likely a typo: say so, but save it (DNS
            // may come later, and the order is the operator's).
            let unresolved = unresolved_servers(&k.servers);
            for (server, why) in &unresolved {
                tracing::warn!(
                    "server {server} of provider {} does not resolve on this host ({why}); check the name, or this host's DNS",
                    a.name
                );
            }
            cfg.providers
                .push((a.name.clone(), ProviderConfig::Kmip(k.clone())));
            if cfg.default.is_none() {
                cfg.default = Some(a.name.clone());
            }
            cfg.save()?;
            out.result(
                &format!(
                    "added KMIP provider {} with {} server(s), tried in this order: {}; check it with `vmcrypt provider check {}`",
                    a.name,
                    k.servers.len(),
                    k.servers.join(", "),
                    a.name
                ),
                json!({"provider": a.name, "type": "kmip", "servers": k.servers, "timeout": k.timeout,
                       "unresolved": unresolved.iter().map(|(s, _)| s).collect::<Vec<_>>()}),
            );
        }
        ProviderCmd::Check { name, replication } => {
            return super::check::run(&cfg, name, *replication, out);
        }
        ProviderCmd::List => {
            let mut lines = Vec::new();
            let mut docs = Vec::new();
            for (name, p) in &cfg.providers {
                let is_default = cfg.default.as_deref() == Some(name);
                match p {
                    ProviderConfig::Native { keystore } => {
                        let status = match NativeProvider::open(name, keystore) {
                            Ok(n) if n.is_backed_up() => "ok, backed up".to_string(),
                            Ok(_) => "ok, NOT BACKED UP".to_string(),
                            Err(e) => format!("unusable: {e}"),
                        };
                        lines.push(format!(
                            "{}{name}\tnative\t{}\t{status}",
                            if is_default { "* " } else { "  " },
                            keystore.display()
                        ));
                        docs.push(json!({"name": name, "type": "native", "keystore": keystore, "default": is_default, "status": status}));
                    }
                    ProviderConfig::Kmip(k) => {
                        lines.push(format!(
                            "{}{name}	kmip	{}	timeout {} s",
                            if is_default { "* " } else { "  " },
                            k.servers.join(","),
                            k.timeout
                        ));
                        docs.push(json!({"name": name, "type": "kmip", "servers": k.servers, "default": is_default, "timeout": k.timeout}));
                    }
                }
            }
            if lines.is_empty() {
                lines.push(format!(
                    "no providers in {} (the first `encrypt` creates \"native\")",
                    cfg.path().display()
                ));
            }
            out.result(&lines.join("\n"), json!({"providers": docs}));
        }
        ProviderCmd::Default { name } => {
            if cfg.get(name).is_none() {
                return Err(Error::InvalidInput {
                    reason: format!("no provider named {name:?}"),
                });
            }
            cfg.default = Some(name.clone());
            cfg.save()?;
            out.result(
                &format!("default provider is now {name}"),
                json!({"default": name}),
            );
        }
        ProviderCmd::Remove { name } => {
            let before = cfg.providers.len();
            let removed = cfg
                .providers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| p.clone());
            cfg.providers.retain(|(n, _)| n != name);
            if cfg.providers.len() == before {
                return Err(Error::InvalidInput {
                    reason: format!("no provider named {name:?}"),
                });
            }
            if cfg.default.as_deref() == Some(name) {
                cfg.default = None;
            }
            cfg.save()?;
            let kept = match removed {
                Some(ProviderConfig::Native { keystore }) => {
                    format!("; its keystore {} was kept", keystore.display())
                }
                Some(ProviderConfig::Kmip(_)) | None => String::new(),
            };
            out.result(
                &format!("removed provider {name}{kept}"),
                json!({"removed": name}),
            );
        }
        ProviderCmd::Backup {
            name,
            out: file,
            pass,
            allow_short_passphrase,
        } => {
            let Some(ProviderConfig::Native { keystore }) = cfg.get(name) else {
                return Err(Error::InvalidInput {
                    reason: format!("no native provider named {name:?}"),
                });
            };
            let mut p = NativeProvider::open(name, keystore)?;
            let pw = passphrase::read(pass.passphrase_file.as_deref(), true)?;
            passphrase::check_strength(&pw, *allow_short_passphrase)?;
            p.backup(file, pw.as_bytes(), BackupParams::default())?;
            out.result(
                &format!("backed up provider {name} to {}; keep it and its passphrase apart from this host", file.display()),
                json!({"provider": name, "backup": file}),
            );
        }
        ProviderCmd::Restore {
            file,
            name,
            keystore,
            pass,
        } => {
            let info = NativeProvider::backup_info(file)?;
            let name = match (name, &info.provider) {
                (Some(n), _) => n,
                (None, Some(recorded)) => recorded,
                (None, None) => {
                    return Err(Error::input(format!(
                        "{} does not record the name of its provider (a version 1 backup): give --name, the name the disks' keySafes use",
                        file.display()
                    )));
                }
            };
            Config::check_name(name)?;
            if let Some(recorded) = info.provider.as_deref().filter(|r| r != name) {
                tracing::warn!(
                    "{} is a backup of provider {recorded:?}, restored as {name:?}: disks whose keySafes name {recorded:?} will not find it under this name; restore it as {recorded:?} unless you mean to rekey them to {name:?} (`vmcrypt rekey DISK --shallow --provider {name}` needs the provider they name)",
                    file.display()
                );
            }
            if cfg.get(name).is_some() {
                return Err(Error::InvalidInput {
                    reason: format!("provider {name:?} already exists"),
                });
            }
            let ks = keystore
                .clone()
                .unwrap_or_else(|| cfg.default_keystore(name));
            let pw = passphrase::read(pass.passphrase_file.as_deref(), false)?;
            NativeProvider::restore(name, file, pw.as_bytes(), &ks)?;
            cfg.providers.push((
                name.clone(),
                ProviderConfig::Native {
                    keystore: ks.clone(),
                },
            ));
            if cfg.default.is_none() {
                cfg.default = Some(name.clone());
            }
            cfg.save()?;
            out.result(
                &format!("restored provider {name} (keystore {})", ks.display()),
                json!({"provider": name, "keystore": ks}),
            );
        }
    }
    Ok(())
}

/// How long `add-kmip` waits for each server's name to resolve.
const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The servers whose host does not resolve now, with why: every name looked up at once, each
/// given [`RESOLVE_WAIT`] (a resolver that hangs must not hang the command).
fn unresolved_servers(servers: &[String]) -> Vec<(String, String)> {
    use std::net::ToSocketAddrs;
    let lookups: Vec<_> = servers
        .iter()
        .map(|s| {
            let (tx, rx) = std::sync::mpsc::channel();
            let name = s.clone();
            std::thread::spawn(move || {
                let r = name.to_socket_addrs().map(|mut a| a.next().is_some());
                let _ = tx.send(r);
            });
            (s, rx)
        })
        .collect();
    let until = std::time::Instant::now() + RESOLVE_WAIT;
    let mut bad = Vec::new();
    for (server, rx) in lookups {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bad.push((server.clone(), "no address".to_string())),
            Ok(Err(e)) => bad.push((server.clone(), e.to_string())),
            Err(_) => bad.push((
                server.clone(),
                format!("no answer within {} s", RESOLVE_WAIT.as_secs()),
            )),
        }
    }
    bad
}
