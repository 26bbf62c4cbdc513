//! The topology doctor's failover timing (vmcrypt-topology) against the real client: the
//! client fetches a key through servers that hang (accept, never answer) or refuse, and a
//! real PyKMIP server, in several scenarios, with and without hedging and demotion; the
//! doctor, given the same servers and settings, must predict each measured time within a
//! second. If they disagree, the doctor's model of the client is wrong (or the client is).

use std::time::{Duration, Instant};

use vmcrypt_core::provider::{KeyProvider, KeyPurpose};
use vmcrypt_kmip::provider::{KmipProvider, KmipSettings};
use vmcrypt_testkit::faults::{self, Behavior};
use vmcrypt_testkit::pykmip;
use vmcrypt_topology::Topology;
use vmcrypt_topology::timing::time_to_key;

/// The client's timeout in every scenario.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One scenario: the order of servers, each hung, refused or the PyKMIP server.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    Hung,
    Refused,
    Up,
}

/// The doctor's description of `order` (all servers in one site, a 1 ms round trip) with
/// the client's settings.
fn topology(order: &[Server], hedge: Option<Duration>, demote: bool) -> Topology {
    let mut t = String::from("[[site]]\nname = \"here\"\n");
    for i in 0..order.len() {
        t.push_str(&format!(
            "[[kms]]\nname = \"s{i}\"\nsite = \"here\"\ncluster = \"c\"\nvendor = \"pykmip\"\n"
        ));
    }
    let names: Vec<String> = (0..order.len()).map(|i| format!("\"s{i}\"")).collect();
    t.push_str(&format!(
        "[[provider]]\nname = \"kms\"\nservers = [{}]\ntimeout_secs = {}\n",
        names.join(", "),
        TIMEOUT.as_secs_f64()
    ));
    if let Some(h) = hedge {
        t.push_str(&format!("hedge_ms = {}\n", h.as_millis()));
    }
    if demote {
        t.push_str("demote_secs = 300\n");
    }
    Topology::from_toml(&t).expect("valid topology")
}

/// Fetches the key through `order` with the real client, twice (the second fetch is the
/// one demotion changes); returns both times, and what the doctor predicts for each.
fn measure(order: &[Server], hedge: Option<Duration>, demote: bool) -> [(f64, f64); 2] {
    let c = pykmip::shared();
    let maker =
        KmipProvider::new(settings(c, vec![c.servers[0].clone()], None, false)).expect("provider");
    let (id, _) = maker
        .create_kek(&KeyPurpose::Disk("topology-live".into()))
        .expect("a key");
    // The peers live until the fetches are done.
    let hung: Vec<faults::Peer> = order
        .iter()
        .filter(|s| **s == Server::Hung)
        .map(|_| faults::tcp(Behavior::Hang))
        .collect();
    let mut hung_addrs = hung.iter().map(|p| p.addr.clone());
    let servers: Vec<String> = order
        .iter()
        .map(|s| match s {
            Server::Hung => hung_addrs.next().expect("a hung peer"),
            Server::Refused => faults::refused(),
            Server::Up => c.servers[1].clone(),
        })
        .collect();
    let client = KmipProvider::new(settings(c, servers, hedge, demote)).expect("provider");
    let mut measured = [0.0; 2];
    for m in &mut measured {
        let t = Instant::now();
        client.fetch_kek(&id).expect("the key");
        *m = t.elapsed().as_secs_f64();
    }
    let doctor = topology(order, hedge, demote);
    let names = |want: Server| -> Vec<String> {
        (0..order.len())
            .filter(|i| order[*i] == want)
            .map(|i| format!("s{i}"))
            .collect()
    };
    let (h, r) = (names(Server::Hung), names(Server::Refused));
    let h: Vec<&str> = h.iter().map(String::as_str).collect();
    let r: Vec<&str> = r.iter().map(String::as_str).collect();
    let predict = |repeat: bool| {
        // Without demotion a later fetch walks the same order.
        let (secs, by) = time_to_key(&doctor, "kms", "here", &h, &r, repeat && demote)
            .expect("the doctor predicts a key");
        let up = order.iter().position(|s| *s == Server::Up).expect("up");
        assert_eq!(by, format!("s{up}"), "served by the PyKMIP server");
        secs
    };
    [(measured[0], predict(false)), (measured[1], predict(true))]
}

fn settings(
    c: &pykmip::Cluster,
    servers: Vec<String>,
    hedge: Option<Duration>,
    demote: bool,
) -> KmipSettings {
    KmipSettings::new(
        "kms",
        servers,
        c.pki.ca.clone(),
        c.pki.client_cert.clone(),
        c.pki.client_key.clone(),
    )
    .timeout(TIMEOUT)
    .hedge(hedge)
    .demote(demote.then_some(Duration::from_secs(300)))
}

#[test]
fn the_doctors_failover_times_match_the_real_clients() {
    use Server::*;
    let hedge = Some(Duration::from_millis(300));
    let cases: [(&str, &[Server], Option<Duration>, bool); 6] = [
        ("hung, then up", &[Hung, Up], None, false),
        ("hung, refused, then up", &[Hung, Refused, Up], None, false),
        ("two hung, then up", &[Hung, Hung, Up], None, false),
        ("two hung, hedged", &[Hung, Hung, Up], hedge, false),
        ("refused, hung, hedged", &[Refused, Hung, Up], hedge, false),
        ("two hung, demoted", &[Hung, Hung, Up], None, true),
    ];
    // At once, each on a thread of its own (each with its own peers): the waits overlap.
    let results: Vec<_> = std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|&(what, order, hedge, demote)| {
                s.spawn(move || (what, measure(order, hedge, demote)))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("a scenario"))
            .collect()
    });
    for (what, [(first, p1), (second, p2)]) in results {
        println!(
            "{what}: measured {first:.3} s then {second:.3} s; the doctor predicts {p1:.3} s then {p2:.3} s"
        );
        assert!(
            (first - p1).abs() < 1.0,
            "{what}: measured {first:.3} s, predicted {p1:.3} s"
        );
        assert!(
            (second - p2).abs() < 1.0,
            "{what}, the second fetch: measured {second:.3} s, predicted {p2:.3} s"
        );
    }
}
