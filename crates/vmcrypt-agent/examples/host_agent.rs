//! A host agent in a few lines: one key cache shared by every operation, a disk opened for the
//! I/O path (an [`EncryptedDisk`]: its DEK unwrapped through the cache, read and written by
//! guest offset), the same agent served on a Unix socket, and a client using it. Every key
//! fetch is a tracing event.
//!
//! Run: `cargo run -p vmcrypt-agent --example host_agent`
//!
//! The provider here is the embedded native one, so the example runs anywhere. A real agent
//! opens a KMIP cluster in the same closure:
//! `Arc::new(vmcrypt_kmip::provider::KmipProvider::new(settings)?)`, whose Gets are hedged,
//! reuse their connections and try recently failed servers last (docs/agent.md).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use vmcrypt_agent::{Agent, AgentClient, KeyCache, Shutdown};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{DiskJob, EncryptedDisk, NoProgress, Scratch};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_target(false)
        .without_time()
        .init();
    // First thing in a process that will hold keys: no core dumps, no ptrace by peers.
    vmcrypt_agent::harden_process()?;
    let dir = tempfile::tempdir()?;
    let keystore = dir.path().join("native.keystore");
    NativeProvider::create("native", &keystore)?;

    // The agent: providers opened on first use and kept, one cache for all of them. It is the
    // registry every job and disk of this process uses.
    let ks = keystore.clone();
    let agent = Arc::new(Agent::new(
        KeyCache::new(1024)?,
        move |name: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
            Ok(Arc::new(NativeProvider::open(name, &ks)?))
        },
    ));

    // An encrypted disk to serve: 1 MiB of known bytes, encrypted to disk.enc.
    let plain: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, &plain)?;
    let disk_path = dir.path().join("disk.enc");
    DiskJob::encrypt(&image)
        .provider("native")
        .output(&disk_path)
        .run(agent.as_ref(), &NoProgress, &AtomicBool::new(false))?;

    // The I/O path: the disk opened under its lock (its DEK from the cache), a unit read
    // and decrypted by guest offset, a 512-byte write into the middle of a unit, a flush.
    {
        let disk = EncryptedDisk::open(&disk_path, agent.as_ref())?;
        let unit = disk.unit_size();
        let mut sector = vec![0u8; unit];
        disk.read_at(&mut sector, 3 * unit as u64)?;
        assert_eq!(sector, plain[3 * unit..4 * unit]);
        disk.write_at(
            &[0x5a; 512],
            3 * unit as u64 + 1024,
            &mut Scratch::default(),
        )?;
        disk.flush()?;
        disk.read_at(&mut sector, 3 * unit as u64)?;
        assert_eq!(sector[1024..1536], [0x5a; 512]);
        println!(
            "{} bytes served in {unit}-byte units; the cache holds {} key(s)",
            disk.len(),
            agent.cache().len()
        );
    }

    // The same agent on a socket, for other processes (the CLI's `--agent`).
    let socket = dir.path().join("agent.sock");
    let listener = vmcrypt_agent::bind(&socket)?;
    let shutdown = Shutdown::new(&listener, &socket)?;
    let server = {
        let (agent, shutdown) = (agent.clone(), shutdown.clone());
        std::thread::spawn(move || vmcrypt_agent::serve(listener, agent, &shutdown))
    };
    let client = AgentClient::new(&socket);
    let through_socket = EncryptedDisk::open(&disk_path, &client)?;
    let mut sector = vec![0u8; through_socket.unit_size()];
    through_socket.read_at(&mut sector, 0)?;
    assert_eq!(sector, plain[..sector.len()]);
    drop(through_socket);
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
