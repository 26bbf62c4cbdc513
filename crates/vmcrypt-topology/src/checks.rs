//! The checks. Each returns findings with the components involved, why it matters and a fix.

use std::collections::BTreeSet;

use crate::graph::Graph;
use crate::model::{Kms, Provider, ProviderKind, Topology};
use crate::report::{Finding, Severity};

fn finding(
    check: &'static str,
    severity: Severity,
    components: Vec<String>,
    message: String,
    why: &str,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        components,
        site: None,
        message,
        why: why.to_string(),
        fix: fix.into(),
    }
}

fn servers<'a>(t: &'a Topology, p: &Provider) -> Vec<&'a Kms> {
    let mut names: Vec<&String> = p.servers.iter().chain(p.order.values().flatten()).collect();
    names.sort();
    names.dedup();
    names.into_iter().filter_map(|n| t.kms(n)).collect()
}

/// Too few key servers: a single one, fewer than two (warn below three) for a site, none
/// outside a site.
pub fn kms_count(t: &Topology) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        let all = servers(t, p);
        if all.len() <= 1 {
            out.push(finding(
                "single-kms",
                Severity::Error,
                std::iter::once(p.name.clone()).chain(all.iter().map(|k| k.name.clone())).collect(),
                format!("provider {} has {} key server(s)", p.name, all.len()),
                "one server is a single point of failure: if it is lost with its database, every key it holds and every VM and datastore encrypted with them are lost",
                "add at least two more servers that replicate with it (three in all), on separate hosts, datastores and power",
            ));
            continue;
        }
        for site in t.sites_using(p) {
            let order = t.order_for(p, &site);
            let n = order.len();
            if n < 3 {
                out.push(finding(
                    "kms-count",
                    if n < 2 { Severity::Error } else { Severity::Warning },
                    std::iter::once(p.name.clone()).chain(order.iter().cloned()).collect(),
                    format!("site {site} reaches {n} key server(s) of provider {}", p.name),
                    "with two servers, one failure leaves a single point of failure until it is repaired",
                    format!("list at least three replicating servers in site {site}'s order"),
                ).at(&site));
            }
        }
        let sites: BTreeSet<Option<&str>> = all
            .iter()
            .map(|k| if k.cloud { None } else { k.site.as_deref() })
            .collect();
        if let [Some(only)] = sites.iter().copied().collect::<Vec<_>>()[..] {
            out.push(finding(
                "no-offsite-kms",
                Severity::Warning,
                std::iter::once(p.name.clone()).chain(all.iter().map(|k| k.name.clone())).collect(),
                format!("every key server of provider {} is in site {only}", p.name),
                "a site disaster (fire, flood, a long power cut) takes every copy of the keys with it",
                "replicate to a server in another site or a cloud key service, last in the order",
            ).at(only));
        }
    }
    out
}

/// Every server of a provider on one host, one datastore or one power domain.
pub fn shared_fate(t: &Topology) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        let all = servers(t, p);
        if all.len() < 2 {
            continue; // single-kms says it already
        }
        let same = |f: &dyn Fn(&Kms) -> Option<String>| -> Option<String> {
            let first = f(all[0])?;
            all.iter()
                .all(|k| f(k).as_deref() == Some(first.as_str()))
                .then_some(first)
        };
        let names = || -> Vec<String> {
            std::iter::once(p.name.clone())
                .chain(all.iter().map(|k| k.name.clone()))
                .collect()
        };
        if let Some(h) = same(&|k| k.host.clone()) {
            out.push(finding(
                "shared-host",
                Severity::Error,
                names(),
                format!("every key server of provider {} runs on host {h}", p.name),
                "one host failure (hardware, a bad patch, a tripped power cord) stops every key server at once",
                "spread the KMS VMs over hosts (anti-affinity rules), or use appliances",
            ));
        }
        if let Some(d) = same(&|k| k.datastore.clone()) {
            out.push(finding(
                "shared-datastore",
                Severity::Error,
                names(),
                format!("every key server of provider {} is stored on datastore {d}", p.name),
                "one datastore outage or corruption stops every key server, and may take their databases",
                "store the KMS VMs on different datastores, none encrypted by this provider",
            ));
        }
        // One host is one power domain: the host finding says it already.
        let one_host = same(&|k| k.host.clone()).is_some();
        if let Some(pw) = same(&|k| t.power_of(k)).filter(|_| !one_host) {
            out.push(finding(
                "shared-power",
                Severity::Error,
                names(),
                format!(
                    "every key server of provider {} is in power domain {pw}",
                    p.name
                ),
                "one power failure stops every key server at once",
                "place the key servers on separate power feeds (or sites)",
            ));
        }
    }
    out
}

/// Servers in one provider that do not replicate with each other.
pub fn replication(t: &Topology) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        let all = servers(t, p);
        let clusters: BTreeSet<(&str, &str)> = all
            .iter()
            .map(|k| (k.cluster.as_str(), k.vendor.as_str()))
            .collect();
        if clusters.len() > 1 {
            let groups: Vec<String> = clusters
                .iter()
                .map(|(c, v)| {
                    let members: Vec<&str> = all
                        .iter()
                        .filter(|k| k.cluster == *c && k.vendor == *v)
                        .map(|k| k.name.as_str())
                        .collect();
                    format!("{c} ({v}): {}", members.join(", "))
                })
                .collect();
            out.push(finding(
                "mixed-replication",
                Severity::Error,
                std::iter::once(p.name.clone()).chain(all.iter().map(|k| k.name.clone())).collect(),
                format!(
                    "provider {} lists servers that do not replicate with each other: {}",
                    p.name,
                    groups.join("; ")
                ),
                "a key created on one server is unknown to the others: when the first fails over, disks and VMs it encrypted cannot be opened",
                "list only servers of one replicating cluster (one vendor) in a provider; make another provider for the other cluster",
            ));
        }
    }
    out
}

/// A site's order that puts a remote (or cloud) server before a local one.
pub fn site_order(t: &Topology) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        for site in t.sites_using(p) {
            let order = t.order_for(p, &site);
            let local = |n: &String| {
                t.kms(n)
                    .is_some_and(|k| !k.cloud && k.site.as_deref() == Some(site.as_str()))
            };
            let Some(last_local) = order.iter().rposition(local) else {
                continue;
            };
            let early: Vec<&String> = order[..last_local].iter().filter(|n| !local(n)).collect();
            if early.is_empty() {
                continue;
            }
            let mut better: Vec<String> = order.iter().filter(|n| local(n)).cloned().collect();
            better.extend(order.iter().filter(|n| !local(n)).cloned());
            out.push(finding(
                "remote-first",
                Severity::Warning,
                std::iter::once(p.name.clone()).chain(order.iter().cloned()).collect(),
                format!(
                    "site {site} tries {} of provider {} before its local server(s)",
                    early.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    p.name
                ),
                "every key fetch crosses the WAN, and when that remote server hangs every fetch waits out its timeout before reaching a local one",
                format!("order for site {site}: {}", better.join(", ")),
            ).at(&site));
        }
    }
    out
}

/// A native provider whose keystore has no recorded backup.
pub fn native_backup(t: &Topology) -> Vec<Finding> {
    t.providers
        .iter()
        .filter(|p| p.kind == ProviderKind::Native && !p.backup)
        .map(|p| {
            finding(
                "native-no-backup",
                Severity::Error,
                vec![p.name.clone()],
                format!("native provider {} has no backup recorded", p.name),
                "the native provider's keystore is the only copy of its key: lose the host's disk and every disk it protects is lost",
                format!("vmcrypt provider backup {} --out FILE, store it offline, then set backup = true", p.name),
            )
        })
        .collect()
}

/// Dependency cycles, by a general search (strongly connected components), each with one
/// concrete cycle. An error when something in it cannot come back after a full power cycle;
/// a warning when it recovers only because another server of a provider in the loop is up.
pub fn cycles(g: &Graph) -> Vec<Finding> {
    let up = g.cold_start();
    g.cyclic_components()
        .into_iter()
        .map(|comp| {
            let cycle = g.cycle_in(&comp);
            let stuck: Vec<usize> = comp.iter().copied().filter(|&n| !up[n]).collect();
            let names: Vec<String> = cycle
                .iter()
                .map(|&n| format!("{} {}", g.nodes[n].kind.as_str(), g.nodes[n].name))
                .collect();
            let (severity, why) = if stuck.is_empty() {
                (
                    Severity::Warning,
                    "the loop is broken today only because another server of a provider in it is up: if those go down too, nothing in the loop can come back".to_string(),
                )
            } else {
                (
                    Severity::Error,
                    format!(
                        "after a full power cycle none of these can start, each waiting for the next: {}",
                        stuck.iter().map(|&n| g.nodes[n].name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )
            };
            finding(
                "dependency-cycle",
                severity,
                cycle.iter().map(|&n| g.nodes[n].name.clone()).collect(),
                if comp.len() + 1 > cycle.len() {
                    format!(
                        "dependency loop: {} (and more loops among: {})",
                        names.join(" needs "),
                        comp.iter().map(|&n| g.nodes[n].name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                } else {
                    format!("dependency loop: {}", names.join(" needs "))
                },
                &why,
                "break the loop: keep key servers (and what they need to boot: hosts, datastores, vCenter) outside anything encrypted by the provider they serve, e.g. on a separate management cluster with unencrypted storage",
            )
        })
        .collect()
}
