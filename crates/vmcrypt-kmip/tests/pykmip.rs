//! The KMIP client against real PyKMIP servers (three sharing one database) and against
//! misbehaving peers.

use std::time::{Duration, Instant};

use vmcrypt_core::provider::{KeyId, KeyProvider, KeyPurpose};
use vmcrypt_kmip::provider::{KmipProvider, KmipSettings};
use vmcrypt_kmip::spec::{self, State};
use vmcrypt_kmip::{Error, ErrorKind};
use vmcrypt_testkit::faults::{self, Behavior};
use vmcrypt_testkit::pykmip::{self, Cluster};

fn settings(c: &Cluster, servers: Vec<String>) -> KmipSettings {
    KmipSettings::new(
        "kms",
        servers,
        c.pki.ca.clone(),
        c.pki.client_cert.clone(),
        c.pki.client_key.clone(),
    )
    .timeout(Duration::from_secs(5))
}

fn provider(c: &Cluster, servers: Vec<String>) -> KmipProvider {
    KmipProvider::new(settings(c, servers)).expect("provider")
}

#[test]
fn every_operation_against_pykmip() {
    let c = pykmip::shared();
    let p = provider(c, vec![c.servers[0].clone()]);
    let mut k = p.connect(&c.servers[0]).expect("connect");
    let v = k.version();
    assert!(v.major == 1 && (0..=4).contains(&v.minor), "negotiated {v}");
    let versions = k
        .discover_versions(&vmcrypt_kmip::client::SUPPORTED_VERSIONS)
        .expect("DiscoverVersions");
    assert!(versions.contains(&v));
    let info = k.query().expect("Query");
    for op in [
        spec::Operation::Create,
        spec::Operation::Get,
        spec::Operation::Activate,
        spec::Operation::Destroy,
    ] {
        assert!(
            info.operations.contains(&(op as u32)),
            "server lacks {op:?}"
        );
    }
    let name = format!(
        "vmcrypt-test-{}",
        vmcrypt_core::secret::random_uuid().expect("rng")
    );
    let uid = k.create_aes256(&name).expect("Create");
    assert_eq!(k.state(&uid).expect("GetAttributes"), State::PreActive);
    k.activate(&uid).expect("Activate");
    assert_eq!(k.state(&uid).expect("GetAttributes"), State::Active);
    let key = k.get_aes256(&uid).expect("Get");
    assert_eq!(key.len(), 32);
    assert_eq!(k.locate_by_name(&name).expect("Locate"), vec![uid.clone()]);
    // The same key through server 3: the replication stand-in.
    let mut k3 = p.connect(&c.servers[2]).expect("connect 3");
    assert_eq!(*k3.get_aes256(&uid).expect("Get via server 3"), *key);
    // Destroy of an active key is refused until it is revoked.
    let e = k.destroy(&uid).expect_err("destroying an active key");
    assert!(matches!(e, Error::Operation { .. }), "{e}");
    k.revoke(&uid, spec::REVOCATION_CESSATION).expect("Revoke");
    assert_eq!(k.state(&uid).expect("state"), State::Deactivated);
    k.destroy(&uid).expect("Destroy");
    let e = k.get_aes256(&uid).expect_err("Get after Destroy");
    assert!(
        matches!(
            e,
            Error::Operation {
                reason: Some(spec::REASON_ITEM_NOT_FOUND),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn key_provider_round_trip_and_refusals() {
    let c = pykmip::shared();
    let p = provider(c, c.servers.clone());
    let (id, kek) = p
        .create_kek(&KeyPurpose::Disk("d1".into()))
        .expect("create_kek");
    assert_eq!(
        p.fetch_kek(&id).expect("fetch").expose_secret(),
        kek.expose_secret()
    );
    // Fetch through the last server only.
    let last = provider(c, vec![c.servers[2].clone()]);
    assert_eq!(
        last.fetch_kek(&id).expect("fetch via 3").expose_secret(),
        kek.expose_secret()
    );

    // Revoked: refused with a clear error (not retryable).
    let mut k = p.connect(&c.servers[0]).expect("connect");
    k.revoke(id.as_str(), spec::REVOCATION_KEY_COMPROMISE)
        .expect("revoke");
    let e = p
        .fetch_kek(&id)
        .err()
        .expect("revoked key must not be served");
    assert_eq!(e.kind(), vmcrypt_core::ErrorKind::KeyRefused, "{e}");
    assert!(e.to_string().contains("Compromised"), "{e}");
    // Destroyed.
    k.destroy(id.as_str()).expect("destroy");
    let e = p.fetch_kek(&id).err().expect("destroyed key");
    assert_eq!(e.kind(), vmcrypt_core::ErrorKind::KeyRefused, "{e}");
    // Unknown id.
    let e = p
        .fetch_kek(&KeyId::new("999999").expect("id"))
        .err()
        .expect("unknown key");
    assert_eq!(e.kind(), vmcrypt_core::ErrorKind::KeyRefused, "{e}");
}

#[test]
fn rsa_client_key_works() {
    let c = pykmip::shared();
    let s = KmipSettings::new(
        "kms",
        vec![c.servers[1].clone()],
        c.pki.ca.clone(),
        c.pki.client_rsa_cert.clone(),
        c.pki.client_rsa_key.clone(),
    );
    let p = KmipProvider::new(s).expect("provider");
    let (id, kek) = p
        .create_kek(&KeyPurpose::Vm("vm1".into()))
        .expect("create with an RSA client key");
    assert_eq!(
        p.fetch_kek(&id).expect("fetch").expose_secret(),
        kek.expose_secret()
    );
}

#[test]
fn failover_refused_is_immediate() {
    let c = pykmip::shared();
    let p = provider(c, vec![faults::refused(), c.servers[0].clone()]);
    let t = Instant::now();
    p.create_kek(&KeyPurpose::Disk("refused".into()))
        .expect("served by the second server");
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "a refused server cost {took:?}"
    );
    println!(
        "failover past a refused server: {:.3} s",
        took.as_secs_f64()
    );
}

#[test]
fn failover_hung_server_costs_the_timeout() {
    let c = pykmip::shared();
    {
        let behavior = Behavior::Hang;
        let hang = faults::tcp(behavior);
        let p = KmipProvider::new(
            settings(c, vec![hang.addr.clone(), c.servers[0].clone()])
                .timeout(Duration::from_secs(2)),
        )
        .expect("p");
        let t = Instant::now();
        p.create_kek(&KeyPurpose::Disk("hang".into()))
            .expect("served by the second server");
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "hung server cost {took:?}"
        );
        println!(
            "failover past a hung server with a 2 s timeout: {:.3} s",
            took.as_secs_f64()
        );
    }
}

#[test]
fn failover_closing_and_untrusted_servers() {
    let c = pykmip::shared();
    let close = faults::tcp(Behavior::Close);
    let untrusted = faults::tls(
        Behavior::TlsHang,
        &c.pki.rogue_server_cert,
        &c.pki.rogue_server_key,
    );
    let p = provider(
        c,
        vec![
            close.addr.clone(),
            untrusted.addr.clone(),
            c.servers[1].clone(),
        ],
    );
    let t = Instant::now();
    p.create_kek(&KeyPurpose::Disk("close".into()))
        .expect("served by the third server");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!((close.connections(), untrusted.connections()), (1, 1));
}

#[test]
fn all_servers_down_names_each_one() {
    let c = pykmip::shared();
    let hang = faults::tcp(Behavior::Hang);
    let close = faults::tcp(Behavior::Close);
    let refused = faults::refused();
    let untrusted = faults::tls(
        Behavior::TlsHang,
        &c.pki.rogue_server_cert,
        &c.pki.rogue_server_key,
    );
    let servers = vec![
        refused.clone(),
        hang.addr.clone(),
        close.addr.clone(),
        untrusted.addr.clone(),
    ];
    let p =
        KmipProvider::new(settings(c, servers.clone()).timeout(Duration::from_secs(1))).expect("p");
    let t = Instant::now();
    let e = p
        .with_failover("Get", |k| k.get_aes256("1"))
        .expect_err("all down");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(e.kind(), ErrorKind::Unreachable);
    let text = e.to_string();
    for s in &servers {
        assert!(text.contains(s.as_str()), "{s} missing from: {text}");
    }
    assert!(text.contains("did not answer within 1 s"), "{text}");
    assert!(text.contains("TLS"), "{text}");
    let core: vmcrypt_core::Error = e.into();
    assert_eq!(core.kind(), vmcrypt_core::ErrorKind::KeyService);
    println!("all four servers down: {:.3} s", took.as_secs_f64());
}

#[test]
fn untrusted_client_certificate_is_a_clear_error() {
    let c = pykmip::shared();
    let s = KmipSettings::new(
        "kms",
        vec![c.servers[0].clone()],
        c.pki.ca.clone(),
        c.pki.rogue_client_cert.clone(),
        c.pki.rogue_client_key.clone(),
    )
    .timeout(Duration::from_secs(5));
    let p = KmipProvider::new(s).expect("provider");
    let e = p
        .create_kek(&KeyPurpose::Disk("rogue".into()))
        .err()
        .expect("server must refuse the client");
    let text = e.to_string();
    assert!(text.contains(&c.servers[0]), "{text}");
    assert_eq!(e.kind(), vmcrypt_core::ErrorKind::KeyService, "{text}");
}

#[test]
fn site_order_local_servers_answer_first() {
    let c = pykmip::shared();
    // Site B is two peers that would hang; they must never be contacted while site A answers.
    let b1 = faults::tcp(Behavior::Hang);
    let b2 = faults::tcp(Behavior::Hang);
    let p = provider(
        c,
        vec![
            c.servers[0].clone(),
            c.servers[1].clone(),
            b1.addr.clone(),
            b2.addr.clone(),
        ],
    );
    for i in 0..3 {
        let (id, _) = p
            .create_kek(&KeyPurpose::Disk(format!("site-{i}")))
            .expect("create");
        p.fetch_kek(&id).expect("fetch");
    }
    assert_eq!((b1.connections(), b2.connections()), (0, 0));
}

#[test]
fn bad_peers_fail_within_the_deadline() {
    let c = pykmip::shared();
    for behavior in [
        Behavior::Garbage,
        Behavior::Truncated,
        Behavior::HugeLength,
        Behavior::Trickle,
        Behavior::TlsHang,
    ] {
        let peer = faults::tls(behavior, &c.pki.server_cert, &c.pki.server_key);
        let p =
            KmipProvider::new(settings(c, vec![peer.addr.clone()]).timeout(Duration::from_secs(2)))
                .expect("p");
        let t = Instant::now();
        let e = p
            .with_failover("Get", |k| k.get_aes256("1"))
            .expect_err("bad peer");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(3), "{behavior:?} took {took:?}");
        let Error::AllFailed { failures, .. } = &e else {
            panic!("{e}")
        };
        let inner = &failures[0].1;
        match behavior {
            Behavior::Garbage | Behavior::HugeLength => {
                assert!(matches!(inner, Error::Ttlv { .. }), "{behavior:?}: {inner}")
            }
            Behavior::Truncated => {
                assert!(matches!(inner, Error::Io { .. }), "{behavior:?}: {inner}")
            }
            Behavior::Trickle | Behavior::TlsHang => assert!(
                matches!(inner, Error::Timeout { .. }),
                "{behavior:?}: {inner}"
            ),
            _ => {}
        }
        println!("{behavior:?}: {inner} after {:.3} s", took.as_secs_f64());
    }
}

#[test]
fn dns_server_name_is_checked() {
    let c = pykmip::shared();
    // The servers' certificates carry DNS:localhost and DNS:kms.test as well as the IP.
    let ok = KmipProvider::new(
        settings(c, vec![c.servers[0].clone()]).server_name(Some("localhost".into())),
    )
    .expect("p");
    ok.create_kek(&KeyPurpose::Disk("dns".into()))
        .expect("DNS name in the certificate");
    let bad = KmipProvider::new(
        settings(c, vec![c.servers[0].clone()]).server_name(Some("other.example".into())),
    )
    .expect("p");
    let e = bad
        .create_kek(&KeyPurpose::Disk("dns".into()))
        .err()
        .expect("a name the certificate lacks");
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[test]
fn kept_connections_are_reused_and_new_ones_opened_per_operation_without() {
    let c = pykmip::shared();
    for (reuse, want) in [(true, 1), (false, 6)] {
        let proxy = faults::proxy(&c.servers[0]);
        let p = KmipProvider::new(settings(c, vec![proxy.addr.clone()]).reuse(reuse)).expect("p");
        let (id, kek) = p
            .create_kek(&KeyPurpose::Disk(format!("reuse-{reuse}")))
            .expect("create");
        for _ in 0..5 {
            assert_eq!(
                p.fetch_kek(&id).expect("fetch").expose_secret(),
                kek.expose_secret()
            );
        }
        assert_eq!(
            proxy.connections(),
            want,
            "reuse {reuse}: one create and five fetches"
        );
    }
}

#[test]
fn gets_are_hedged_past_a_hung_server_and_creates_are_not() {
    let c = pykmip::shared();
    let hang = faults::tcp(Behavior::Hang);
    let p = KmipProvider::new(
        settings(c, vec![hang.addr.clone(), c.servers[0].clone()])
            .timeout(Duration::from_secs(3))
            .hedge(Some(Duration::from_millis(200))),
    )
    .expect("p");
    // Create keeps the strict order: it waits out the hung server.
    let t = Instant::now();
    let (id, kek) = p
        .create_kek(&KeyPurpose::Disk("hedge".into()))
        .expect("created on the second server");
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
    // Get: the second server is asked after 200 ms. (Demotion would also skip the hung
    // server now that it failed; a fresh provider shows the hedge alone.)
    let fresh = KmipProvider::new(
        settings(c, vec![hang.addr.clone(), c.servers[0].clone()])
            .timeout(Duration::from_secs(60))
            .hedge(Some(Duration::from_millis(200))),
    )
    .expect("p");
    let before = hang.connections();
    let t = Instant::now();
    let got = fresh.fetch_kek(&id).expect("hedged fetch");
    let took = t.elapsed();
    assert_eq!(got.expose_secret(), kek.expose_secret());
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "hedged Get took {took:?} against a 60 s timeout"
    );
    assert_eq!(
        hang.connections(),
        before + 1,
        "the hung server was asked first"
    );
    println!(
        "hedged Get past a hung server: {:.3} s (hedge 200 ms, timeout 60 s)",
        took.as_secs_f64()
    );
}
