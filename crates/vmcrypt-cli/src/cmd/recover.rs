//! `recover dm-table`: the break-glass path. Prints the device-mapper table line that opens the
//! payload with dm-crypt (`aes-xts-plain64`, the same sector format), so a disk can be read
//! without vmcrypt. The line contains the DEK in clear: it goes to stdout only, on request.

use serde_json::json;
use vmcrypt_core::Result;
use vmcrypt_core::disk::{Disk, unlock};
use vmcrypt_core::provider::KeyProvider;
use zeroize::Zeroizing;

use super::load_config;
use crate::cli::{Cli, RecoverCmd};
use crate::output::Out;

pub fn run(cli: &Cli, r: &RecoverCmd, out: &Out) -> Result<()> {
    let RecoverCmd::DmTable {
        disk,
        reveal_key: _,
    } = r;
    let cfg = load_config(cli)?;
    let d = Disk::open(disk)?;
    let lookup = |name: &str| -> Result<Box<dyn KeyProvider>> { cfg.open(name) };
    let dek = unlock(&d, &lookup)?;
    let meta = d
        .encryption()
        .ok_or_else(|| vmcrypt_core::Error::InvalidInput {
            reason: "not encrypted".into(),
        })?;
    // dmsetup needs a path that works from anywhere.
    let device =
        std::path::absolute(d.payload_path()).unwrap_or_else(|_| d.payload_path().to_path_buf());
    let hex = Zeroizing::new(
        dek.expose_secret()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    );
    let unit = meta.identity.sector_size.bytes();
    let opt = if unit == 512 {
        String::new()
    } else {
        format!(" 1 sector_size:{unit}")
    };
    // dm-crypt's fields: start, sectors, target, cipher, key, iv_offset (0: the tweak is the
    // data unit number within the payload), device, the payload's offset in 512-byte sectors.
    let line = Zeroizing::new(format!(
        "0 {} crypt aes-xts-plain64 {} 0 {} {}{}",
        meta.identity.payload_size / 512,
        hex.as_str(),
        device.display(),
        meta.identity.payload_offset / 512,
        opt
    ));
    if !out.json {
        eprintln!(
            "vmcrypt: the line below contains the disk's key in clear; do not store or share it"
        );
    }
    out.result(
        line.as_str(),
        json!({
            "dm_table": line.as_str(), "device": device, "sector_size": unit,
            "offset_sectors": meta.identity.payload_offset / 512,
        }),
    );
    Ok(())
}
