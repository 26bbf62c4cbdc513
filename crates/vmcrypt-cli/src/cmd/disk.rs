//! `encrypt` and `decrypt`.

use serde_json::json;
use vmcrypt_core::Result;
use vmcrypt_core::disk::{
    DecryptOptions, DiskReport, EncryptOptions, check_encrypt, decrypt_disk, encrypt_disk,
};
use vmcrypt_core::provider::KeyProvider;

use super::{load_config, provider_for_new_key};
use crate::cli::{Cli, DecryptArgs, EncryptArgs, FormatArg, RekeyArgs};
use crate::output::{Out, human_bytes};
use crate::progress::{Bar, cancel_on_signal};

pub fn encrypt(cli: &Cli, a: &EncryptArgs, out: &Out) -> Result<()> {
    let mut opts = match &a.target.output {
        Some(o) => EncryptOptions::to_output(o),
        None => EncryptOptions::in_place(),
    }
    .sector_size(a.sector_size.into())
    .assume_raw(a.format == Some(FormatArg::Raw));
    if let Some(t) = a.threads {
        opts = opts.threads(t);
    }
    // Refuse a bad request before a first-use provider is created for it.
    check_encrypt(&a.disk, &opts)?;
    let mut cfg = load_config(cli)?;
    let provider = provider_for_new_key(&mut cfg, a.provider.as_deref(), out)?;
    let bar = Bar::new(out.quiet, out.json, "encrypting");
    let cancel = cancel_on_signal();
    let r = encrypt_disk(&a.disk, provider.as_ref(), &opts, &bar, &cancel)?;
    report(out, "encrypted", &r);
    Ok(())
}

pub fn decrypt(cli: &Cli, a: &DecryptArgs, out: &Out) -> Result<()> {
    let cfg = load_config(cli)?;
    let lookup = |name: &str| -> Result<Box<dyn KeyProvider>> { cfg.open(name) };
    let mut opts = match &a.target.output {
        Some(o) => DecryptOptions::to_output(o),
        None => DecryptOptions::in_place(),
    };
    if let Some(t) = a.threads {
        opts = opts.threads(t);
    }
    let bar = Bar::new(out.quiet, out.json, "decrypting");
    let cancel = cancel_on_signal();
    let r = decrypt_disk(&a.disk, &lookup, &opts, &bar, &cancel)?;
    report(out, "decrypted", &r);
    Ok(())
}

fn report(out: &Out, verb: &str, r: &DiskReport) {
    let secs = r.elapsed.as_secs_f64();
    let gbps = if secs > 0.0 {
        r.bytes as f64 / secs / 1e9
    } else {
        0.0
    };
    let mut human = format!(
        "{verb} {}: {} in {secs:.2} s ({gbps:.2} GB/s); provider {}, key id {}",
        r.disk.display(),
        human_bytes(r.bytes),
        r.provider,
        r.key_id
    );
    if let Some(m) = &r.metadata {
        human.push_str(&format!("; metadata in {}", m.display()));
    }
    out.result(
        &human,
        json!({
            "operation": verb,
            "disk": r.disk,
            "payload": r.payload,
            "metadata": r.metadata,
            "bytes": r.bytes,
            "seconds": secs,
            "provider": r.provider,
            "key_id": r.key_id,
            "sector_size": r.sector_size.bytes(),
        }),
    );
}

pub fn rekey(cli: &Cli, a: &RekeyArgs, out: &Out) -> Result<()> {
    if a.depth.deep {
        if a.provider.is_some() {
            return Err(vmcrypt_core::Error::InvalidInput {
                reason: "--deep keeps the disk's KEK; change provider with --shallow --provider"
                    .into(),
            });
        }
        let cfg = load_config(cli)?;
        let lookup = |name: &str| -> Result<Box<dyn KeyProvider>> { cfg.open(name) };
        let bar = Bar::new(out.quiet, out.json, "rekeying");
        let threads = a.threads.unwrap_or_else(default_threads);
        let (stats, generation) = vmcrypt_core::disk::rekey_disk_deep(
            &a.disk,
            &lookup,
            threads,
            &bar,
            &cancel_on_signal(),
        )?;
        let secs = stats.elapsed.as_secs_f64();
        out.result(
            &format!("rekeyed {} (deep): new DEK, generation {generation}, {} re-encrypted in {secs:.2} s", a.disk.display(), human_bytes(stats.bytes)),
            json!({"operation": "rekey", "depth": "deep", "disk": a.disk, "generation": generation, "bytes": stats.bytes, "seconds": secs}),
        );
        return Ok(());
    }
    let mut cfg = load_config(cli)?;
    let lookup_cfg = cfg.clone();
    let lookup = |name: &str| -> Result<Box<dyn KeyProvider>> { lookup_cfg.open(name) };
    let provider = provider_for_new_key(&mut cfg, a.provider.as_deref(), out)?;
    let r = vmcrypt_core::disk::rekey_disk_shallow(&a.disk, provider.as_ref(), &lookup)?;
    out.result(
        &format!(
            "rekeyed {} (shallow{}): provider {}, key id {}, generation {}, {:.3} s; no data sector was rewritten",
            a.disk.display(),
            if r.resumed { ", finishing an interrupted rekey" } else { "" },
            r.provider,
            r.key_id,
            r.generation,
            r.elapsed.as_secs_f64()
        ),
        json!({"operation": "rekey", "depth": "shallow", "disk": a.disk, "provider": r.provider, "key_id": r.key_id,
               "generation": r.generation, "resumed": r.resumed, "seconds": r.elapsed.as_secs_f64()}),
    );
    Ok(())
}

pub fn resume(cli: &Cli, disk: &std::path::Path, threads: Option<usize>, out: &Out) -> Result<()> {
    let cfg = load_config(cli)?;
    let lookup = |name: &str| -> Result<Box<dyn KeyProvider>> { cfg.open(name) };
    let bar = Bar::new(out.quiet, out.json, "resuming");
    if disk
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("vmx"))
    {
        let opts = vmcrypt_core::vm::ops::VmOptions::default().threads(threads);
        let r = vmcrypt_core::vm::ops::vm_resume(disk, &lookup, &opts, &bar, &cancel_on_signal())?;
        let human = match &r {
            Some(r) => format!(
                "finished the interrupted VM job on {} (generation {})",
                disk.display(),
                r.generation
            ),
            None => format!("{}: nothing to resume", disk.display()),
        };
        out.result(
            &human,
            json!({"operation": "resume", "vmx": disk, "resumed": r.is_some()}),
        );
        return Ok(());
    }
    let r = vmcrypt_core::disk::resume_disk(
        disk,
        &lookup,
        threads.unwrap_or_else(default_threads),
        &bar,
        &cancel_on_signal(),
    )?;
    let human = match r.was {
        Some(s) if s != vmcrypt_core::disk::DiskState::Encrypted => {
            format!(
                "finished the interrupted job ({}) on {} from byte {}",
                s.as_str(),
                disk.display(),
                r.from
            )
        }
        _ => format!("{}: nothing to resume", disk.display()),
    };
    out.result(&human, json!({"operation": "resume", "disk": disk, "was": r.was.map(|s| s.as_str()), "from": r.from, "bytes": r.bytes}));
    Ok(())
}

fn default_threads() -> usize {
    vmcrypt_core::disk::worker_threads(None)
}
