//! `vm encrypt | decrypt | rekey | inspect`.

use serde_json::json;
use vmcrypt_core::Result;
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::vm::ops::{
    VmOptions, VmReport, vm_decrypt, vm_encrypt, vm_inspect, vm_rekey_shallow,
};

use super::{load_config, provider_for_new_key};
use crate::cli::{Cli, VmCmd};
use crate::output::{Out, human_bytes};
use crate::progress::{Bar, cancel_on_signal};

pub fn run(cli: &Cli, cmd: &VmCmd, out: &Out) -> Result<()> {
    let mut cfg = load_config(cli)?;
    let lookup_cfg = cfg.clone();
    let lookup = |name: &str| -> Result<Box<dyn KeyProvider>> { lookup_cfg.open(name) };
    match cmd {
        VmCmd::Encrypt {
            vmx,
            provider,
            sector_size,
            threads,
        } => {
            let provider = provider_for_new_key(&mut cfg, provider.as_deref(), out)?;
            let opts = VmOptions::default()
                .sector_size((*sector_size).into())
                .threads(*threads);
            let bar = Bar::new(out.quiet, out.json, "encrypting VM");
            let r = vm_encrypt(
                vmx,
                provider.as_ref(),
                &lookup,
                &opts,
                &bar,
                &cancel_on_signal(),
            )?;
            report(out, "encrypted", &r);
        }
        VmCmd::Decrypt { vmx, threads } => {
            let opts = VmOptions::default().threads(*threads);
            let bar = Bar::new(out.quiet, out.json, "decrypting VM");
            let r = vm_decrypt(vmx, &lookup, &opts, &bar, &cancel_on_signal())?;
            report(out, "decrypted", &r);
        }
        VmCmd::Rekey {
            vmx,
            depth,
            provider,
        } => {
            if depth.deep {
                if provider.is_some() {
                    return Err(vmcrypt_core::Error::InvalidInput {
                        reason:
                            "--deep keeps the VM's KEK; change provider with --shallow --provider"
                                .into(),
                    });
                }
                let bar = Bar::new(out.quiet, out.json, "rekeying VM");
                let r = vmcrypt_core::vm::ops::vm_rekey_deep(
                    vmx,
                    &lookup,
                    &VmOptions::default(),
                    &bar,
                    &cancel_on_signal(),
                )?;
                report(out, "rekeyed (deep)", &r);
                return Ok(());
            }
            let new_provider = match provider {
                Some(p) => Some(cfg.open(p)?),
                None => None,
            };
            let r = vm_rekey_shallow(vmx, new_provider.as_deref(), &lookup)?;
            report(out, "rekeyed (shallow)", &r);
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
            let doc = json!({
                "vmx": i.vmx,
                "encrypted": i.meta.is_some(),
                "state": i.meta.as_ref().map(|m| m.state.as_str()),
                "vm_uuid": i.meta.as_ref().map(|m| m.vm_uuid.clone()),
                "key_generation": i.meta.as_ref().map(|m| m.generation),
                "rekey_generation": i.meta.as_ref().and_then(|m| m.rekey_generation),
                "keys": i.keys.iter().map(|(p, k)| json!({"provider": p, "key_id": k})).collect::<Vec<_>>(),
                "disks": i.disks.iter().map(|d| json!({
                    "key": d.key, "path": d.path, "encrypted": d.state.is_some(),
                    "state": d.state.map(|s| s.as_str()), "key_generation": d.generation,
                    "rekey_generation": d.rekey_generation, "belongs_to_vm": d.belongs, "error": d.error,
                    "keys": d.keys.iter().map(|(p, k)| json!({"provider": p, "key_id": k})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "consistent": i.consistent,
                "problems": i.problems,
            });
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
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn report(out: &Out, verb: &str, r: &VmReport) {
    out.result(
        &format!(
            "{verb} VM {}: {} disk(s), {} in {:.3} s; provider {}, key id {}, generation {}{}",
            r.vmx.display(),
            r.disks.len(),
            human_bytes(r.bytes),
            r.elapsed.as_secs_f64(),
            r.provider,
            r.key_id,
            r.generation,
            if r.resumed { " (finished an interrupted run)" } else { "" }
        ),
        json!({
            "operation": verb, "vmx": r.vmx, "vm_uuid": r.vm_uuid, "provider": r.provider, "key_id": r.key_id,
            "generation": r.generation, "disks": r.disks, "bytes": r.bytes, "resumed": r.resumed,
            "seconds": r.elapsed.as_secs_f64(),
        }),
    );
}
