//! `encrypt` and `decrypt`.

use serde_json::json;
use vmcrypt_core::Result;
use vmcrypt_core::disk::{
    DecryptOptions, DiskReport, EncryptOptions, check_encrypt, decrypt_disk, encrypt_disk,
};
use vmcrypt_core::provider::KeyProvider;

use super::{load_config, provider_for_new_key};
use crate::cli::{Cli, DecryptArgs, EncryptArgs};
use crate::output::{Out, human_bytes};
use crate::progress::{Bar, cancel_on_signal};

pub fn encrypt(cli: &Cli, a: &EncryptArgs, out: &Out) -> Result<()> {
    let mut opts = match &a.target.output {
        Some(o) => EncryptOptions::to_output(o),
        None => EncryptOptions::in_place(),
    }
    .sector_size(a.sector_size.into());
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
