//! Boot storm: many VMs power on at once and each needs its KEK. The fetches go through a host
//! agent (the real socket server and client) to a local PyKMIP cluster of three servers.
//!
//! Rows, all in one run:
//! - new TLS connection per request, cold cache: what the reference system does;
//! - kept connections, cold cache: the agent's default;
//! - warm cache: every key already held by the agent (no KMS traffic at all).
//!
//! For each: fetches per second over the whole storm, and p50 / p99 / max latency of one fetch
//! as a VM sees it (connect to the agent, request, answer).
//!
//! `cargo bench -p vmcrypt-benches --bench boot_storm` (VMS=200 by default; `VMS=500 ...`).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use vmcrypt_agent::{Agent, AgentClient, KeyCache, Shutdown};
use vmcrypt_core::provider::{KeyId, KeyProvider, KeyPurpose};
use vmcrypt_kmip::provider::{KmipProvider, KmipSettings};
use vmcrypt_testkit::pykmip::Cluster;

/// Per-server timeout: shorter than the 60 s default so that a row whose handshakes time out
/// ends in under a minute.
const TIMEOUT: Duration = Duration::from_secs(10);

fn settings(c: &Cluster, reuse: bool) -> KmipSettings {
    KmipSettings::new(
        "kms",
        c.servers.clone(),
        c.pki.ca.clone(),
        c.pki.client_cert.clone(),
        c.pki.client_key.clone(),
    )
    .timeout(TIMEOUT)
    .reuse(reuse)
}

struct Storm {
    wall: Duration,
    latencies: Vec<Duration>,
    failed: usize,
}

/// Every VM asks for its key at the same instant, each on its own thread and connection.
fn storm(socket: &std::path::Path, ids: &[KeyId]) -> Storm {
    let start = Arc::new(Barrier::new(ids.len() + 1));
    let handles: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let start = start.clone();
            let client = AgentClient::new(socket);
            std::thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                let ok = client.provider("kms").fetch_kek(&id).is_ok();
                (t.elapsed(), ok)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let results: Vec<(Duration, bool)> = handles
        .into_iter()
        .map(|h| h.join().expect("fetch thread"))
        .collect();
    let wall = t0.elapsed();
    let failed = results.iter().filter(|r| !r.1).count();
    let mut latencies: Vec<Duration> = results.into_iter().map(|r| r.0).collect();
    latencies.sort_unstable();
    Storm {
        wall,
        latencies,
        failed,
    }
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn row(label: &str, s: &Storm) {
    println!(
        "{label:<52} {:>8.0} {:>9.1} {:>9.1} {:>9.1} {:>8.2} {:>7}",
        (s.latencies.len() - s.failed) as f64 / s.wall.as_secs_f64(),
        pct(&s.latencies, 0.5),
        pct(&s.latencies, 0.99),
        pct(&s.latencies, 1.0),
        s.wall.as_secs_f64(),
        s.failed
    );
}

/// A fresh agent (empty cache) on its own socket, with the cluster reached as `reuse` says.
fn agent(
    dir: &std::path::Path,
    name: &str,
    c: &Cluster,
    reuse: bool,
    in_flight: usize,
) -> (Arc<Agent>, Shutdown) {
    let socket = dir.join(name);
    let s = settings(c, reuse);
    let agent = Arc::new(
        Agent::new(
            KeyCache::new(1024).expect("locked cache"),
            Box::new(
                move |_: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
                    Ok(Arc::new(KmipProvider::new(s.clone())?))
                },
            ),
        )
        .in_flight(in_flight),
    );
    let listener = vmcrypt_agent::bind(&socket).expect("bind");
    let shutdown = Shutdown::new(&listener, &socket).expect("shutdown handle");
    let (a, sd) = (agent.clone(), shutdown.clone());
    std::thread::spawn(move || vmcrypt_agent::serve(listener, a, &sd));
    (agent, shutdown)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run a small
    // storm then so the target stays working.
    let quick = !std::env::args().any(|a| a == "--bench");
    let vms: usize = std::env::var("VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 8 } else { 200 });
    let c = Cluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    // One KEK per VM, created beforehand (the VMs were encrypted long ago).
    let creator = KmipProvider::new(settings(&c, true)).expect("provider");
    let ids: Vec<KeyId> = (0..vms)
        .map(|i| {
            creator
                .create_kek(&KeyPurpose::Vm(format!("storm-vm-{i}")))
                .expect("create")
                .0
        })
        .collect();
    println!(
        "boot storm: {vms} VMs fetch their KEK at once through the agent socket; PyKMIP cluster of 3; timeout {} s",
        TIMEOUT.as_secs()
    );
    println!(
        "{:<52} {:>8} {:>9} {:>9} {:>9} {:>8} {:>7}",
        "scenario (cold = keys not cached)",
        "fetch/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "wall s",
        "failed"
    );
    let unlimited = 1 << 20;
    let (_a, stop) = agent(dir.path(), "ref.sock", &c, false, unlimited);
    let reference = storm(&dir.path().join("ref.sock"), &ids);
    row(
        "cold, new TLS per request, all at once (reference)",
        &reference,
    );
    stop.stop();

    let limit = vmcrypt_agent::limit::DEFAULT_IN_FLIGHT;
    let (_a, stop) = agent(dir.path(), "new-conn.sock", &c, false, limit);
    let cold_new = storm(&dir.path().join("new-conn.sock"), &ids);
    row(
        &format!("cold, new TLS per request, {limit} in flight"),
        &cold_new,
    );
    stop.stop();

    let (a, stop) = agent(dir.path(), "reuse.sock", &c, true, limit);
    let socket = dir.path().join("reuse.sock");
    // The agent has been up for a while: earlier fetches opened its connections.
    let warmup: Vec<KeyId> = (0..limit)
        .map(|i| {
            creator
                .create_kek(&KeyPurpose::Vm(format!("storm-warmup-{i}")))
                .expect("create")
                .0
        })
        .collect();
    let _ = storm(&socket, &warmup);
    a.cache().clear();
    let cold_reuse = storm(&socket, &ids);
    row(
        &format!("cold, kept connections, {limit} in flight (agent default)"),
        &cold_reuse,
    );
    let warm = storm(&socket, &ids);
    row("warm cache (the agent holds every key)", &warm);
    stop.stop();
    let rate = |s: &Storm| (s.latencies.len() - s.failed) as f64 / s.wall.as_secs_f64();
    println!(
        "fetches/s against the reference: new TLS {in_flight} in flight {:.1}x, kept connections {:.1}x, warm cache {:.0}x",
        rate(&cold_new) / rate(&reference),
        rate(&cold_reuse) / rate(&reference),
        rate(&warm) / rate(&reference),
        in_flight = limit
    );
}
