//! The topology as a picture: Graphviz DOT ([`dot`]) for operators' own tools, and an SVG
//! ([`svg`]) that vmcrypt lays out itself.
//!
//! Both show the same graph: sites as clusters (a cloud and the unsited providers as bands of
//! their own); hosts, datastores, key servers, providers, components and VMs as nodes; edges
//! from what depends to what it depends on, labelled "runs on", "stored on", "encrypted by",
//! "needs at boot", and, from a provider to each of its servers, the place of that server in
//! each site's failover order ("site-a #1"). Every edge of a dependency loop and every single
//! point of failure (a provider's only server, or the one host or datastore all its servers
//! share) is drawn in red.
//!
//! The SVG layout is layered, as Graphviz's `dot` is: each node's rank is one more than the
//! highest rank of what it depends on (loops broken where a depth-first walk meets them), so
//! dependencies sit below what needs them; each site keeps a band of its own across every
//! rank; within a band and rank, nodes are ordered by the mean position of their neighbours
//! in the ranks around them, sweeping up and down a few times to uncross edges.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use crate::model::{Kind, ProviderKind, Topology};
use crate::report::Report;

/// A node of the picture.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    kind: Kind,
    /// The band: a site's name, `cloud`, or empty (providers and what has no site).
    band: String,
    red: bool,
}

/// An edge: `from` depends on `to`.
#[derive(Debug, Clone)]
struct Edge {
    from: usize,
    to: usize,
    label: String,
    red: bool,
}

/// The graph both pictures draw.
struct Picture {
    nodes: Vec<Node>,
    edges: Vec<Edge>,
    /// Bands in drawing order.
    bands: Vec<String>,
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Host => "host",
        Kind::Datastore => "datastore",
        Kind::Kms => "key server",
        Kind::Provider => "provider",
        Kind::Component => "component",
        Kind::Vm => "VM",
        _ => "",
    }
}

impl Picture {
    fn build(t: &Topology, r: &Report) -> Picture {
        let mut nodes: Vec<Node> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let host_site =
            |h: &Option<String>| h.as_ref().and_then(|h| t.host(h)).map(|h| h.site.clone());
        let ds_site = |d: &Option<String>| {
            d.as_ref().and_then(|d| {
                t.datastores
                    .iter()
                    .find(|x| x.name == *d)
                    .map(|x| x.site.clone())
            })
        };
        let mut add = |name: &str, kind: Kind, band: Option<String>| {
            index.insert(name.to_string(), nodes.len());
            nodes.push(Node {
                name: name.to_string(),
                kind,
                band: band.unwrap_or_default(),
                red: false,
            });
        };
        for h in &t.hosts {
            add(&h.name, Kind::Host, Some(h.site.clone()));
        }
        for d in &t.datastores {
            add(&d.name, Kind::Datastore, Some(d.site.clone()));
        }
        for k in &t.kms {
            let band = if k.cloud {
                Some("cloud".to_string())
            } else {
                k.site.clone()
            };
            add(&k.name, Kind::Kms, band);
        }
        for p in &t.providers {
            add(&p.name, Kind::Provider, None);
        }
        for c in &t.components {
            add(
                &c.name,
                Kind::Component,
                host_site(&c.host).or(ds_site(&c.datastore)),
            );
        }
        for v in &t.vms {
            add(
                &v.name,
                Kind::Vm,
                host_site(&v.host).or(ds_site(&v.datastore)),
            );
        }
        let mut edges: Vec<Edge> = Vec::new();
        let mut edge = |from: &str, to: Option<&String>, label: &str| {
            if let (Some(&a), Some(&b)) = (index.get(from), to.and_then(|n| index.get(n)))
                && !edges.iter().any(|e| e.from == a && e.to == b)
            {
                edges.push(Edge {
                    from: a,
                    to: b,
                    label: label.to_string(),
                    red: false,
                });
            }
        };
        for k in &t.kms {
            edge(&k.name, k.host.as_ref(), "runs on");
            edge(&k.name, k.datastore.as_ref(), "stored on");
        }
        for c in &t.components {
            edge(&c.name, c.host.as_ref(), "runs on");
            edge(&c.name, c.datastore.as_ref(), "stored on");
            edge(&c.name, c.encrypted_by.as_ref(), "encrypted by");
            for n in &c.needs {
                edge(&c.name, Some(n), "needs at boot");
            }
        }
        for v in &t.vms {
            edge(&v.name, v.host.as_ref(), "runs on");
            edge(&v.name, v.datastore.as_ref(), "stored on");
            edge(&v.name, v.encrypted_by.as_ref(), "encrypted by");
        }
        for d in &t.datastores {
            edge(&d.name, d.encrypted_by.as_ref(), "encrypted by");
        }
        for h in &t.hosts {
            for n in &h.needs {
                edge(&h.name, Some(n), "needs at boot");
            }
        }
        for p in &t.providers {
            for n in &p.needs {
                edge(&p.name, Some(n), "needs");
            }
            if p.kind != ProviderKind::Kmip {
                continue;
            }
            // Each server with its place in each site's order.
            let mut servers: Vec<&String> =
                p.servers.iter().chain(p.order.values().flatten()).collect();
            servers.dedup();
            let mut seen = BTreeSet::new();
            for s in servers {
                if !seen.insert(s) {
                    continue;
                }
                let places: Vec<String> = t
                    .sites_using(p)
                    .iter()
                    .filter_map(|site| {
                        let o = t.order_for(p, site);
                        o.iter()
                            .position(|x| x == s)
                            .map(|i| format!("{site} #{}", i + 1))
                    })
                    .collect();
                edge(&p.name, Some(s), &places.join(", "));
            }
        }
        let mut pic = Picture {
            nodes,
            edges,
            bands: Vec::new(),
        };
        pic.mark_red(t, r);
        let mut bands: Vec<String> = t.sites.iter().map(|s| s.name.clone()).collect();
        for n in &pic.nodes {
            if !n.band.is_empty() && !bands.contains(&n.band) {
                bands.push(n.band.clone());
            }
        }
        bands.push(String::new());
        pic.bands = bands;
        pic
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Loops (from the `dependency-cycle` findings) and single points of failure, in red.
    fn mark_red(&mut self, t: &Topology, r: &Report) {
        for f in r.of("dependency-cycle") {
            for w in f.components.windows(2) {
                let (Some(a), Some(b)) = (self.find(&w[0]), self.find(&w[1])) else {
                    continue;
                };
                self.nodes[a].red = true;
                self.nodes[b].red = true;
                for e in &mut self.edges {
                    if e.from == a && e.to == b {
                        e.red = true;
                    }
                }
            }
        }
        for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
            let mut servers: Vec<&String> =
                p.servers.iter().chain(p.order.values().flatten()).collect();
            servers.sort();
            servers.dedup();
            let kms: Vec<_> = servers.iter().filter_map(|s| t.kms(s)).collect();
            // (the single point of failure, the edges that make it one)
            let mut spofs: Vec<(String, Vec<(String, String)>)> = Vec::new();
            if let [only] = kms[..] {
                spofs.push((only.name.clone(), vec![(p.name.clone(), only.name.clone())]));
            }
            if kms.len() > 1 {
                for shared in [
                    kms.iter()
                        .map(|k| (k.name.clone(), k.host.clone()))
                        .collect::<Vec<_>>(),
                    kms.iter()
                        .map(|k| (k.name.clone(), k.datastore.clone()))
                        .collect(),
                ] {
                    if let Some((_, Some(first))) = shared.first()
                        && shared.iter().all(|(_, x)| x.as_ref() == Some(first))
                    {
                        let via = shared
                            .iter()
                            .map(|(k, _)| (k.clone(), first.clone()))
                            .collect();
                        spofs.push((first.clone(), via));
                    }
                }
            }
            for (spof, via) in spofs {
                if let Some(i) = self.find(&spof) {
                    self.nodes[i].red = true;
                }
                for (from, to) in via {
                    let (Some(a), Some(b)) = (self.find(&from), self.find(&to)) else {
                        continue;
                    };
                    for e in &mut self.edges {
                        if e.from == a && e.to == b {
                            e.red = true;
                        }
                    }
                }
            }
        }
    }

    /// Each node's rank: one more than the highest rank of what it depends on; the edges a
    /// depth-first walk finds closing a loop are left out.
    fn ranks(&self) -> Vec<usize> {
        let n = self.nodes.len();
        let out: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                self.edges
                    .iter()
                    .filter(|e| e.from == i)
                    .map(|e| e.to)
                    .collect()
            })
            .collect();
        // 0 unvisited, 1 on the stack, 2 done.
        let mut state = vec![0u8; n];
        let mut rank = vec![0usize; n];
        fn visit(i: usize, out: &[Vec<usize>], state: &mut [u8], rank: &mut [usize]) {
            state[i] = 1;
            let mut r = 0;
            for &j in &out[i] {
                match state[j] {
                    0 => {
                        visit(j, out, state, rank);
                        r = r.max(rank[j] + 1);
                    }
                    2 => r = r.max(rank[j] + 1),
                    _ => {} // a loop closes here
                }
            }
            rank[i] = r;
            state[i] = 2;
        }
        for i in 0..n {
            if state[i] == 0 {
                visit(i, &out, &mut state, &mut rank);
            }
        }
        rank
    }
}

/// The topology as Graphviz DOT.
pub fn dot(t: &Topology, r: &Report) -> String {
    let pic = Picture::build(t, r);
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = String::from(
        "digraph topology {\n  graph [fontname=\"Helvetica\", newrank=true];\n  node [fontname=\"Helvetica\", fontsize=11, style=filled, fillcolor=white];\n  edge [fontname=\"Helvetica\", fontsize=9];\n",
    );
    let node_line = |n: &Node| {
        let shape = match n.kind {
            Kind::Host => "box3d",
            Kind::Datastore => "cylinder",
            Kind::Kms => "box",
            Kind::Provider => "hexagon",
            Kind::Vm => "ellipse",
            _ => "component",
        };
        let red = if n.red {
            ", color=red, fontcolor=red, penwidth=2"
        } else {
            ""
        };
        format!(
            "{} [shape={shape}, label={}{red}];",
            q(&n.name),
            q(&format!("{}\n{}", n.name, kind_word(n.kind)))
        )
    };
    for (i, band) in pic.bands.iter().enumerate() {
        let members: Vec<&Node> = pic.nodes.iter().filter(|n| n.band == *band).collect();
        if members.is_empty() {
            continue;
        }
        if band.is_empty() {
            for n in members {
                let _ = writeln!(s, "  {}", node_line(n));
            }
            continue;
        }
        let label = if band == "cloud" && !t.sites.iter().any(|x| x.name == "cloud") {
            "cloud".to_string()
        } else {
            format!("site {band}")
        };
        let _ = writeln!(
            s,
            "  subgraph cluster_{i} {{\n    label={};\n    style=rounded;",
            q(&label)
        );
        for n in members {
            let _ = writeln!(s, "    {}", node_line(n));
        }
        s.push_str("  }\n");
    }
    for e in &pic.edges {
        let red = if e.red {
            ", color=red, fontcolor=red, penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {} -> {} [label={}{red}];",
            q(&pic.nodes[e.from].name),
            q(&pic.nodes[e.to].name),
            q(&e.label)
        );
    }
    s.push_str("}\n");
    s
}

/// Characters' mean width at the SVG's font size, for sizing boxes.
const CHAR_W: f64 = 7.0;
const NODE_H: f64 = 40.0;
const ROW_H: f64 = 110.0;
const GAP: f64 = 30.0;
const PAD: f64 = 24.0;

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The topology as an SVG picture, laid out by vmcrypt (see the module docs).
pub fn svg(t: &Topology, r: &Report) -> String {
    let pic = Picture::build(t, r);
    let lay = Layout::new(t, &pic);
    let (pos, band_x, band_w) = (&lay.pos, &lay.band_x, &lay.band_w);
    let (total_w, total_h, top_y) = (lay.width, lay.height, lay.clusters_top);
    let width_of = |n: &Node| node_width(n);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total_w:.0}\" height=\"{total_h:.0}\" viewBox=\"0 0 {total_w:.0} {total_h:.0}\" font-family=\"Helvetica, Arial, sans-serif\">"
    );
    s.push_str("<title>vmcrypt topology</title>\n<defs>\n<marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555\"/></marker>\n<marker id=\"arrow-red\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#d00\"/></marker>\n</defs>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    // Clusters.
    for (b, name) in pic.bands.iter().enumerate() {
        if band_w[b] == 0.0 || name.is_empty() {
            continue;
        }
        let label = if name == "cloud" && !t.sites.iter().any(|x| x.name == "cloud") {
            "cloud".to_string()
        } else {
            format!("site {name}")
        };
        let dash = if name == "cloud" {
            " stroke-dasharray=\"4 4\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<g class=\"cluster\"><title>{}</title><rect x=\"{:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"10\" fill=\"#f5f7fa\" stroke=\"#8a94a6\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"bold\" fill=\"#3b4455\">{}</text></g>",
            xml(&label),
            band_x[b],
            band_w[b] + PAD * 2.0,
            total_h - top_y - PAD,
            band_x[b] + 10.0,
            top_y + 18.0,
            xml(&label)
        );
    }
    // Edges, red ones last so they are on top.
    let mut order: Vec<&Edge> = pic.edges.iter().collect();
    order.sort_by_key(|e| e.red);
    for e in order {
        let (a, b) = (pos[e.from], pos[e.to]);
        let (wa, wb) = (width_of(&pic.nodes[e.from]), width_of(&pic.nodes[e.to]));
        // From the box's edge toward the other's, clipped to the boxes.
        let clip = |from: (f64, f64), to: (f64, f64), w: f64| {
            let (dx, dy) = (to.0 - from.0, to.1 - from.1);
            let sx = if dx.abs() > 1e-9 {
                (w / 2.0) / dx.abs()
            } else {
                f64::INFINITY
            };
            let sy = if dy.abs() > 1e-9 {
                (NODE_H / 2.0) / dy.abs()
            } else {
                f64::INFINITY
            };
            let k = sx.min(sy).min(1.0);
            (from.0 + dx * k, from.1 + dy * k)
        };
        let p = clip(a, b, wa);
        let q = clip(b, a, wb);
        let (color, marker, width) = if e.red {
            ("#d00", "arrow-red", 2.5)
        } else {
            ("#555", "arrow", 1.2)
        };
        let (mx, my) = ((p.0 + q.0) / 2.0, (p.1 + q.1) / 2.0);
        // A provider's edges fan out from it: their labels go near the server, apart.
        let at = if pic.nodes[e.from].kind == Kind::Provider {
            // Staggered, so that the labels of neighbouring servers do not run together.
            if e.to % 2 == 0 { 0.86 } else { 0.7 }
        } else {
            0.5
        };
        let (lx, ly) = (p.0 + (q.0 - p.0) * at, p.1 + (q.1 - p.1) * at);
        let span = ((a.1 - b.1).abs() / ROW_H).round();
        let curve = if span < 0.5 {
            // Same rank: bow the edge below the row.
            format!(
                "M {:.1} {:.1} Q {mx:.1} {:.1} {:.1} {:.1}",
                p.0,
                p.1,
                my + 45.0,
                q.0,
                q.1
            )
        } else if span > 1.5
            && !pic.nodes[e.from].band.is_empty()
            && !pic.nodes[e.to].band.is_empty()
        {
            // Past a rank: bow it aside, off the nodes in between.
            let side = if e.from % 2 == 0 { 1.0 } else { -1.0 };
            format!(
                "M {:.1} {:.1} Q {:.1} {my:.1} {:.1} {:.1}",
                p.0,
                p.1,
                mx + side * 35.0 * span,
                q.0,
                q.1
            )
        } else {
            format!("M {:.1} {:.1} L {:.1} {:.1}", p.0, p.1, q.0, q.1)
        };
        let title = format!(
            "{} {} {}",
            pic.nodes[e.from].name, e.label, pic.nodes[e.to].name
        );
        let _ = writeln!(
            s,
            "<g class=\"edge{}\"><title>{}</title><path d=\"{curve}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" marker-end=\"url(#{marker})\"/><text x=\"{lx:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"{color}\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">{}</text></g>",
            if e.red { " red" } else { "" },
            xml(&title),
            ly - 3.0,
            xml(&e.label)
        );
    }
    for (i, n) in pic.nodes.iter().enumerate() {
        let (cx, cy) = pos[i];
        let w = width_of(n);
        let (stroke, fill, sw) = if n.red {
            ("#d00", "#fde8e8", 2.5)
        } else {
            ("#3b4455", "white", 1.2)
        };
        let (x0, y0) = (cx - w / 2.0, cy - NODE_H / 2.0);
        let shape = match n.kind {
            Kind::Provider => {
                let k = 12.0;
                format!(
                    "<polygon points=\"{:.1},{cy:.1} {:.1},{y0:.1} {:.1},{y0:.1} {:.1},{cy:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>",
                    x0,
                    x0 + k,
                    x0 + w - k,
                    x0 + w,
                    x0 + w - k,
                    y0 + NODE_H,
                    x0 + k,
                    y0 + NODE_H
                )
            }
            Kind::Vm | Kind::Component => format!(
                "<ellipse cx=\"{cx:.1}\" cy=\"{cy:.1}\" rx=\"{:.1}\" ry=\"{:.1}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>",
                w / 2.0,
                NODE_H / 2.0
            ),
            Kind::Datastore => format!(
                "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" height=\"{NODE_H:.1}\" rx=\"14\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>"
            ),
            _ => format!(
                "<rect x=\"{x0:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" height=\"{NODE_H:.1}\" rx=\"3\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>"
            ),
        };
        let _ = writeln!(
            s,
            "<g class=\"node{}\"><title>{} ({})</title>{shape}<text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"{}\">{}</text><text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#6b7385\">{}</text></g>",
            if n.red { " red" } else { "" },
            xml(&n.name),
            kind_word(n.kind),
            cy - 1.0,
            if n.red { "#b00" } else { "#1d2330" },
            xml(&n.name),
            cy + 12.0,
            kind_word(n.kind)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn node_width(n: &Node) -> f64 {
    let chars = n.name.chars().count().max(kind_word(n.kind).len()) as f64;
    (chars * CHAR_W + 20.0).max(70.0)
}

/// Where everything goes in the SVG (see the module docs).
struct Layout {
    /// Each node's centre.
    pos: Vec<(f64, f64)>,
    /// Each band's left edge and the width of its nodes (0: an empty band).
    band_x: Vec<f64>,
    band_w: Vec<f64>,
    /// Where the site clusters begin (the providers' strip is above them).
    clusters_top: f64,
    width: f64,
    height: f64,
}

impl Layout {
    fn new(t: &Topology, pic: &Picture) -> Layout {
        let _ = t;
        let rank = pic.ranks();
        let n = pic.nodes.len();
        let in_strip = |i: usize| pic.nodes[i].band.is_empty();
        // The ranks the sited nodes use, made dense (the providers' ranks are left out).
        let mut used: Vec<usize> = (0..n).filter(|&i| !in_strip(i)).map(|i| rank[i]).collect();
        used.sort_unstable();
        used.dedup();
        let dense = |r: usize| used.iter().position(|&u| u == r).unwrap_or(0);
        let top = used.len().saturating_sub(1);
        let slot = pic.nodes.iter().map(node_width).fold(70.0, f64::max) + GAP;
        // rows[band][rank] = the nodes there, in order.
        let mut rows: Vec<Vec<Vec<usize>>> = vec![vec![Vec::new(); top + 1]; pic.bands.len()];
        let mut strip: Vec<usize> = Vec::new();
        for i in 0..n {
            if in_strip(i) {
                strip.push(i);
                continue;
            }
            let b = pic
                .bands
                .iter()
                .position(|x| *x == pic.nodes[i].band)
                .unwrap_or(0);
            rows[b][dense(rank[i])].push(i);
        }
        let band_w: Vec<f64> = rows
            .iter()
            .zip(&pic.bands)
            .map(|(r, name)| {
                let nodes = r.iter().map(Vec::len).max().unwrap_or(0) as f64 * slot;
                if nodes == 0.0 {
                    0.0
                } else {
                    // Room for the cluster's title too.
                    nodes.max((name.chars().count() as f64 + 6.0) * 8.0)
                }
            })
            .collect();
        let mut band_x = Vec::new();
        let mut x = PAD;
        for w in &band_w {
            band_x.push(x);
            if *w > 0.0 {
                x += w + 3.0 * PAD;
            }
        }
        let width = (x - PAD)
            .max(strip.len() as f64 * slot + 2.0 * PAD)
            .max(240.0);
        let strip_y = PAD + NODE_H / 2.0;
        let clusters_top = if strip.is_empty() {
            PAD
        } else {
            PAD + NODE_H + 50.0
        };
        let row_y = |k: usize| clusters_top + 40.0 + (top - k) as f64 * ROW_H + NODE_H / 2.0;
        let height = row_y(0) + NODE_H / 2.0 + 20.0 + PAD;
        let mut pos = vec![(0.0f64, 0.0f64); n];
        let place_rows = |rows: &Vec<Vec<Vec<usize>>>, pos: &mut Vec<(f64, f64)>| {
            for (b, by_rank) in rows.iter().enumerate() {
                for (k, row) in by_rank.iter().enumerate() {
                    let off = (band_w[b] - row.len() as f64 * slot) / 2.0;
                    for (j, &i) in row.iter().enumerate() {
                        pos[i] = (band_x[b] + PAD + off + (j as f64 + 0.5) * slot, row_y(k));
                    }
                }
            }
        };
        let neighbours_x = |i: usize, pos: &Vec<(f64, f64)>| {
            let xs: Vec<f64> = pic
                .edges
                .iter()
                .filter_map(|e| {
                    (e.from == i)
                        .then_some(e.to)
                        .or((e.to == i).then_some(e.from))
                        .map(|j| pos[j].0)
                })
                .collect();
            (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
        };
        // The strip: each node above the mean of what it is joined to, kept a slot apart.
        let place_strip = |strip: &mut Vec<usize>, pos: &mut Vec<(f64, f64)>| {
            let mut want: Vec<(f64, usize)> = strip
                .iter()
                .enumerate()
                .map(|(j, &i)| {
                    let home = PAD + (j as f64 + 0.5) * slot;
                    (neighbours_x(i, pos).unwrap_or(home), i)
                })
                .collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut last = f64::NEG_INFINITY;
            for (x, _) in &mut want {
                *x = x.max(last + slot).max(PAD + slot / 2.0);
                last = *x;
            }
            // Pushed past the right edge: shift the whole strip back.
            let over = last - (width - slot / 2.0);
            for (x, i) in &want {
                pos[*i] = (x - over.max(0.0), strip_y);
            }
            *strip = want.into_iter().map(|(_, i)| i).collect();
        };
        // Each row at the mean x of the nodes' neighbours, kept a slot apart and inside the
        // band: nodes sit near what they are joined to instead of in the band's middle.
        let settle = |rows: &Vec<Vec<Vec<usize>>>, pos: &mut Vec<(f64, f64)>| {
            for (b, by_rank) in rows.iter().enumerate() {
                let (lo, hi) = (
                    band_x[b] + PAD + slot / 2.0,
                    band_x[b] + PAD + band_w[b] - slot / 2.0,
                );
                for row in by_rank {
                    let mut xs: Vec<f64> = row
                        .iter()
                        .map(|&i| {
                            neighbours_x(i, pos)
                                .unwrap_or(pos[i].0)
                                .clamp(lo, hi.max(lo))
                        })
                        .collect();
                    // A slot apart, left to right from the band's left edge; then right to
                    // left from its right edge (the band holds its widest row, so both fit).
                    for j in 1..xs.len() {
                        xs[j] = xs[j].max(xs[j - 1] + slot);
                    }
                    let mut bound = hi.max(lo);
                    for x in xs.iter_mut().rev() {
                        *x = x.min(bound);
                        bound = *x - slot;
                    }
                    for (&i, x) in row.iter().zip(xs) {
                        pos[i].0 = x;
                    }
                }
            }
        };
        place_rows(&rows, &mut pos);
        place_strip(&mut strip, &mut pos);
        // Uncross: order each band's row by the mean x of its neighbours, sweeping down and
        // up the ranks.
        for sweep in 0..6 {
            let ks: Vec<usize> = if sweep % 2 == 0 {
                (0..=top).rev().collect()
            } else {
                (0..=top).collect()
            };
            for k in ks {
                for row in rows.iter_mut() {
                    let mut keyed: Vec<(f64, usize)> = row[k]
                        .iter()
                        .map(|&i| (neighbours_x(i, &pos).unwrap_or(pos[i].0), i))
                        .collect();
                    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    row[k] = keyed.into_iter().map(|(_, i)| i).collect();
                }
                place_rows(&rows, &mut pos);
                place_strip(&mut strip, &mut pos);
            }
        }
        for _ in 0..4 {
            settle(&rows, &mut pos);
            place_strip(&mut strip, &mut pos);
        }
        Layout {
            pos,
            band_x,
            band_w,
            clusters_top,
            width: width + PAD,
            height,
        }
    }
}
