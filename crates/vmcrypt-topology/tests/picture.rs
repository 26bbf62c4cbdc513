//! The pictures of a topology: the SVG is well-formed XML and names every component; the
//! seed's key servers stored on the datastore their provider encrypts are a loop drawn in red;
//! each site's failover order is numbered; the DOT has the same graph with sites as clusters.

use std::path::PathBuf;

use vmcrypt_topology::picture::{dot, svg};
use vmcrypt_topology::{Topology, check};

fn load(name: &str) -> Topology {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/topologies")
        .join(name);
    Topology::from_toml(&std::fs::read_to_string(&p).expect("read")).expect("valid")
}

/// Every name of the topology's components.
fn names(t: &Topology) -> Vec<String> {
    let mut v: Vec<String> = t.hosts.iter().map(|x| x.name.clone()).collect();
    v.extend(t.datastores.iter().map(|x| x.name.clone()));
    v.extend(t.kms.iter().map(|x| x.name.clone()));
    v.extend(t.providers.iter().map(|x| x.name.clone()));
    v.extend(t.components.iter().map(|x| x.name.clone()));
    v.extend(t.vms.iter().map(|x| x.name.clone()));
    v
}

/// The `<g>` elements of a class (`node`, `edge`, `cluster`, with ` red` when drawn red):
/// (title, red).
fn groups(doc: &roxmltree::Document<'_>, class: &str) -> Vec<(String, bool)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("g"))
        .filter_map(|g| {
            let c = g.attribute("class")?;
            let mut words = c.split(' ');
            (words.next() == Some(class)).then(|| {
                let title = g
                    .children()
                    .find(|c| c.has_tag_name("title"))
                    .and_then(|t| t.text())
                    .unwrap_or("")
                    .to_string();
                (title, c.split(' ').any(|w| w == "red"))
            })
        })
        .collect()
}

#[test]
fn the_svg_names_everything_and_draws_the_loop_in_red() {
    let t = load("kms-on-encrypted-datastore.toml");
    let r = check(&t);
    let text = svg(&t, &r);
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    for n in names(&t) {
        assert!(texts.contains(&n.as_str()), "{n} is not drawn");
    }
    let loop_ = &r.of("dependency-cycle")[0].components;
    assert!(loop_.len() >= 4, "{loop_:?}");
    let edges = groups(&doc, "edge");
    let nodes = groups(&doc, "node");
    // Each step of the loop is an edge drawn red, and each thing on it a red node.
    for w in loop_.windows(2) {
        let red = edges.iter().any(|(title, red)| {
            *red && title.starts_with(&format!("{} ", w[0]))
                && title.ends_with(&format!(" {}", w[1]))
        });
        assert!(red, "{} -> {} is not a red edge: {edges:?}", w[0], w[1]);
        assert!(
            nodes
                .iter()
                .any(|(title, red)| *red && title.starts_with(&format!("{} (", w[0])))
        );
    }
    // Only what the findings name is red: the other servers' hosts are not.
    for host in ["h2", "h3"] {
        assert!(
            nodes
                .iter()
                .any(|(title, red)| !red && title.starts_with(&format!("{host} ("))),
            "{host}"
        );
    }
    assert_eq!(groups(&doc, "cluster"), [("site dc1".to_string(), false)]);
}

#[test]
fn two_sites_are_two_clusters_with_each_order_numbered() {
    let t = load("two-site-a-f.toml");
    let r = check(&t);
    let text = svg(&t, &r);
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let clusters: Vec<String> = groups(&doc, "cluster").into_iter().map(|c| c.0).collect();
    assert_eq!(clusters, ["site site-a", "site site-b"]);
    let edges = groups(&doc, "edge");
    // KMS-A is first for site-a and fourth for site-b; KMS-D the other way round.
    for want in [
        "kms site-a #1, site-b #4 KMS-A",
        "kms site-a #4, site-b #1 KMS-D",
    ] {
        assert!(
            edges.iter().any(|(title, _)| title == want),
            "{want}: {edges:?}"
        );
    }
    // Nothing is red: no loop, no single point of failure.
    assert!(
        edges
            .iter()
            .chain(&groups(&doc, "node"))
            .all(|(_, red)| !red)
    );
    // Every node inside the picture, none on top of another.
    let (w, h) = (
        doc.root_element()
            .attribute("width")
            .and_then(|v| v.parse::<f64>().ok())
            .expect("width"),
        doc.root_element()
            .attribute("height")
            .and_then(|v| v.parse::<f64>().ok())
            .expect("height"),
    );
    let mut centres = Vec::new();
    for g in doc
        .descendants()
        .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("node")))
    {
        let label = g
            .descendants()
            .find(|n| n.has_tag_name("text"))
            .expect("label");
        let x: f64 = label
            .attribute("x")
            .and_then(|v| v.parse().ok())
            .expect("x");
        let y: f64 = label
            .attribute("y")
            .and_then(|v| v.parse().ok())
            .expect("y");
        assert!(
            x > 0.0 && x < w && y > 0.0 && y < h,
            "({x}, {y}) outside {w} x {h}"
        );
        centres.push((x, y));
    }
    for (i, a) in centres.iter().enumerate() {
        for b in &centres[i + 1..] {
            assert!(
                (a.0 - b.0).abs() > 60.0 || (a.1 - b.1).abs() > 30.0,
                "{a:?} and {b:?} overlap"
            );
        }
    }
}

#[test]
fn the_dot_graph_has_clusters_the_loop_in_red_and_every_name() {
    let t = load("kms-on-encrypted-datastore.toml");
    let r = check(&t);
    let d = dot(&t, &r);
    assert!(
        d.starts_with("digraph topology {") && d.trim_end().ends_with('}'),
        "{d}"
    );
    assert!(
        d.contains("subgraph cluster_0 {\n    label=\"site dc1\";"),
        "{d}"
    );
    for n in names(&t) {
        assert!(d.contains(&format!("\"{n}\" [shape=")), "{n}: {d}");
    }
    let loop_ = &r.of("dependency-cycle")[0].components;
    for w in loop_.windows(2) {
        let edge = d
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("\"{}\" -> \"{}\"", w[0], w[1]))
            })
            .unwrap_or_else(|| panic!("no edge {} -> {}: {d}", w[0], w[1]));
        assert!(edge.contains("color=red"), "{edge}");
    }
    // Names with quotes stay one DOT string.
    let mut odd = t.clone();
    odd.hosts[0].name = "h\"1".into();
    for k in &mut odd.kms {
        if k.host.as_deref() == Some("h1") {
            k.host = Some("h\"1".into());
        }
    }
    assert!(dot(&odd, &check(&odd)).contains("\"h\\\"1\" [shape="));
}
