//! The CLI with KMIP providers, against real PyKMIP servers and fault peers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vmcrypt_testkit::faults::{self, Behavior};
use vmcrypt_testkit::pykmip;

const MIB: u64 = 1024 * 1024;

fn add_kmip(e: &Env, name: &str, servers: &[&str], timeout: u64) {
    let c = pykmip::shared();
    let mut args = vec!["provider", "add-kmip", name];
    for s in servers {
        args.extend(["--server", s]);
    }
    let t = timeout.to_string();
    let (ca, cert, key) = (
        c.pki.ca.to_str().expect("utf8"),
        c.pki.client_cert.to_str().expect("utf8"),
        c.pki.client_key.to_str().expect("utf8"),
    );
    args.extend(["--ca", ca, "--cert", cert, "--key", key, "--timeout", &t]);
    e.ok(&args);
}

fn stderr_of(e: &Env, args: &[&str], code: i32) -> String {
    let before = snapshot(e.dir.path());
    let o = e.run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "vmcrypt {args:?}: {err}");
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "vmcrypt {args:?} changed files"
    );
    err
}

#[test]
fn encrypt_through_server_1_decrypt_through_server_3() {
    let c = pykmip::shared();
    let e = Env::new();
    let img = e.raw_image("d.img", 2 * MIB);
    add_kmip(&e, "cluster", &[&c.servers[0]], 10);
    let out = e.ok(&[
        "encrypt",
        "d.img",
        "--output",
        "d.enc",
        "--provider",
        "cluster",
    ]);
    assert!(out.contains("provider cluster"), "{out}");
    let j = json(&e.ok(&["--json", "inspect", "d.enc"]));
    assert_eq!(j["keys"][0]["provider"], "cluster");
    // The same cluster name, now reaching only server 3.
    e.ok(&["provider", "remove", "cluster"]);
    add_kmip(&e, "cluster", &[&c.servers[2]], 10);
    e.ok(&["decrypt", "d.enc", "--output", "d.dec"]);
    assert_identical(&img, &e.path("d.dec"));
    // A VMDK in place, through the whole cluster.
    e.vmdk("v.vmdk", MIB);
    e.ok(&["provider", "remove", "cluster"]);
    add_kmip(
        &e,
        "cluster",
        &[&c.servers[0], &c.servers[1], &c.servers[2]],
        10,
    );
    let orig = std::fs::read(e.path("v-flat.vmdk")).expect("read");
    e.ok(&["encrypt", "v.vmdk", "--in-place", "--provider", "cluster"]);
    e.ok(&["decrypt", "v.vmdk", "--in-place"]);
    assert_eq!(std::fs::read(e.path("v-flat.vmdk")).expect("read"), orig);
}

#[test]
fn provider_check_and_replication() {
    let c = pykmip::shared();
    let e = Env::new();
    let refused = faults::refused();
    add_kmip(
        &e,
        "cluster",
        &[&c.servers[0], &c.servers[1], &c.servers[2], &refused],
        5,
    );
    let text = e.ok(&["provider", "check", "cluster"]);
    for s in &c.servers {
        let line = text
            .lines()
            .find(|l| l.contains(s.as_str()))
            .unwrap_or_else(|| panic!("{s} missing: {text}"));
        assert!(line.contains("yes") && line.contains("1."), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.contains(&refused) && l.contains("cannot connect")),
        "{text}"
    );
    let j = json(&e.ok(&["--json", "provider", "check", "cluster", "--replication"]));
    assert_eq!(j["healthy"], 3);
    assert_eq!(j["servers"][3]["reachable"], false);
    let lag = j["replication"]["lag"].as_array().expect("lag list");
    assert_eq!(lag.len(), 3, "{j}");
    for l in lag.iter().filter(|l| l["server"] != refused.as_str()) {
        assert!(l["lag_ms"].as_f64().is_some(), "{l}");
    }
    assert_eq!(j["replication"]["probe_destroyed"], true);
    println!("replication lag: {}", j["replication"]);
}

#[test]
fn all_servers_down_exit_3_and_nothing_changes() {
    let c = pykmip::shared();
    let e = Env::new();
    e.raw_image("d.img", MIB);
    add_kmip(&e, "cluster", &[&c.servers[0]], 5);
    e.ok(&["encrypt", "d.img", "--in-place", "--provider", "cluster"]);
    let (r1, r2) = (faults::refused(), faults::refused());
    let close = faults::tcp(Behavior::Close);
    e.ok(&["provider", "remove", "cluster"]);
    add_kmip(&e, "cluster", &[&r1, &close.addr, &r2], 5);
    let t = Instant::now();
    let err = stderr_of(&e, &["decrypt", "d.img", "--in-place"], 3);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    for s in [&r1, &close.addr, &r2] {
        assert!(err.contains(s.as_str()), "{s} not named: {err}");
    }
    assert!(err.contains("safe to retry"), "{err}");
    // Encrypting with every server down creates nothing.
    e.raw_image("p.img", MIB);
    let err = stderr_of(
        &e,
        &[
            "encrypt",
            "p.img",
            "--output",
            "p.enc",
            "--provider",
            "cluster",
        ],
        3,
    );
    assert!(err.contains("all 3 servers"), "{err}");
    // `provider check` with every server down: exit 3, and --json prints exactly one
    // document, the report, with the error in it.
    let o = e.run(&["--json", "provider", "check", "cluster"]);
    assert_eq!(o.status.code(), Some(3));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "one document: {out}");
    let j = json(&out);
    assert_eq!(j["healthy"], 0);
    assert_eq!(j["error"]["exit_code"], 3);
}

#[test]
fn revoked_key_is_refused_and_nothing_changes() {
    let c = pykmip::shared();
    let e = Env::new();
    e.raw_image("d.img", MIB);
    add_kmip(&e, "cluster", &[&c.servers[0], &c.servers[1]], 5);
    e.ok(&["encrypt", "d.img", "--in-place", "--provider", "cluster"]);
    let key_id = json(&e.ok(&["--json", "inspect", "d.img"]))["keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string();
    let s = vmcrypt_kmip::provider::KmipSettings::new(
        "cluster",
        vec![c.servers[1].clone()],
        c.pki.ca.clone(),
        c.pki.client_cert.clone(),
        c.pki.client_key.clone(),
    );
    let p = vmcrypt_kmip::provider::KmipProvider::new(s).expect("provider");
    p.connect(&c.servers[1])
        .expect("connect")
        .revoke(&key_id, vmcrypt_kmip::spec::REVOCATION_KEY_COMPROMISE)
        .expect("revoke");
    let err = stderr_of(&e, &["decrypt", "d.img", "--in-place"], 1);
    assert!(
        err.contains("Compromised") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn hung_first_server_costs_the_timeout() {
    let c = pykmip::shared();
    let e = Env::new();
    e.raw_image("d.img", MIB);
    let hang = faults::tcp(Behavior::Hang);
    add_kmip(&e, "cluster", &[&hang.addr, &c.servers[0]], 2);
    let t = Instant::now();
    let o = e.run(&[
        "encrypt",
        "d.img",
        "--output",
        "d.enc",
        "--provider",
        "cluster",
    ]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        stderr(&o).contains(&hang.addr),
        "the skipped server is logged: {}",
        stderr(&o)
    );
}

#[test]
fn add_kmip_refuses_bad_settings() {
    let c = pykmip::shared();
    let e = Env::new();
    std::fs::write(e.path("junk.pem"), "not a certificate\n").expect("write");
    let (cert, key) = (
        c.pki.client_cert.to_str().expect("utf8"),
        c.pki.client_key.to_str().expect("utf8"),
    );
    let o = e.run(&[
        "provider",
        "add-kmip",
        "k",
        "--server",
        "127.0.0.1:1",
        "--ca",
        "junk.pem",
        "--cert",
        cert,
        "--key",
        key,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("junk.pem"), "{}", stderr(&o));
    let o = e.run(&[
        "provider", "add-kmip", "k", "--server", "no-port", "--ca", cert, "--cert", cert, "--key",
        key,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        !e.path("cfg/config.toml").exists(),
        "a refused add-kmip wrote the config"
    );
}

/// A server name this host cannot resolve is saved (DNS may come later) but warned about,
/// by name, in the text and in the JSON.
#[test]
fn add_kmip_warns_about_a_server_name_that_does_not_resolve() {
    let c = pykmip::shared();
    let e = Env::new();
    let (ca, cert, key) = tls_files(c);
    let o = e.run(&[
        "provider",
        "add-kmip",
        "k",
        "--server",
        "127.0.0.1:5696",
        "--server",
        "kms-typo.invalid:5696",
        "--ca",
        ca,
        "--cert",
        cert,
        "--key",
        key,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("server kms-typo.invalid:5696 of provider k does not resolve"),
        "{err}"
    );
    assert!(!err.contains("127.0.0.1:5696 of provider"), "{err}");
    let doc = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        doc["unresolved"],
        serde_json::json!(["kms-typo.invalid:5696"])
    );
    assert!(
        e.ok(&["provider", "list"])
            .contains("kms-typo.invalid:5696")
    );
}

#[test]
fn closing_and_untrusted_servers_are_skipped_with_the_reason_logged() {
    let c = pykmip::shared();
    let e = Env::new();
    e.raw_image("d.img", MIB);
    let close = faults::tcp(Behavior::Close);
    let untrusted = faults::tls(
        Behavior::TlsHang,
        &c.pki.rogue_server_cert,
        &c.pki.rogue_server_key,
    );
    add_kmip(
        &e,
        "cluster",
        &[&close.addr, &untrusted.addr, &c.servers[1]],
        5,
    );
    let o = e.run(&[
        "encrypt",
        "d.img",
        "--output",
        "d.enc",
        "--provider",
        "cluster",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let line = |addr: &str| {
        err.lines()
            .find(|l| l.contains(addr))
            .unwrap_or_else(|| panic!("{addr} not logged: {err}"))
            .to_string()
    };
    assert!(
        line(&close.addr).contains("failed during TLS handshake"),
        "{err}"
    );
    assert!(
        line(&untrusted.addr).contains("invalid peer certificate"),
        "{err}"
    );
}

#[test]
fn vm_encrypt_rekey_decrypt_with_kmip() {
    let c = pykmip::shared();
    let e = Env::new();
    let vmx = "displayName = \"db01\"\nscsi0:0.fileName = \"db01.vmdk\"\nscsi0:1.fileName = \"db01_b.vmdk\"\nannotation = \"secret\"\n";
    std::fs::write(e.path("db01.vmx"), vmx).expect("vmx");
    for d in ["db01.vmdk", "db01_b.vmdk"] {
        e.vmdk(d, MIB);
        std::fs::copy(e.path(d), e.path(&format!("{d}.orig"))).expect("copy");
        let flat = format!("{}-flat.vmdk", d.trim_end_matches(".vmdk"));
        std::fs::copy(e.path(&flat), e.path(&format!("{flat}.orig"))).expect("copy");
    }
    add_kmip(
        &e,
        "kms",
        &[&c.servers[0], &c.servers[1], &c.servers[2]],
        10,
    );
    e.ok(&["vm", "encrypt", "db01.vmx", "--provider", "kms"]);
    let before = json(&e.ok(&["--json", "vm", "inspect", "db01.vmx"]));
    assert_eq!(before["keys"][0]["provider"], "kms");
    let ct = std::fs::read(e.path("db01-flat.vmdk")).expect("read");
    e.ok(&["vm", "rekey", "db01.vmx", "--shallow"]);
    let after = json(&e.ok(&["--json", "vm", "inspect", "db01.vmx"]));
    assert_eq!(after["key_generation"], 2);
    assert_ne!(
        after["keys"][0]["key_id"], before["keys"][0]["key_id"],
        "a new KEK on the KMS"
    );
    assert_eq!(after["consistent"], true);
    assert_eq!(std::fs::read(e.path("db01-flat.vmdk")).expect("read"), ct);
    e.ok(&["vm", "decrypt", "db01.vmx"]);
    assert_eq!(
        std::fs::read_to_string(e.path("db01.vmx")).expect("vmx"),
        vmx
    );
    for d in ["db01.vmdk", "db01_b.vmdk"] {
        let flat = format!("{}-flat.vmdk", d.trim_end_matches(".vmdk"));
        assert_eq!(
            std::fs::read(e.path(&flat)).expect("read"),
            std::fs::read(e.path(&format!("{flat}.orig"))).expect("read"),
            "{flat}"
        );
        assert_eq!(
            std::fs::read(e.path(d)).expect("read"),
            std::fs::read(e.path(&format!("{d}.orig"))).expect("read"),
            "{d}"
        );
    }
}

#[test]
fn a_vm_job_opens_its_provider_once_and_fetches_each_kek_once() {
    let c = pykmip::shared();
    let e = Env::new();
    let disks = ["a.vmdk", "b.vmdk", "c.vmdk"];
    let mut vmx = String::from("displayName = \"n3\"\n");
    for (i, d) in disks.iter().enumerate() {
        e.vmdk(d, MIB);
        vmx.push_str(&format!("scsi0:{i}.fileName = \"{d}\"\n"));
    }
    std::fs::write(e.path("n3.vmx"), &vmx).expect("vmx");
    // Every connection the jobs open goes through the counting proxy. With connection reuse
    // (the default), one provider object per job means one connection per job, however many
    // disks the VM has: the VM key and every disk key come from the same KEK, fetched once.
    let proxy = faults::proxy(&c.servers[0]);
    add_kmip(&e, "kms", &[&proxy.addr], 10);
    let mut seen = proxy.connections();
    for job in [
        &["vm", "encrypt", "n3.vmx", "--provider", "kms"][..],
        &["vm", "rekey", "n3.vmx", "--shallow"],
        &["vm", "rekey", "n3.vmx", "--deep"],
        &["vm", "decrypt", "n3.vmx"],
    ] {
        e.ok(job);
        let now = proxy.connections();
        assert_eq!(
            now - seen,
            1,
            "{job:?}: one connection for the VM and 3 disks"
        );
        seen = now;
    }
    assert_eq!(std::fs::read_to_string(e.path("n3.vmx")).expect("vmx"), vmx);
}

/// `topology init --from-config` describes this host's KMIP provider (its servers in order,
/// timeout, hedging, demotion), and `topology check --live` asks those servers now: two real
/// PyKMIP servers are up, with a latency and a replication lag; the third address refuses,
/// which is an error (exit 1) that names it.
#[test]
fn topology_init_from_config_then_check_live_flags_the_server_that_is_down() {
    let c = pykmip::shared();
    let e = Env::new();
    let down = vmcrypt_testkit::faults::refused();
    add_kmip(&e, "prod", &[&c.servers[0], &c.servers[1], &down], 5);
    let text = e.ok(&["topology", "init", "--from-config"]);
    assert!(
        text.contains("name = \"prod\"") && text.contains("timeout_secs = 5"),
        "{text}"
    );
    assert!(
        text.contains("hedge_ms = 2000") && text.contains("demote_secs = 300"),
        "{text}"
    );
    std::fs::write(e.path("topology.toml"), &text).expect("write");
    // As written, it checks (warnings only: every server in one site).
    let out = e.expect(&["topology", "check", "topology.toml"], 0);
    assert!(out.contains("warning [no-offsite-kms]"), "{out}");
    let out = e.expect(
        &["--json", "topology", "check", "topology.toml", "--live"],
        1,
    );
    let j = json(&out);
    let live = j["live"].as_array().expect("live");
    assert_eq!(live.len(), 3, "{j}");
    for (i, s) in live.iter().enumerate() {
        assert_eq!(s["provider"], "prod");
        let up = i < 2;
        assert_eq!(s["error"].is_null(), up, "{s}");
        assert_eq!(s["latency_ms"].is_f64(), up, "{s}");
        assert_eq!(s["reachable"], up, "{s}");
    }
    // The second server showed the probe key the first one made (one database).
    assert!(live[1]["lag_ms"].is_f64(), "{}", live[1]);
    let down_finding = j["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == "kms-down")
        .expect("kms-down");
    assert_eq!(down_finding["severity"], "error");
    assert_eq!(down_finding["components"][1], down.as_str());
    // A topology that describes other servers than the configuration tries is flagged.
    let fewer = text.replacen(&format!(", \"{down}\"]"), "]", 2);
    std::fs::write(e.path("fewer.toml"), fewer).expect("write");
    let j = json(&e.expect(&["--json", "topology", "check", "fewer.toml", "--live"], 1));
    assert!(
        j["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["check"] == "config-mismatch"),
        "{j}"
    );
    // No provider in common with the configuration: a clear error.
    let o = e.run(&[
        "topology",
        "check",
        &example_path("two-site-a-f.toml"),
        "--live",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("vmcrypt provider list"),
        "{}",
        stderr(&o)
    );
}

fn example_path(name: &str) -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/topologies")
        .join(name)
        .to_str()
        .expect("utf8")
        .to_string()
}
