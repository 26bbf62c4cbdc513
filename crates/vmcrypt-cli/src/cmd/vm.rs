//! `vm encrypt | decrypt | rekey | inspect`.

use serde_json::json;
use vmcrypt_core::vm::vm_inspect;
use vmcrypt_core::{Report, Result, VmJob};

use super::{load_config, provider_for_new_key, tuning};
use crate::cli::{Cli, VmCmd};
use crate::output::Out;
use crate::progress::{Bar, cancel_on_signal};

fn with_threads(job: VmJob, threads: Option<usize>) -> VmJob {
    match threads {
        Some(n) => job.threads(n),
        None => job,
    }
}

/// Whether a server holds any disk of the VM `vmx`.
fn serves_any(vmx: &std::path::Path, servers: &dyn vmcrypt_core::vm::ServedDisks) -> bool {
    vmcrypt_core::vm::Vm::open(vmx)
        .is_ok_and(|vm| vm.disks().iter().any(|d| servers.serves(&d.path)))
}

/// The one VM of a command that is not a fleet ([`is_fleet`]).
fn one(vmx: &[std::path::PathBuf]) -> Result<&std::path::Path> {
    match vmx {
        [one] => Ok(one),
        _ => Err(vmcrypt_core::Error::input(
            "one VMX, or a fleet: see `vmcrypt vm rekey --help`",
        )),
    }
}

/// Whether `cmd` is a fleet: several VMs, `--from-file` or `--results` (cmd::fleet).
pub fn is_fleet(cmd: &VmCmd) -> bool {
    match cmd {
        VmCmd::Encrypt { vmx, fleet, .. } | VmCmd::Rekey { vmx, fleet, .. } => {
            fleet.wanted(vmx.len())
        }
        _ => false,
    }
}

/// A fleet run of `vm encrypt` or `vm rekey`: each VM as the single-VM command runs it, with
/// the providers opened once for all (cmd::fleet).
pub fn run_fleet(cli: &Cli, cmd: &VmCmd, out: &Out) -> std::process::ExitCode {
    let fail = |e: vmcrypt_core::Error| {
        out.error(&e);
        std::process::ExitCode::from(crate::output::exit_code(&e))
    };
    let mut cfg = match load_config(cli) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let cancel = cancel_on_signal();
    let none = vmcrypt_core::NoProgress;
    match cmd {
        VmCmd::Encrypt {
            vmx,
            provider,
            sector_size,
            threads,
            fleet,
        } => {
            let vms = match super::fleet::vms(vmx, fleet.from_file.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            let provider = match provider_for_new_key(&mut cfg, provider.as_deref(), out) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            let registry = cfg.registry();
            let job = |vmx: &std::path::Path| {
                let job = VmJob::encrypt(vmx)
                    .provider(provider.clone())
                    .sector_size((*sector_size).into())
                    .tuning(tuning());
                with_threads(job, *threads).run(&registry, &none, &cancel)
            };
            super::fleet::run("encrypt", vms, fleet, &cancel, out, &job)
        }
        VmCmd::Rekey {
            vmx,
            depth,
            provider,
            rate,
            fleet,
        } => {
            let vms = match super::fleet::vms(vmx, fleet.from_file.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            if depth.deep && provider.is_some() {
                return fail(vmcrypt_core::Error::input(
                    "--deep keeps each VM's KEK; change provider with --shallow --provider",
                ));
            }
            if !depth.deep && rate.is_some() {
                return fail(vmcrypt_core::Error::input(
                    "--rate is for --deep of running VMs (a shallow rekey rewrites no data)",
                ));
            }
            let registry = cfg.registry();
            if depth.deep {
                let job = |vmx: &std::path::Path| {
                    // No progress bars from the servers of running VMs: one line per VM.
                    let quiet = Out {
                        json: true,
                        quiet: true,
                        printed: std::cell::Cell::new(false),
                    };
                    let servers = super::online::VmServers {
                        rate: *rate,
                        out: &quiet,
                    };
                    VmJob::rekey_deep(vmx)
                        .tuning(tuning())
                        .run_served(&registry, &none, &cancel, &servers)
                };
                super::fleet::run("rekey-deep", vms, fleet, &cancel, out, &job)
            } else {
                let job = |vmx: &std::path::Path| {
                    let mut job = VmJob::rekey_shallow(vmx);
                    if let Some(p) = provider {
                        job = job.provider(p.clone());
                    }
                    job.run(&registry, &none, &cancel)
                };
                super::fleet::run("rekey-shallow", vms, fleet, &cancel, out, &job)
            }
        }
        _ => fail(vmcrypt_core::Error::input(
            "only vm encrypt and vm rekey run fleets",
        )),
    }
}

/// Runs a VM job; `inspect` prints its own document and gives no report.
pub fn run(cli: &Cli, cmd: &VmCmd, out: &Out) -> Result<Option<Report>> {
    let mut cfg = load_config(cli)?;
    let cancel = cancel_on_signal();
    let report = match cmd {
        VmCmd::Encrypt {
            vmx,
            provider,
            sector_size,
            threads,
            fleet: _,
        } => {
            let vmx = one(vmx)?;
            let provider = provider_for_new_key(&mut cfg, provider.as_deref(), out)?;
            let job = VmJob::encrypt(vmx)
                .provider(provider)
                .sector_size((*sector_size).into())
                .tuning(tuning());
            let bar = Bar::new(out.quiet, out.json, "encrypting VM");
            with_threads(job, *threads).run(&cfg.registry(), &bar, &cancel)?
        }
        VmCmd::Decrypt { vmx, threads } => {
            let bar = Bar::new(out.quiet, out.json, "decrypting VM");
            let job = with_threads(VmJob::decrypt(vmx).tuning(tuning()), *threads);
            job.run(&cfg.registry(), &bar, &cancel)?
        }
        VmCmd::Rekey {
            vmx,
            depth,
            provider,
            rate,
            fleet: _,
        } => {
            let vmx = one(vmx)?;
            if depth.deep {
                if provider.is_some() {
                    return Err(vmcrypt_core::Error::InvalidInput {
                        reason:
                            "--deep keeps the VM's KEK; change provider with --shallow --provider"
                                .into(),
                    });
                }
                let bar = Bar::new(out.quiet, out.json, "rekeying VM");
                // The disks a server holds (the VM runs) are rekeyed online by their servers.
                let servers = super::online::VmServers { rate: *rate, out };
                if rate.is_some() && !serves_any(vmx, &servers) {
                    return Err(vmcrypt_core::Error::input(format!(
                        "--rate is for the disks of a running VM, and no disk of {} is served (`vmcrypt serve`)",
                        vmx.display()
                    )));
                }
                VmJob::rekey_deep(vmx).tuning(tuning()).run_served(
                    &cfg.registry(),
                    &bar,
                    &cancel,
                    &servers,
                )?
            } else {
                if rate.is_some() {
                    return Err(vmcrypt_core::Error::input(
                        "--rate is for --deep of a running VM (a shallow rekey rewrites no data)",
                    ));
                }
                let mut job = VmJob::rekey_shallow(vmx);
                if let Some(p) = provider {
                    job = job.provider(p.clone());
                }
                job.run(&cfg.registry(), &vmcrypt_core::NoProgress, &cancel)?
            }
        }
        VmCmd::Inspect { vmx } => {
            let i = vm_inspect(vmx)?;
            let mut lines = vec![format!("vm:           {}", i.vmx.display())];
            match &i.meta {
                None => lines.push("encrypted:    no".into()),
                Some(m) => {
                    lines.push(format!("encrypted:    yes ({})", m.state.as_str()));
                    lines.push(format!("vm uuid:      {}", m.vm_uuid));
                    lines.push(format!(
                        "generation:   {}{}",
                        m.generation,
                        m.rekey_generation
                            .map(|g| format!(" (rekey to {g} under way)"))
                            .unwrap_or_default()
                    ));
                    for (p, k) in &i.keys {
                        lines.push(format!("key:          provider {p}, key id {k}"));
                    }
                }
            }
            for d in &i.disks {
                let state = match (&d.error, d.state) {
                    (Some(e), _) => format!("error: {e}"),
                    (None, None) => "plain".into(),
                    (None, Some(s)) => format!(
                        "{} gen {}{}, {}",
                        s.as_str(),
                        d.generation.unwrap_or_default(),
                        d.rekey_generation
                            .map(|g| format!("->{g}"))
                            .unwrap_or_default(),
                        d.keys
                            .iter()
                            .map(|(p, k)| format!("{p}/{k}"))
                            .collect::<Vec<_>>()
                            .join(" + ")
                    ),
                };
                lines.push(format!(
                    "disk:         {} = {} ({state}{})",
                    d.key,
                    d.path.display(),
                    if d.state.is_some() && !d.belongs {
                        ", BELONGS TO ANOTHER VM"
                    } else {
                        ""
                    }
                ));
            }
            lines.push(format!(
                "consistent:   {}",
                if i.consistent { "yes" } else { "NO" }
            ));
            for p in &i.problems {
                lines.push(format!("problem:      {p}"));
            }
            let doc = serde_json::to_value(&i).unwrap_or_default();
            // Not consistent: the report, then exit 4, as for any metadata mismatch.
            let failed = (!i.consistent).then(|| vmcrypt_core::Error::Integrity {
                path: i.vmx.clone(),
                reason: i.problems.join("; "),
            });
            let mut doc = doc;
            if let Some(e) = &failed {
                doc["error"] = json!({"kind": "unwrap_failed", "message": e.to_string(), "exit_code": crate::output::exit_code(e)});
            }
            out.result(&lines.join("\n"), doc);
            return match failed {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
    };
    Ok(Some(report))
}
