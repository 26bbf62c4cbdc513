//! `serve`: an encrypted disk exported live over NBD until SIGTERM or Ctrl-C.

use std::time::Duration;

use serde_json::json;
use vmcrypt_core::{EncryptedDisk, Error, Result};
use vmcrypt_serve::{Endpoint, Listener, NbdServer};

use super::load_config;
use crate::cli::{Cli, ServeArgs};
use crate::output::{Out, human_bytes};
use crate::progress::cancel_on_signal;

pub fn run(cli: &Cli, a: &ServeArgs, out: &Out) -> Result<()> {
    let endpoint = Endpoint::parse(&a.nbd).map_err(|e| Error::input(format!("--nbd: {e}")))?;
    let cfg = load_config(cli)?;
    // The lock first, then the key: once open, a KMS outage changes nothing.
    let disk = EncryptedDisk::open(&a.disk, &cfg.registry())?;
    let listener =
        Listener::bind(&endpoint).map_err(Error::io("listen on", endpoint.to_string()))?;
    let server = NbdServer::new(disk, a.name.clone(), a.read_only)
        .stall_deadline(Duration::from_secs(a.stall_timeout));
    // SIGTERM or Ctrl-C: drain and exit 0; a second signal ends the process at once.
    let stop = cancel_on_signal();
    let offer = server.offer();
    out.note(&format!(
        "vmcrypt: serving {} ({}, {}-byte blocks{}) as NBD export \"{}\" on {}; SIGTERM or Ctrl-C stops",
        a.disk.display(),
        human_bytes(offer.size),
        offer.block,
        if offer.read_only { ", read-only" } else { "" },
        offer.name,
        listener.endpoint(),
    ));
    let stats = server
        .serve(&listener, &stop)
        .map_err(Error::io("serve", &a.disk))?;
    drop(listener);
    // Closing the disk releases its lock.
    drop(server.into_disk());
    out.result(
        &format!(
            "served {} client(s): {} requests, {} read, {} written, {} failed",
            stats.clients,
            stats.requests,
            human_bytes(stats.bytes_read),
            human_bytes(stats.bytes_written),
            stats.errors
        ),
        json!({ "disk": a.disk, "endpoint": endpoint.to_string(), "stats": stats }),
    );
    Ok(())
}
