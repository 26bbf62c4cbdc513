//! `--metrics`: the agent's cache and key-server counters and a serving process's I/O
//! counters, scraped over HTTP as Prometheus does, after real traffic (a KMIP cluster with a
//! server that refuses, and qemu-io on an NBD export).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use vmcrypt_testkit::{faults, pykmip};

const MIB: u64 = 1024 * 1024;

/// GET /metrics, parsed strictly: every line a comment (`# HELP`, `# TYPE`) or
/// `name{labels} value`, every sample's family declared before it.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut declared = Vec::new();
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut w = t.split_whitespace();
            let name = w.next().expect("name");
            let kind = w.next().expect("kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
            declared.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let name = series.split('{').next().expect("name");
        assert!(
            declared.iter().any(|d| name == d
                || name
                    .strip_prefix(d.as_str())
                    .is_some_and(|r| ["_bucket", "_sum", "_count"].contains(&r))),
            "{name} before its TYPE"
        );
        out.insert(series.to_string(), value.parse().expect("a number"));
    }
    out
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no {series} in {:?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn the_agents_metrics_count_hits_misses_latency_and_each_servers_failures_and_demotions() {
    let c = pykmip::shared();
    let e = Env::new();
    let bad = faults::refused();
    let (ca, cert, key) = tls_files(c);
    e.ok(&[
        "provider",
        "add-kmip",
        "kms",
        "--server",
        &bad,
        "--server",
        &c.servers[0],
        "--ca",
        ca,
        "--cert",
        cert,
        "--key",
        key,
        "--hedge-ms",
        "0",
        "--timeout",
        "5",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let s = socket.to_str().expect("utf8").to_string();
    let port = pykmip::free_port();
    let agent = AgentServer::start(&e, &[], &socket, &["--metrics", &port.to_string()]);
    let m = scrape(port);
    assert_eq!(get(&m, "vmcrypt_agent_cache_hits_total"), 0.0);
    assert_eq!(get(&m, "vmcrypt_agent_keys_cached"), 0.0);
    e.raw_image("d.img", MIB);
    // A create: the refusing server first (a failure), then the real one; the check after
    // the create is a cache hit.
    e.ok(&[
        "--agent",
        &s,
        "encrypt",
        "d.img",
        "--in-place",
        "--provider",
        "kms",
    ]);
    e.ok(&["agent", "forget", "--socket", &s, "--all"]);
    // A miss: the refusing server failed a moment ago, so it is tried last (a demotion).
    e.ok(&["--agent", &s, "decrypt", "d.img", "--output", "d.1"]);
    // A hit.
    e.ok(&["--agent", &s, "decrypt", "d.img", "--output", "d.2"]);
    let m = scrape(port);
    agent.stop();
    assert_eq!(get(&m, "vmcrypt_agent_creates_total"), 1.0);
    assert_eq!(get(&m, "vmcrypt_agent_create_errors_total"), 0.0);
    assert_eq!(get(&m, "vmcrypt_agent_cache_misses_total"), 1.0);
    assert_eq!(get(&m, "vmcrypt_agent_cache_hits_total"), 2.0);
    assert_eq!(get(&m, "vmcrypt_agent_fetch_errors_total"), 0.0);
    assert_eq!(get(&m, "vmcrypt_agent_fetch_seconds_count"), 1.0);
    assert_eq!(
        get(&m, "vmcrypt_agent_fetch_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    assert!(get(&m, "vmcrypt_agent_fetch_seconds_sum") > 0.0);
    assert_eq!(get(&m, "vmcrypt_agent_keys_cached"), 1.0);
    assert_eq!(get(&m, "vmcrypt_agent_in_flight"), 0.0);
    assert!(get(&m, "vmcrypt_agent_cache_capacity") >= 1.0);
    let bad_fail =
        format!("vmcrypt_kms_server_failures_total{{provider=\"kms\",server=\"{bad}\"}}");
    let good_fail = format!(
        "vmcrypt_kms_server_failures_total{{provider=\"kms\",server=\"{}\"}}",
        c.servers[0]
    );
    assert_eq!(get(&m, &bad_fail), 1.0, "the create tried it once");
    assert_eq!(get(&m, &good_fail), 0.0);
    let bad_demoted =
        format!("vmcrypt_kms_server_demotions_total{{provider=\"kms\",server=\"{bad}\"}}");
    assert_eq!(get(&m, &bad_demoted), 1.0, "the fetch tried it last");
    // No key id in the metrics.
    let doc = json(&e.ok(&["inspect", "d.img", "--json"]));
    let id = doc["keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string();
    // (KMIP ids are small numbers: compare label values, not substrings.)
    for series in m.keys() {
        let labels = series.split_once('{').map(|(_, l)| l).unwrap_or("");
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').expect("label");
            assert!(
                k == "le" || v.trim_matches('"') != id,
                "key id {id} in {series}"
            );
        }
    }
}

#[test]
fn a_serving_process_exports_its_io_counters() {
    let e = Env::new();
    e.raw_image("d.img", 8 * MIB);
    e.ok(&["encrypt", "d.img", "--in-place"]);
    let port = pykmip::free_port();
    let served = Served::start(&e, "d.img", &["--metrics", &port.to_string()]);
    let before = scrape(port);
    let series = |name: &str| format!("{name}{{disk=\"d.img\",protocol=\"nbd\"}}");
    assert_eq!(
        get(&before, &series("vmcrypt_serve_written_bytes_total")),
        0.0
    );
    qemu_io(
        &served.uri(),
        &[
            "write -P 7 0 1M".into(),
            "read -P 7 0 1M".into(),
            "flush".into(),
        ],
    );
    let m = scrape(port);
    served.stop();
    assert_eq!(
        get(&m, &series("vmcrypt_serve_written_bytes_total")),
        MIB as f64
    );
    assert_eq!(
        get(&m, &series("vmcrypt_serve_read_bytes_total")),
        MIB as f64
    );
    assert!(get(&m, &series("vmcrypt_serve_requests_total")) >= 3.0);
    assert_eq!(get(&m, &series("vmcrypt_serve_errors_total")), 0.0);
    assert_eq!(
        get(&m, "vmcrypt_serve_nbd_clients_total{disk=\"d.img\"}"),
        1.0
    );
    assert_eq!(
        get(&m, "vmcrypt_serve_disk_bytes{disk=\"d.img\"}"),
        (8 * MIB) as f64
    );
    assert_eq!(
        get(
            &m,
            "vmcrypt_serve_job_done_bytes{disk=\"d.img\",job=\"none\"}"
        ),
        0.0
    );
}
