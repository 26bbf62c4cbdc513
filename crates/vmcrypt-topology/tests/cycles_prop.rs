//! Property tests on random topologies: every loop the checker reports is a real loop of the
//! dependency graph, and adding a loop always produces a finding that names it.

use std::collections::BTreeMap;

use proptest::prelude::*;
use vmcrypt_topology::check;
use vmcrypt_topology::graph::Graph;
use vmcrypt_topology::model::{
    Component, Datastore, Host, Kms, Provider, ProviderKind, Settings, Site, Topology,
};

/// A component's host, datastore, provider and needs, as indices.
type ComponentShape = (Option<usize>, Option<usize>, Option<usize>, Vec<usize>);

/// Raw choices, turned into a valid topology by `build` (indices wrap around).
#[derive(Debug, Clone)]
struct Shape {
    hosts: usize,
    /// Per datastore: encrypted by provider index, or none.
    datastores: Vec<Option<usize>>,
    /// Per KMS: host, datastore (each optional).
    kms: Vec<(Option<usize>, Option<usize>)>,
    /// Per provider: server indices; needs (component indices).
    providers: Vec<(Vec<usize>, Vec<usize>)>,
    /// Per component: host, datastore, encrypted_by, needs (indices into every name).
    components: Vec<ComponentShape>,
    /// Per host: needs (indices into every name).
    host_needs: Vec<Vec<usize>>,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1..5usize,
        prop::collection::vec(prop::option::of(0..3usize), 1..5),
        prop::collection::vec(
            (prop::option::of(0..5usize), prop::option::of(0..5usize)),
            1..7,
        ),
        prop::collection::vec(
            (
                prop::collection::vec(0..7usize, 1..4),
                prop::collection::vec(0..4usize, 0..2),
            ),
            1..4,
        ),
        prop::collection::vec(
            (
                prop::option::of(0..5usize),
                prop::option::of(0..5usize),
                prop::option::of(0..3usize),
                prop::collection::vec(0..30usize, 0..3),
            ),
            0..4,
        ),
        prop::collection::vec(prop::collection::vec(0..30usize, 0..2), 0..5),
    )
        .prop_map(
            |(hosts, datastores, kms, providers, components, host_needs)| Shape {
                hosts,
                datastores,
                kms,
                providers,
                components,
                host_needs,
            },
        )
}

fn build(s: &Shape) -> Topology {
    let host = |i: usize| format!("h{}", i % s.hosts);
    let ds = |i: usize| format!("d{}", i % s.datastores.len());
    let prov = |i: usize| format!("p{}", i % s.providers.len());
    let kms = |i: usize| format!("k{}", i % s.kms.len());
    let comp = |i: usize| format!("c{}", i % s.components.len().max(1));
    let mut all: Vec<String> = (0..s.hosts).map(host).collect();
    all.extend((0..s.datastores.len()).map(ds));
    all.extend((0..s.kms.len()).map(kms));
    all.extend((0..s.providers.len()).map(prov));
    all.extend((0..s.components.len()).map(comp));
    let any = |i: usize| all[i % all.len()].clone();
    let mut t = Topology {
        settings: Settings::default(),
        sites: vec![Site { name: "s".into() }],
        ..Topology::default()
    };
    for i in 0..s.hosts {
        t.hosts.push(Host {
            name: host(i),
            site: "s".into(),
            rack: None,
            power: None,
            needs: s
                .host_needs
                .get(i)
                .map(|v| v.iter().map(|&n| any(n)).collect())
                .unwrap_or_default(),
        });
    }
    for (i, e) in s.datastores.iter().enumerate() {
        t.datastores.push(Datastore {
            name: ds(i),
            site: "s".into(),
            encrypted_by: e.map(prov),
        });
    }
    for (i, (h, d)) in s.kms.iter().enumerate() {
        t.kms.push(Kms {
            name: kms(i),
            site: Some("s".into()),
            cloud: false,
            host: h.map(host),
            datastore: d.map(ds),
            power: None,
            cluster: "c".into(),
            vendor: "v".into(),
        });
    }
    for (i, (servers, needs)) in s.providers.iter().enumerate() {
        let mut sv: Vec<String> = servers.iter().map(|&k| kms(k)).collect();
        sv.dedup();
        t.providers.push(Provider {
            name: prov(i),
            kind: ProviderKind::Kmip,
            servers: sv,
            order: BTreeMap::new(),
            timeout_secs: 60.0,
            hedge_ms: None,
            demote_secs: None,
            backup: false,
            needs: if s.components.is_empty() {
                Vec::new()
            } else {
                needs.iter().map(|&c| comp(c)).collect()
            },
        });
    }
    for (i, (h, d, e, needs)) in s.components.iter().enumerate() {
        t.components.push(Component {
            name: comp(i),
            kind: "vcenter".into(),
            host: h.map(host),
            datastore: d.map(ds),
            encrypted_by: e.map(prov),
            needs: needs.iter().map(|&n| any(n)).collect(),
        });
    }
    t.validate().expect("generated topologies are valid");
    t
}

fn cycle_findings(t: &Topology) -> Vec<Vec<String>> {
    check(t)
        .findings
        .into_iter()
        .filter(|f| f.check == "dependency-cycle")
        .map(|f| f.components)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_reported_cycle_is_a_real_cycle(s in shape()) {
        let t = build(&s);
        let g = Graph::build(&t);
        for c in cycle_findings(&t) {
            prop_assert!(c.len() >= 2, "{c:?}");
            prop_assert_eq!(c.first(), c.last());
            for w in c.windows(2) {
                let a = g.find(&w[0]).expect("node");
                let b = g.find(&w[1]).expect("node");
                prop_assert!(g.has_edge(a, b), "{} does not need {} ({c:?})", w[0], w[1]);
            }
        }
    }

    #[test]
    fn adding_a_loop_of_components_is_always_found(s in shape()) {
        let mut t = build(&s);
        for (name, other) in [("loop-x", "loop-y"), ("loop-y", "loop-x")] {
            t.components.push(Component {
                name: name.into(),
                kind: "vcenter".into(),
                host: None,
                datastore: None,
                encrypted_by: None,
                needs: vec![other.into()],
            });
        }
        let found = cycle_findings(&t);
        prop_assert!(
            found.iter().any(|c| c.contains(&"loop-x".to_string()) && c.contains(&"loop-y".to_string())),
            "{found:?}"
        );
    }

    #[test]
    fn a_kms_stored_on_what_its_own_provider_unlocks_is_always_found(s in shape()) {
        let mut t = build(&s);
        // A new provider whose only server lives on a datastore that provider encrypts.
        t.datastores.push(Datastore { name: "loop-ds".into(), site: "s".into(), encrypted_by: Some("loop-p".into()) });
        t.kms.push(Kms {
            name: "loop-k".into(), site: Some("s".into()), cloud: false, host: None,
            datastore: Some("loop-ds".into()), power: None, cluster: "c".into(), vendor: "v".into(),
        });
        t.providers.push(Provider {
            name: "loop-p".into(), kind: ProviderKind::Kmip, servers: vec!["loop-k".into()],
            order: BTreeMap::new(), timeout_secs: 60.0, hedge_ms: None, demote_secs: None,
            backup: false, needs: Vec::new(),
        });
        t.validate().expect("valid");
        let r = check(&t);
        let hit = r.findings.iter().any(|f| {
            f.check == "dependency-cycle"
                && f.severity == vmcrypt_topology::Severity::Error
                && ["loop-ds", "loop-k", "loop-p"].iter().all(|n| f.components.contains(&n.to_string()))
        });
        prop_assert!(hit, "{}", r.render());
    }
}

/// The generator is worth something: a good share of random topologies have loops, so the
/// "every reported loop is real" property is exercised on real loops.
#[test]
fn random_topologies_often_have_loops() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = shape();
    let mut with_loops = 0;
    for _ in 0..200 {
        let s = strategy.new_tree(&mut runner).expect("value").current();
        if !cycle_findings(&build(&s)).is_empty() {
            with_loops += 1;
        }
    }
    assert!(
        with_loops >= 40,
        "{with_loops} of 200 random topologies have loops"
    );
    println!("{with_loops} of 200 random topologies have loops");
}
