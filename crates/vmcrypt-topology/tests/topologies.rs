//! The example topologies in testdata/topologies/: the two done right have no errors, and each
//! anti-pattern file produces its expected findings (and, where it says so, only warnings).

use std::path::PathBuf;

use vmcrypt_topology::{Kind, Mode, Report, Scenario, Severity, Topology, check};

fn load(name: &str) -> (Topology, Report) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/topologies")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let t = Topology::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let r = check(&t);
    (t, r)
}

fn checks_of(r: &Report, sev: Severity) -> Vec<&'static str> {
    let mut v: Vec<&str> = r
        .findings
        .iter()
        .filter(|f| f.severity == sev)
        .map(|f| f.check)
        .collect();
    v.dedup();
    v
}

/// Exactly these error checks, and these warning checks.
fn expect(name: &str, errors: &[&str], warnings: &[&str]) -> Report {
    let (_, r) = load(name);
    assert_eq!(
        checks_of(&r, Severity::Error),
        errors,
        "{name} errors:\n{}",
        r.render()
    );
    assert_eq!(
        checks_of(&r, Severity::Warning),
        warnings,
        "{name} warnings:\n{}",
        r.render()
    );
    r
}

/// The scenario of `site` in which exactly `failed` fail as `mode` says.
fn row<'a>(r: &'a Report, site: &str, kind: Kind, mode: Mode, failed: &[&str]) -> &'a Scenario {
    r.scenarios
        .iter()
        .find(|s| s.site == site && s.kind == kind && s.mode == mode && s.failed == failed)
        .unwrap_or_else(|| panic!("no {kind:?} {mode:?} {failed:?} at {site}"))
}

/// Its time (to the microsecond) and who serves it.
fn timed(s: &Scenario) -> (Option<f64>, Option<&str>) {
    (
        s.seconds.map(|x| (x * 1e6).round() / 1e6),
        s.served_by.as_deref(),
    )
}

#[test]
fn seed_single_site_every_scenario_in_each_mode() {
    // The seed's KMS-A, KMS-B, KMS-C in one site: a round trip of 1 ms, a fetch of 5 round
    // trips, a 60 s timeout, ordered failover (no hedging), as vCenter does it.
    let r = expect(
        "seed-single-site.toml",
        &[],
        &["no-offsite-kms", "slow-failover"],
    );
    assert!(r.render().contains("0 error(s)"));
    let at = |kind, mode, failed: &[&str]| timed(row(&r, "site-a", kind, mode, failed));
    use Kind::*;
    use Mode::*;
    assert_eq!(at(AllUp, None, &[]), (Some(0.005), Some("KMS-A")));
    assert_eq!(
        at(OneServer, Refused, &["KMS-A"]),
        (Some(0.006), Some("KMS-B"))
    );
    assert_eq!(
        at(OneServer, Hung, &["KMS-A"]),
        (Some(60.005), Some("KMS-B"))
    );
    assert_eq!(
        at(OneServer, Hung, &["KMS-C"]),
        (Some(0.005), Some("KMS-A"))
    );
    let pair = ["KMS-A", "KMS-B"];
    assert_eq!(at(TwoServers, Refused, &pair), (Some(0.007), Some("KMS-C")));
    assert_eq!(at(TwoServers, Hung, &pair), (Some(120.005), Some("KMS-C")));
    // The worst mix: one hung and one refused, 60 s + 1 ms either way.
    assert_eq!(at(TwoServers, Mixed, &pair), (Some(60.006), Some("KMS-C")));
    assert_eq!(
        at(TwoServers, Hung, &["KMS-A", "KMS-C"]),
        (Some(60.005), Some("KMS-B"))
    );
    assert_eq!(
        at(AllButOne, Hung, &["KMS-B", "KMS-C"]),
        (Some(0.005), Some("KMS-A"))
    );
    assert_eq!(at(AllButOne, Hung, &pair), (Some(120.005), Some("KMS-C")));
    let all = ["KMS-A", "KMS-B", "KMS-C"];
    for mode in [Refused, Hung, Mixed] {
        assert_eq!(
            at(LocalSite, mode, &all),
            (Option::None, Option::None),
            "{mode:?}"
        );
    }
    // 1 + 3 singles x 2 + 3 pairs x 3 + the site x 3 + 3 survivors x 3.
    assert_eq!(r.scenarios.len(), 28);
    let f = &r.of("slow-failover")[0];
    assert_eq!(f.site.as_deref(), Some("site-a"));
    assert!(
        f.message
            .contains("9 of 28 failure scenarios take longer than 60.0 s"),
        "{}",
        f.message
    );
    assert!(
        f.message
            .contains("(worst: two servers (KMS-A, KMS-B), hung: 120.0 s)"),
        "{}",
        f.message
    );
    assert!(
        f.fix.contains("hedge_ms = 2000") && f.fix.contains("worst case 4.0 s"),
        "{}",
        f.fix
    );
}

#[test]
fn single_site_three_kms_done_right_but_for_hung_servers() {
    let r = expect(
        "single-site.toml",
        &[],
        &["no-offsite-kms", "slow-failover"],
    );
    assert!(r.render().contains("0 error(s)"));
}

#[test]
fn hedged_reads_and_demotion_follow_the_clients_rules() {
    let (mut t, _) = load("single-site.toml");
    t.providers[0].hedge_ms = Some(2000.0);
    t.providers[0].demote_secs = Some(300.0);
    let r = check(&t);
    let at = |kind, mode, failed: &[&str]| row(&r, "dc1", kind, mode, failed).clone();
    let pair = ["kms-1", "kms-2"];
    // Hung: kms-2 is asked after 2 s, kms-3 after 4 s; it answers 5 ms later.
    let hung = at(Kind::TwoServers, Mode::Hung, &pair);
    assert_eq!(timed(&hung), (Some(4.005), Some("kms-3")));
    // kms-1 hung, kms-2 refused: kms-2 asked at 2 s, refuses 1 ms later, kms-3 at once.
    let mixed = at(Kind::TwoServers, Mode::Mixed, &pair);
    assert_eq!(timed(&mixed), (Some(2.006), Some("kms-3")));
    assert_eq!(mixed.hung, ["kms-1"]);
    // Refusals cost what they cost without hedging.
    let refused = at(Kind::TwoServers, Mode::Refused, &pair);
    assert_eq!(timed(&refused), (Some(0.007), Some("kms-3")));
    // The agent's next fetch asks kms-3 first: both failed servers are demoted.
    assert_eq!(
        hung.repeat_seconds.map(|s| (s * 1e6).round() / 1e6),
        Some(0.005)
    );
    assert!(r.of("slow-failover").is_empty(), "{}", r.render());
}

#[test]
fn two_sites_a_to_f_every_scenario_in_each_mode() {
    // Site-local orders: A, B, C then D, E, F from site-a; 1 ms locally, 25 ms across.
    let r = expect("two-site-a-f.toml", &[], &["slow-failover"]);
    use Kind::*;
    use Mode::*;
    for (site, local, remote) in [
        (
            "site-a",
            ["KMS-A", "KMS-B", "KMS-C"],
            ["KMS-D", "KMS-E", "KMS-F"],
        ),
        (
            "site-b",
            ["KMS-D", "KMS-E", "KMS-F"],
            ["KMS-A", "KMS-B", "KMS-C"],
        ),
    ] {
        let at = |kind, mode, failed: &[&str]| timed(row(&r, site, kind, mode, failed));
        let first = (Some(0.005), Some(local[0]));
        assert_eq!(at(AllUp, None, &[]), first);
        // The other site lost, partitioned, or this site cut off: the first local server.
        for mode in [Refused, Hung, Mixed, Dropped] {
            assert_eq!(at(OtherSite, mode, &remote), first, "{site} {mode:?}");
        }
        assert_eq!(at(CutOff, Dropped, &remote), first);
        // This site's servers lost: three local round trips, then a remote fetch (125 ms).
        let next = Some(remote[0]);
        assert_eq!(at(LocalSite, Refused, &local), (Some(0.128), next));
        assert_eq!(at(LocalSite, Hung, &local), (Some(180.125), next));
        assert_eq!(at(LocalSite, Mixed, &local), (Some(120.126), next));
        // All but the last server: three local and two remote failures.
        let last = remote[2];
        let rest = [local[0], local[1], local[2], remote[0], remote[1]];
        let survivor = Some(last);
        assert_eq!(at(AllButOne, Refused, &rest), (Some(0.178), survivor));
        assert_eq!(at(AllButOne, Hung, &rest), (Some(300.125), survivor));
        // The worst mix refuses a remote server (25 ms) and hangs the other four.
        let mixed = row(&r, site, AllButOne, Mixed, &rest);
        assert_eq!(timed(mixed), (Some(240.15), survivor));
        assert_eq!(mixed.hung.len(), 4);
        assert_eq!(
            at(TwoServers, Hung, &[local[0], local[1]]),
            (Some(120.005), Some(local[2]))
        );
    }
}

#[test]
fn single_kms() {
    let r = expect("single-kms.toml", &["single-kms"], &[]);
    assert_eq!(r.of("single-kms")[0].components, ["prod", "kms-1"]);
}

#[test]
fn two_kms_is_a_warning() {
    let r = expect(
        "two-kms.toml",
        &[],
        &["kms-count", "no-offsite-kms", "slow-failover"],
    );
    assert!(
        r.of("kms-count")[0]
            .message
            .contains("reaches 2 key server(s)")
    );
}

#[test]
fn all_kms_on_one_host() {
    let r = expect(
        "one-host.toml",
        &["shared-host"],
        &["no-offsite-kms", "slow-failover"],
    );
    assert!(r.of("shared-host")[0].message.contains("host h1"));
}

#[test]
fn all_kms_on_one_datastore() {
    let r = expect(
        "one-datastore.toml",
        &["shared-datastore"],
        &["no-offsite-kms", "slow-failover"],
    );
    assert!(
        r.of("shared-datastore")[0]
            .message
            .contains("datastore ds1")
    );
}

#[test]
fn all_kms_in_one_power_domain() {
    let r = expect(
        "one-power-domain.toml",
        &["shared-power"],
        &["no-offsite-kms", "slow-failover"],
    );
    assert!(r.of("shared-power")[0].message.contains("pdu-1"));
}

#[test]
fn servers_that_do_not_replicate() {
    let r = expect(
        "mixed-replication.toml",
        &["mixed-replication"],
        &["no-offsite-kms", "slow-failover"],
    );
    let m = &r.of("mixed-replication")[0].message;
    assert!(
        m.contains("blue (acme-kms): kms-1, kms-2") && m.contains("green (other-kms): kms-3"),
        "{m}"
    );
}

#[test]
fn remote_server_before_local_ones() {
    let r = expect("remote-first.toml", &[], &["remote-first", "slow-failover"]);
    let f = r.of("remote-first");
    assert_eq!(f.len(), 1, "only site-b is wrong");
    assert!(
        f[0].message
            .starts_with("site site-b tries KMS-A, KMS-B, KMS-C")
    );
    assert!(
        f[0].fix
            .contains("KMS-D, KMS-E, KMS-F, KMS-A, KMS-B, KMS-C"),
        "{}",
        f[0].fix
    );
    // Today site-b's keys come from site-a.
    let up = row(&r, "site-b", Kind::AllUp, Mode::None, &[]);
    assert_eq!(up.served_by.as_deref(), Some("KMS-A"));
}

#[test]
fn kms_stored_on_the_datastore_it_unlocks() {
    let r = expect(
        "kms-on-encrypted-datastore.toml",
        &["dependency-cycle", "shared-datastore"],
        &["no-offsite-kms", "slow-failover"],
    );
    let f = r.of("dependency-cycle");
    assert_eq!(f.len(), 1);
    // One concrete loop: vsan needs prod needs a kms needs vsan.
    let c = &f[0].components;
    assert_eq!(c.first(), c.last());
    assert!(
        c.contains(&"vsan".to_string()) && c.contains(&"prod".to_string()),
        "{c:?}"
    );
    assert!(f[0].why.contains("none of these can start"));
}

#[test]
fn one_kms_of_three_on_the_datastore_it_unlocks_is_a_warning() {
    let r = expect(
        "one-kms-on-encrypted-datastore.toml",
        &[],
        &["dependency-cycle", "no-offsite-kms", "slow-failover"],
    );
    let c = &r.of("dependency-cycle")[0].components;
    assert!(
        c.contains(&"kms-1".to_string()) && !c.contains(&"kms-2".to_string()),
        "{c:?}"
    );
}

#[test]
fn vcenter_encrypted_by_the_provider_it_brokers() {
    let r = expect(
        "vcenter-encrypted-by-own-provider.toml",
        &["dependency-cycle"],
        &["no-offsite-kms", "slow-failover"],
    );
    let c = &r.of("dependency-cycle")[0].components;
    assert_eq!(c, &["prod", "vcenter", "prod"]);
}

#[test]
fn kms_hosts_need_vcenter_which_needs_the_kms() {
    let r = expect(
        "kms-host-needs-vcenter.toml",
        &["dependency-cycle"],
        &["no-offsite-kms", "slow-failover"],
    );
    let c = &r.of("dependency-cycle")[0].components;
    // Found through four kinds of component, not a pattern for this case.
    for n in ["vcenter", "vsan", "prod"] {
        assert!(c.contains(&n.to_string()), "{c:?}");
    }
    assert!(
        c.iter().any(|n| n.starts_with("kms-")) && c.iter().any(|n| n.starts_with('h')),
        "{c:?}"
    );
}

#[test]
fn native_provider_without_backup() {
    let r = expect("native-no-backup.toml", &["native-no-backup"], &[]);
    assert!(
        r.of("native-no-backup")[0]
            .fix
            .contains("vmcrypt provider backup local")
    );
}

#[test]
fn single_site_without_offsite_copy() {
    expect(
        "single-site-no-offsite.toml",
        &[],
        &["no-offsite-kms", "slow-failover"],
    );
}

#[test]
fn partition_behind_six_remote_servers_is_slow() {
    let r = expect(
        "slow-partition.toml",
        &[],
        &["remote-first", "slow-failover"],
    );
    // Site-a partitioned from site-b: six connect timeouts of 10 s before B1 answers.
    let a = ["A1", "A2", "A3", "A4", "A5", "A6"];
    let cut = row(&r, "site-b", Kind::OtherSite, Mode::Dropped, &a);
    assert_eq!(timed(cut), (Some(60.005), Some("B1")));
    let f = &r.of("slow-failover")[0];
    assert_eq!(f.site.as_deref(), Some("site-b"));
    assert!(
        f.message.contains("take longer than 30.0 s"),
        "{}",
        f.message
    );
    assert!(
        f.fix
            .starts_with("order site site-b's servers local first: B1, B2, B3, A1"),
        "{}",
        f.fix
    );
}

#[test]
fn malformed_topologies_are_clear_errors() {
    for (text, want) in [
        (
            "[[kms]]\nname = \"k\"\ncluster = \"c\"\nvendor = \"v\"\n",
            "give its site",
        ),
        (
            "[[provider]]\nname = \"p\"\nservers = [\"nope\"]\n",
            "names \"nope\", which is not a kms",
        ),
        (
            "[[site]]\nname = \"x\"\n[[host]]\nname = \"x\"\nsite = \"x\"\n",
            "used by both a site and a host",
        ),
        ("[[sites]]\nname = \"x\"\n", "unknown field"),
        (
            "[[provider]]\nname = \"p\"\ntimeout_secs = -1\n",
            "positive",
        ),
    ] {
        let e = Topology::from_toml(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn json_report_follows_the_documented_schema() {
    let (_, r) = load("remote-first.toml");
    let j = serde_json::to_value(&r).expect("json");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&j), ["availability", "findings", "scenarios"]);
    // Each finding: check, severity, components, message, why, fix, and site where it has one.
    let f = &j["findings"][0];
    assert_eq!(
        keys(f),
        [
            "check",
            "components",
            "fix",
            "message",
            "severity",
            "site",
            "why"
        ]
    );
    assert_eq!(f["check"], "remote-first");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["site"], "site-b");
    assert!(f["components"].as_array().is_some_and(|c| c.len() == 7));
    // Each scenario: provider, site, kind, mode, failed, hung, served_by, seconds.
    let rows = j["scenarios"].as_array().expect("scenarios");
    for s in rows {
        assert_eq!(
            keys(s),
            [
                "failed",
                "hung",
                "kind",
                "mode",
                "provider",
                "seconds",
                "served_by",
                "site"
            ],
            "{s}"
        );
        assert!(
            ["none", "refused", "hung", "mixed", "dropped"]
                .contains(&s["mode"].as_str().unwrap_or("")),
            "{s}"
        );
        assert!(s["seconds"].is_f64() == s["served_by"].is_string(), "{s}");
    }
    let hung = rows
        .iter()
        .find(|s| {
            s["site"] == "site-b"
                && s["kind"] == "one-server"
                && s["mode"] == "hung"
                && s["failed"] == serde_json::json!(["KMS-A"])
        })
        .expect("KMS-A hung, seen from site-b");
    assert_eq!(hung["provider"], "kms");
    assert_eq!(hung["hung"], serde_json::json!(["KMS-A"]));
    assert_eq!(hung["served_by"], "KMS-B");
    // With the agent's demotion, each scenario also has repeat_seconds.
    let (mut t, _) = load("remote-first.toml");
    t.providers[0].demote_secs = Some(300.0);
    let j = serde_json::to_value(check(&t)).expect("json");
    assert!(
        j["scenarios"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|s| s.get("repeat_seconds").is_some())
    );
}

#[test]
fn the_text_table_stays_aligned_whatever_the_names() {
    let text = r#"
        [[site]]
        name = "s"
        [[site]]
        name = "a-site-with-a-very-long-name-indeed"
        [[kms]]
        name = "k"
        site = "s"
        cluster = "c"
        vendor = "v"
        [[kms]]
        name = "a-key-server-with-a-rather-long-name"
        site = "a-site-with-a-very-long-name-indeed"
        cluster = "c"
        vendor = "v"
        [[kms]]
        name = "m"
        site = "s"
        cluster = "c"
        vendor = "v"
        [[provider]]
        name = "p"
        servers = ["k", "a-key-server-with-a-rather-long-name", "m"]
        [provider.order]
        a-site-with-a-very-long-name-indeed = ["a-key-server-with-a-rather-long-name", "k", "m"]
    "#;
    let r = check(&Topology::from_toml(text).expect("valid"));
    let out = r.render();
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("time to a key"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(table.len() > 10, "{out}");
    // Every column starts at the same place on every line: the mode column after the
    // scenario, the seconds right-aligned before "by".
    let col = |l: &str, word: &str| l.find(word);
    let modes: Vec<usize> = table
        .iter()
        .filter_map(|l| {
            ["none", "refused", "hung", "mixed", "dropped"]
                .iter()
                .filter_map(|m| col(l, &format!("  {m}")))
                .min()
        })
        .collect();
    assert_eq!(modes.len(), table.len(), "{out}");
    assert!(modes.windows(2).all(|w| w[0] == w[1]), "{out}");
    let ends: Vec<usize> = table
        .iter()
        .map(|l| {
            l.find(" by ")
                .or_else(|| l.find("no key").map(|i| i + 6))
                .expect("a time")
        })
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "{out}");
}

#[test]
fn availability_estimate_rewards_redundancy_and_is_repeatable() {
    let with_probs = |name: &str| {
        let (mut t, _) = load(name);
        t.availability = Some(vmcrypt_topology::model::Probabilities::default());
        check(&t).availability
    };
    let one = with_probs("single-kms.toml");
    let three = with_probs("single-site-no-offsite.toml");
    assert_eq!(one.len(), 1);
    // One server: down whenever it, its host, datastore or power is (about 1.7 %).
    let p1 = one[0].probability;
    assert!((0.975..0.99).contains(&p1), "{p1}");
    // Three servers on separate hosts, datastores and feeds: far fewer moments without a key.
    assert!(
        three.iter().all(|a| a.failures * 50 < one[0].failures),
        "{three:?} vs {one:?}"
    );
    // Seeded: the same input gives the same estimate.
    assert_eq!(with_probs("single-kms.toml"), one);
    // The two-site example carries its own probabilities; each site keeps its keys through
    // the other's failures.
    let (_, r) = load("two-site-a-f.toml");
    assert_eq!(r.availability.len(), 2);
    for a in &r.availability {
        assert!(a.probability > 0.9999, "{a:?}");
    }
    assert!(r.render().contains("key availability"));
}
