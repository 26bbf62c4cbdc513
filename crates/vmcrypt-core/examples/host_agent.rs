//! A host agent in a few lines: one key cache shared by every operation, a disk opened for the
//! I/O path (its DEK unwrapped through the cache, a sector read and decrypted), the same agent
//! served on a Unix socket, and a client using it. Every key fetch is a tracing event.
//!
//! Run: `cargo run -p vmcrypt-core --example host_agent`
//!
//! The provider here is the embedded native one, so the example runs anywhere. A real agent
//! opens a KMIP cluster in the same closure:
//! `Arc::new(vmcrypt_kmip::provider::KmipProvider::new(settings)?)`, whose Gets are hedged,
//! reuse their connections and try recently failed servers last (docs/agent.md).

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vmcrypt_core::agent::{Agent, AgentClient, KeyCache, Shutdown};
use vmcrypt_core::disk::{Disk, EncryptOptions, NoProgress, encrypt_disk, unlock};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_target(false)
        .without_time()
        .init();
    // First thing in a process that will hold keys: no core dumps, no ptrace by peers.
    vmcrypt_core::agent::locked::harden_process()?;
    let dir = tempfile::tempdir()?;
    let keystore = dir.path().join("native.keystore");
    NativeProvider::create("native", &keystore)?;

    // An encrypted disk to serve: 1 MiB of known bytes, encrypted to disk.enc.
    let plain: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, &plain)?;
    let disk_path = dir.path().join("disk.enc");
    let native = NativeProvider::open("native", &keystore)?;
    encrypt_disk(
        &image,
        &native,
        &EncryptOptions::to_output(&disk_path),
        &NoProgress,
        &AtomicBool::new(false),
    )?;

    // The agent: providers opened on first use and kept, one cache for all of them.
    let ks = keystore.clone();
    let agent = Arc::new(Agent::new(
        KeyCache::new(1024)?,
        Box::new(
            move |name: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
                Ok(Arc::new(NativeProvider::open(name, &ks)?))
            },
        ),
    ));

    // The I/O path: unwrap the disk's DEK (a cache miss, then hits), decrypt one sector.
    let disk = Disk::open(&disk_path)?;
    let sector = read_sector(&disk, &unlock(&disk, &agent.lookup())?, 3)?;
    assert_eq!(sector, plain[3 * 4096..4 * 4096]);
    let again = read_sector(&disk, &unlock(&disk, &agent.lookup())?, 3)?;
    assert_eq!(again, sector);
    println!(
        "sector 3 decrypted twice; the cache holds {} key(s)",
        agent.cache().len()
    );

    // The same agent on a socket, for other processes (the CLI's `--agent`).
    let socket = dir.path().join("agent.sock");
    let listener = vmcrypt_core::agent::bind(&socket)?;
    let shutdown = Shutdown::new(&listener, &socket)?;
    let server = {
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        std::thread::spawn(move || vmcrypt_core::agent::serve(listener, agent, &shutdown))
    };
    let client = AgentClient::new(&socket);
    let through_socket = read_sector(&disk, &unlock(&disk, &client.lookup())?, 3)?;
    assert_eq!(through_socket, sector);
    let status = client.status()?;
    println!(
        "through {}: agent pid {}, {} cached key(s), dumpable: {}",
        socket.display(),
        status.pid,
        status.cached.len(),
        status.dumpable
    );
    shutdown.stop();
    server.join().map_err(|_| "server thread panicked")??;
    println!("agent stopped; cache zeroed ({} keys)", agent.cache().len());
    Ok(())
}

/// Reads data unit `n` of the disk's payload and decrypts it.
fn read_sector(
    disk: &Disk,
    dek: &vmcrypt_core::secret::Dek,
    n: u64,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let meta = disk.encryption().ok_or("disk is not encrypted")?;
    let unit = meta.identity.sector_size;
    let len = unit.bytes() as u64;
    let mut buf = vec![0u8; len as usize];
    let file = std::fs::File::open(disk.payload_path())?;
    file.read_exact_at(&mut buf, disk.payload_offset() + n * len)?;
    dek.xts()?.decrypt_sectors(&mut buf, n * len, unit)?;
    Ok(buf)
}
