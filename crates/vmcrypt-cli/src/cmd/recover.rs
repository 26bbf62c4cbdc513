//! `recover dm-table`: the break-glass path. Prints the device-mapper table line that opens the
//! payload with dm-crypt (`aes-xts-plain64`, the same sector format), so a disk can be read
//! without vmcrypt. The line contains the DEK in clear: it goes to stdout only, on request.

use serde_json::json;
use vmcrypt_core::Result;

use super::load_config;
use crate::cli::{Cli, RecoverCmd};
use crate::output::Out;

/// What dm-crypt does not know (docs/formats.md, "Holes").
const HOLES: &str = "dm-crypt decrypts a hole (an all-zero data unit: never written, trimmed, or zeroed while served) to noise, not zeros; vmcrypt reads holes as zeros. File systems read through dm-crypt are fine where they never wrote; copy data out with care, or decrypt with vmcrypt when it is available";

pub fn run(cli: &Cli, r: &RecoverCmd, out: &Out) -> Result<()> {
    let RecoverCmd::DmTable {
        disk,
        reveal_key: _,
    } = r;
    let cfg = load_config(cli)?;
    let t = vmcrypt_core::disk::dm_table(disk, &cfg.registry())?;
    if !out.json {
        eprintln!(
            "vmcrypt: the line below contains the disk's key in clear; do not store or share it"
        );
        eprintln!("vmcrypt: {HOLES}");
    }
    out.result(
        t.line.as_str(),
        json!({
            "dm_table": t.line.as_str(), "device": t.device, "sector_size": t.sector_size,
            "offset_sectors": t.offset_sectors, "caveat": HOLES,
        }),
    );
    Ok(())
}
