//! The audit log end to end: every key operation of a full run of the CLI is one JSON line
//! with its time, operation, provider, key id, disk or VM, process and result; the agent's
//! log names the peer (uid, pid, command) of each request; and no byte of any key of the run
//! (the native provider's key derivation key, every KEK, every disk's DEK) is in the log, in
//! any encoding.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;

use common::*;
use serde_json::Value;

const MIB: u64 = 1024 * 1024;
const PASS: (&str, &str) = ("VMCRYPT_PASSPHRASE", "correct horse battery");

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn ops(log: &[Value]) -> Vec<String> {
    log.iter()
        .map(|r| r["operation"].as_str().expect("operation").to_string())
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {s}"),
    };
    let bits: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
    let mut out = Vec::new();
    for c in bits.chunks(4) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, v)| n | (u32::from(*v) << (18 - 6 * i)));
        for i in 0..c.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The KDK of a native keystore file.
fn kdk(keystore: &std::path::Path) -> Vec<u8> {
    let text = std::fs::read_to_string(keystore).expect("keystore");
    let line = text
        .lines()
        .find(|l| l.starts_with("vmcrypt.keystore.kdk"))
        .expect("kdk line");
    let v = line.split('"').nth(1).expect("quoted");
    let k = unb64(v);
    assert_eq!(k.len(), 32);
    k
}

/// The native provider's KEK `id` (docs/formats.md: HKDF-SHA256 of the KDK).
fn kek(kdk: &[u8], id: &str) -> Vec<u8> {
    let mut info = b"vmcrypt native kek v1\0".to_vec();
    info.extend_from_slice(id.as_bytes());
    let mut out = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, kdk)
        .expand(&info, &mut out)
        .expect("hkdf");
    out.to_vec()
}

/// Not a key, nor any 8-byte window of one, as raw bytes, hex (either case) or base64.
fn assert_no_key_bytes(log: &[u8], keys: &[(String, Vec<u8>)]) {
    let text = String::from_utf8_lossy(log).to_string();
    let lower = text.to_ascii_lowercase();
    for (what, key) in keys {
        assert!(
            !log.windows(key.len()).any(|w| w == key.as_slice()),
            "{what} raw"
        );
        for w in key.windows(8) {
            assert!(!lower.contains(&hex(w)), "{what}: bytes {} in hex", hex(w));
        }
        for start in 0..3 {
            let enc = b64(&key[start..]);
            assert!(!text.contains(&enc[..16]), "{what} in base64");
        }
    }
}

#[test]
fn a_full_run_is_audited_and_no_key_byte_reaches_the_log() {
    let e = Env::new();
    let log = e.path("audit/audit.jsonl");
    let a = log.to_str().expect("utf8");
    let run = |args: &[&str], env: &[(&str, &str)], code: i32| {
        let mut all = vec!["--audit-log", a];
        all.extend_from_slice(args);
        let o = e.run_env(&all, env);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(&["provider", "add-native", "n"], &[], 0);
    e.raw_image("d.img", 4 * MIB);
    run(&["encrypt", "d.img", "--in-place"], &[], 0);
    run(&["decrypt", "d.img", "--output", "d.plain"], &[], 0);
    run(&["rekey", "d.img", "--shallow"], &[], 0);
    run(&["rekey", "d.img", "--deep"], &[], 0);
    run(&["rekey", "missing.img", "--shallow"], &[], 1);
    run(
        &["provider", "backup", "n", "--out", "n.backup"],
        &[PASS],
        0,
    );
    run(
        &[
            "provider",
            "restore",
            "n.backup",
            "--name",
            "m",
            "--keystore",
            "m.ks",
        ],
        &[PASS],
        0,
    );
    let table = run(&["recover", "dm-table", "d.img", "--reveal-key"], &[], 0);
    let records = lines(&log);
    let seen = ops(&records);
    for op in [
        "create",
        "fetch",
        "rekey",
        "backup",
        "restore",
        "reveal-key",
    ] {
        assert!(seen.iter().any(|o| o == op), "no {op} in {seen:?}");
    }
    for r in &records {
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
        assert!(r["process"]["pid"].as_u64().is_some(), "{r}");
        let cmd = r["process"]["command"].as_str().expect("command");
        assert!(
            cmd.contains("vmcrypt") || cmd.contains("--audit-log"),
            "{r}"
        );
        assert!(
            ["ok", "error"].contains(&r["result"].as_str().expect("result")),
            "{r}"
        );
    }
    let creates: Vec<&Value> = records
        .iter()
        .filter(|r| r["operation"] == "create")
        .collect();
    assert_eq!(creates.len(), 2, "encrypt and the shallow rekey: {seen:?}");
    assert!(
        creates
            .iter()
            .all(|r| r["provider"] == "n" && r["disk"].is_string())
    );
    let rekeys: Vec<&Value> = records
        .iter()
        .filter(|r| r["operation"] == "rekey")
        .collect();
    assert_eq!(rekeys.len(), 3);
    assert_eq!(rekeys[0]["depth"], "shallow");
    assert_eq!(rekeys[1]["depth"], "deep");
    assert_eq!(rekeys[2]["result"], "error");
    assert!(
        rekeys[2]["error"]
            .as_str()
            .is_some_and(|m| m.contains("missing.img"))
    );
    let restore = records
        .iter()
        .find(|r| r["operation"] == "restore")
        .expect("restore");
    assert_eq!(restore["provider"], "m");
    // Every key of the run: the KDK (the restored keystore holds the same), each KEK, the DEK.
    let kdk = kdk(&e.path("cfg/keystores/n.keystore"));
    assert_eq!(kdk, self::kdk(&e.path("m.ks")));
    let mut keys = vec![("the KDK".to_string(), kdk.clone())];
    let ids: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["key_id"].as_str())
        .collect();
    assert!(ids.len() >= 2, "{ids:?}");
    for id in &ids {
        keys.push((format!("KEK {id}"), kek(&kdk, id)));
    }
    let dek_hex = table
        .split_whitespace()
        .skip_while(|w| *w != "aes-xts-plain64")
        .nth(1)
        .expect("the dm table's key");
    let dek: Vec<u8> = (0..dek_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&dek_hex[i..i + 2], 16).expect("hex"))
        .collect();
    assert_eq!(dek.len(), 64);
    keys.push(("the DEK".into(), dek));
    assert_no_key_bytes(&std::fs::read(&log).expect("log"), &keys);
}

#[test]
fn the_config_names_the_log_and_one_that_cannot_be_opened_stops_the_command() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "n"]);
    let log = e.path("from-config.jsonl");
    let cfg = std::fs::read_to_string(e.config()).expect("config");
    let with_log = format!("audit_log = \"{}\"\n{cfg}", log.display());
    std::fs::write(e.config(), &with_log).expect("write");
    e.raw_image("d.img", MIB);
    e.ok(&["encrypt", "d.img", "--in-place"]);
    assert!(ops(&lines(&log)).contains(&"create".to_string()));
    // The environment comes before the file.
    let env_log = e.path("from-env.jsonl");
    let o = e.run_env(
        &["rekey", "d.img", "--shallow"],
        &[("VMCRYPT_AUDIT_LOG", env_log.to_str().expect("utf8"))],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(ops(&lines(&env_log)).contains(&"rekey".to_string()));
    assert_eq!(lines(&log).len(), 2, "the file's log got the env's records");
    // A log that cannot be opened (a directory): nothing is done.
    std::fs::create_dir(e.path("a-dir")).expect("dir");
    e.raw_image("p.img", MIB);
    let before = std::fs::read(e.path("p.img")).expect("read");
    let o = e.run(&["--audit-log", "a-dir", "encrypt", "p.img", "--in-place"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("audit log"), "{}", stderr(&o));
    assert!(std::fs::read(e.path("p.img")).expect("read") == before);
    assert!(!e.path("p.img.vmcrypt").exists());
}

#[test]
fn the_agents_log_names_each_peer_and_tells_cache_hits_from_fetches() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "n"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let log = dir.path().join("agent-audit.jsonl");
    let agent = AgentServer::start(
        &e,
        &["--audit-log", log.to_str().expect("utf8")],
        &socket,
        &[],
    );
    let s = socket.to_str().expect("utf8");
    e.raw_image("d.img", MIB);
    let mut pids = Vec::new();
    for args in [
        vec![
            "--agent",
            s,
            "encrypt",
            "d.img",
            "--in-place",
            "--provider",
            "n",
        ],
        vec!["--agent", s, "decrypt", "d.img", "--output", "d.plain"],
        vec!["agent", "forget", "--socket", s, "--provider", "n"],
        vec!["--agent", s, "decrypt", "d.img", "--output", "d.again"],
    ] {
        let child = e
            .command(&args, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let child = child.expect("vmcrypt");
        pids.push(child.id());
        let o = child.wait_with_output().expect("wait");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    agent.stop();
    let records = lines(&log);
    let seen = ops(&records);
    // encrypt: create, then the proof fetch (a cache hit: create caches); decrypt: a hit;
    // forget; the last decrypt: a fetch from the provider again.
    assert_eq!(seen.first().map(String::as_str), Some("create"), "{seen:?}");
    assert!(seen.contains(&"cache-hit".to_string()), "{seen:?}");
    let forget = seen.iter().position(|o| o == "forget").expect("forget");
    assert_eq!(seen.last().map(String::as_str), Some("fetch"), "{seen:?}");
    assert!(forget < seen.len() - 1);
    for r in &records {
        let pid = r["peer"]["pid"].as_u64().expect("peer pid") as u32;
        assert!(pids.contains(&pid), "{r} not from {pids:?}");
        assert_eq!(r["peer"]["uid"], 0);
        let cmd = r["peer"]["command"].as_str().expect("peer command");
        assert!(cmd.contains("vmcrypt"), "{r}");
        assert_eq!(r["provider"], "n");
    }
    let create = &records[0];
    assert_eq!(create["peer"]["pid"].as_u64(), Some(u64::from(pids[0])));
    assert!(
        create["peer"]["command"]
            .as_str()
            .is_some_and(|c| c.contains("encrypt"))
    );
    assert!(create["disk"].is_string());
    let kdk = kdk(&e.path("cfg/keystores/n.keystore"));
    let id = create["key_id"].as_str().expect("key id");
    assert_no_key_bytes(
        &std::fs::read(&log).expect("log"),
        &[
            ("the KDK".into(), kdk.clone()),
            (format!("KEK {id}"), kek(&kdk, id)),
        ],
    );
}
