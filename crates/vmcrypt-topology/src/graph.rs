//! The dependency graph: what each component needs before it can come back after a power cycle,
//! with a general cycle search (strongly connected components) and a cold-start simulation.
//!
//! Edges ("A needs B"):
//! - a key server needs the host it runs on and the datastore it is stored on;
//! - an encrypted datastore, VM or component needs its key provider;
//! - a VM or component needs its host and datastore;
//! - a provider needs *one* of its servers (the only "any of" edges), and whatever it lists in
//!   `needs` (e.g. the vCenter that brokers keys);
//! - a host, provider or component needs whatever it lists in `needs`.

use std::collections::{HashMap, VecDeque};

use crate::model::{Kind, ProviderKind, Topology};

/// A node: a named thing of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its kind.
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

/// The graph.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Nodes, indexed by position.
    pub nodes: Vec<Node>,
    /// Dependencies every one of which must be up.
    pub all: Vec<Vec<usize>>,
    /// Dependencies one of which must be up (a provider's servers); `None` when there is no
    /// such group.
    pub any: Vec<Option<Vec<usize>>>,
    index: HashMap<String, usize>,
}

impl Graph {
    /// Builds the graph of a validated topology.
    pub fn build(t: &Topology) -> Graph {
        let mut g = Graph {
            nodes: Vec::new(),
            all: Vec::new(),
            any: Vec::new(),
            index: HashMap::new(),
        };
        let names = t
            .hosts
            .iter()
            .map(|x| (Kind::Host, &x.name))
            .chain(t.datastores.iter().map(|x| (Kind::Datastore, &x.name)))
            .chain(t.kms.iter().map(|x| (Kind::Kms, &x.name)))
            .chain(t.providers.iter().map(|x| (Kind::Provider, &x.name)))
            .chain(t.components.iter().map(|x| (Kind::Component, &x.name)))
            .chain(t.vms.iter().map(|x| (Kind::Vm, &x.name)));
        for (kind, name) in names {
            g.index.insert(name.clone(), g.nodes.len());
            g.nodes.push(Node {
                kind,
                name: name.clone(),
            });
            g.all.push(Vec::new());
            g.any.push(None);
        }
        let need = |g: &mut Graph, from: &str, to: Option<&String>| {
            if let (Some(&a), Some(b)) = (g.index.get(from), to.and_then(|t| g.index.get(t))) {
                let b = *b;
                if !g.all[a].contains(&b) {
                    g.all[a].push(b);
                }
            }
        };
        for h in &t.hosts {
            for n in &h.needs {
                need(&mut g, &h.name, Some(n));
            }
        }
        for d in &t.datastores {
            need(&mut g, &d.name, d.encrypted_by.as_ref());
        }
        for k in &t.kms {
            need(&mut g, &k.name, k.host.as_ref());
            need(&mut g, &k.name, k.datastore.as_ref());
        }
        for p in &t.providers {
            for n in &p.needs {
                need(&mut g, &p.name, Some(n));
            }
            if p.kind == ProviderKind::Kmip {
                let mut servers: Vec<usize> = Vec::new();
                let lists = std::iter::once(&p.servers).chain(p.order.values());
                for s in lists.flatten() {
                    if let Some(&i) = g.index.get(s)
                        && !servers.contains(&i)
                    {
                        servers.push(i);
                    }
                }
                let at = g.index[&p.name];
                g.any[at] = Some(servers);
            }
        }
        for c in &t.components {
            need(&mut g, &c.name, c.host.as_ref());
            need(&mut g, &c.name, c.datastore.as_ref());
            need(&mut g, &c.name, c.encrypted_by.as_ref());
            for n in &c.needs {
                need(&mut g, &c.name, Some(n));
            }
        }
        for v in &t.vms {
            need(&mut g, &v.name, v.host.as_ref());
            need(&mut g, &v.name, v.datastore.as_ref());
            need(&mut g, &v.name, v.encrypted_by.as_ref());
        }
        g
    }

    /// The node with this name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Every dependency of `n`, "all" and "any of" alike.
    pub fn successors(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.all[n]
            .iter()
            .chain(self.any[n].iter().flatten())
            .copied()
    }

    /// Whether `a` depends directly on `b`.
    pub fn has_edge(&self, a: usize, b: usize) -> bool {
        self.successors(a).any(|x| x == b)
    }

    /// Which nodes come back after everything was off at once: repeatedly bring up every node
    /// whose dependencies are up. What never comes up is stuck in a loop (or depends on one).
    pub fn cold_start(&self) -> Vec<bool> {
        let mut up = vec![false; self.nodes.len()];
        loop {
            let mut changed = false;
            for n in 0..self.nodes.len() {
                if up[n] {
                    continue;
                }
                let all_up = self.all[n].iter().all(|&d| up[d]);
                let any_up = self.any[n]
                    .as_ref()
                    .is_none_or(|v| v.iter().any(|&d| up[d]));
                if all_up && any_up {
                    up[n] = true;
                    changed = true;
                }
            }
            if !changed {
                return up;
            }
        }
    }

    /// The strongly connected components that contain a cycle (more than one node, or one
    /// node that depends on itself), each sorted.
    pub fn cyclic_components(&self) -> Vec<Vec<usize>> {
        let n = self.nodes.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut next = 0;
        let mut out = Vec::new();
        // Iterative Tarjan: (node, position in its successor list).
        for root in 0..n {
            if index[root] != usize::MAX {
                continue;
            }
            let mut work: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(&(v, i)) = work.last() {
                if i == 0 && index[v] == usize::MAX {
                    index[v] = next;
                    low[v] = next;
                    next += 1;
                    stack.push(v);
                    on_stack[v] = true;
                }
                if let Some(w) = self.successors(v).nth(i) {
                    if let Some(top) = work.last_mut() {
                        top.1 += 1;
                    }
                    if index[w] == usize::MAX {
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if comp.len() > 1 || self.has_edge(v, v) {
                        comp.sort_unstable();
                        out.push(comp);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// A shortest cycle through the first node of a cyclic component, staying inside it:
    /// `[a, b, ..., a]`, each node depending on the next.
    pub fn cycle_in(&self, comp: &[usize]) -> Vec<usize> {
        let start = comp[0];
        if self.has_edge(start, start) {
            return vec![start, start];
        }
        let inside = |x: usize| comp.binary_search(&x).is_ok();
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::new();
        for s in self.successors(start).filter(|&s| inside(s)) {
            if s == start {
                return vec![start, start];
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(s) {
                e.insert(start);
                queue.push_back(s);
            }
        }
        while let Some(v) = queue.pop_front() {
            for w in self.successors(v).filter(|&w| inside(w)) {
                if w == start {
                    let mut path = vec![start, v];
                    let mut at = v;
                    while let Some(&p) = prev.get(&at) {
                        if p == start {
                            break;
                        }
                        path.push(p);
                        at = p;
                    }
                    // path is start, v, ..., (first step); reverse the middle to walk forward.
                    let mut forward = vec![start];
                    forward.extend(path[1..].iter().rev());
                    forward.push(start);
                    return forward;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                    e.insert(v);
                    queue.push_back(w);
                }
            }
        }
        // A cyclic component always has a cycle through each of its nodes.
        vec![start, start]
    }
}
