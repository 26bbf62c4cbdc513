//! `vmcrypt topology init`: a topology file to start from, written from what a host's vmcrypt
//! configuration knows (its providers, their servers in this host's order, timeouts, hedging
//! and demotion), with commented placeholders for what only the operator knows (sites, hosts,
//! datastores, power, replication clusters, vendors). The file parses as it is, so `topology
//! check` runs on it at once; its findings then say what is left to describe.

use std::fmt::Write as _;

/// A key provider as a host's configuration has it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfiguredProvider {
    /// A KMIP cluster.
    Kmip {
        /// Its name.
        name: String,
        /// Its servers (host:port), in the order this host tries them.
        servers: Vec<String>,
        /// Response timeout, seconds.
        timeout_secs: u64,
        /// Hedge delay for reads, milliseconds (0: off).
        hedge_ms: u64,
        /// Demotion of a failed server, seconds (0: off).
        demote_secs: u64,
    },
    /// vmcrypt's embedded provider.
    Native {
        /// Its name.
        name: String,
        /// Whether a backup of its keystore was exported.
        backed_up: bool,
    },
}

/// The site this host is put in until the operator names it.
pub const THIS_SITE: &str = "this-site";

fn quote(s: &str) -> String {
    // TOML basic strings: the names here are host:port and provider names; escape the two
    // characters that could end one early.
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn list(v: &[String]) -> String {
    v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
}

/// The topology file for `providers` (from the configuration at `source`, named in the
/// header), or, with none, a commented skeleton to fill in by hand.
pub fn template(providers: &[ConfiguredProvider], source: Option<&str>) -> String {
    let mut s = String::new();
    let from = source.map_or(String::new(), |p| format!(" from {p}"));
    let _ = writeln!(
        s,
        "# A topology for `vmcrypt topology check` (docs/topology.md), written by\n\
         # `vmcrypt topology init`{from}.\n\
         # Filled in: what vmcrypt's configuration knows (providers, their servers in this\n\
         # host's order, timeouts, hedging, demotion). Commented: what only you know. Put each\n\
         # server in its site, on its host and datastore (or power feed, for an appliance),\n\
         # with its replication cluster and vendor; add the hosts, datastores and components\n\
         # (vCenter) that need keys; then run `vmcrypt topology check` on this file.\n"
    );
    let _ = writeln!(
        s,
        "# [settings]\n# local_rtt_ms = 1\n# remote_rtt_ms = 30\n# max_fetch_secs = 60          # a slower scenario is a warning (default: the timeout)\n"
    );
    let _ = writeln!(
        s,
        "[[site]]\nname = {}   # this host's site: rename it (here and below)\n",
        quote(THIS_SITE)
    );
    let _ = writeln!(
        s,
        "# [[site]]\n# name = \"other-site\"\n\n\
         # [[host]]\n# name = \"esx-1\"\n# site = {}\n# power = \"feed-a\"\n# needs = [\"vcenter\"]      # what it needs to boot or join\n\n\
         # [[datastore]]\n# name = \"vsan-1\"\n# site = {}\n# encrypted_by = \"PROVIDER\"   # for an encrypted datastore\n\n\
         # [[component]]\n# name = \"vcenter\"\n# kind = \"vcenter\"\n# host = \"esx-1\"\n# datastore = \"vsan-1\"\n",
        quote(THIS_SITE),
        quote(THIS_SITE)
    );
    let mut seen: Vec<&str> = Vec::new();
    for p in providers {
        let ConfiguredProvider::Kmip { servers, .. } = p else {
            continue;
        };
        for k in servers {
            if seen.contains(&k.as_str()) {
                continue;
            }
            seen.push(k);
            let _ = writeln!(
                s,
                "[[kms]]\nname = {}\nsite = {}      # where it runs\n\
                 cluster = \"cluster-1\"   # its replication cluster\n\
                 vendor = \"unknown\"      # its product\n\
                 # host = \"...\"          # the host its VM runs on (none: an appliance)\n\
                 # datastore = \"...\"     # the datastore its VM is stored on\n\
                 # power = \"...\"         # an appliance's power feed\n",
                quote(k),
                quote(THIS_SITE)
            );
        }
    }
    for p in providers {
        match p {
            ConfiguredProvider::Kmip {
                name,
                servers,
                timeout_secs,
                hedge_ms,
                demote_secs,
            } => {
                let _ = writeln!(
                    s,
                    "[[provider]]\nname = {}\nservers = [{}]\ntimeout_secs = {timeout_secs}",
                    quote(name),
                    list(servers)
                );
                if *hedge_ms > 0 {
                    let _ = writeln!(s, "hedge_ms = {hedge_ms}");
                }
                if *demote_secs > 0 {
                    let _ = writeln!(s, "demote_secs = {demote_secs}");
                }
                let _ = writeln!(
                    s,
                    "# needs = [\"vcenter\"]       # what it needs to serve keys\n\n\
                     [provider.order]\n{} = [{}]   # this host's order; add each other site's\n",
                    quote(THIS_SITE),
                    list(servers)
                );
            }
            ConfiguredProvider::Native { name, backed_up } => {
                let _ = writeln!(
                    s,
                    "[[provider]]\nname = {}\ntype = \"native\"\nbackup = {backed_up}   # a backup of its keystore was exported\n",
                    quote(name)
                );
            }
        }
    }
    if providers.is_empty() {
        let _ = writeln!(
            s,
            "# [[kms]]\n# name = \"kms-a.example:5696\"\n# site = {}\n# cluster = \"cluster-1\"\n# vendor = \"acme-kms\"\n\n\
             # [[provider]]\n# name = \"kms\"\n# servers = [\"kms-a.example:5696\", \"kms-b.example:5696\", \"kms-c.example:5696\"]\n# timeout_secs = 60\n# hedge_ms = 2000\n",
            quote(THIS_SITE)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Topology, check};

    #[test]
    fn a_template_from_a_configuration_parses_and_checks() {
        let providers = vec![
            ConfiguredProvider::Kmip {
                name: "site-a".into(),
                servers: vec!["kms-a.example:5696".into(), "kms-b.example:5696".into()],
                timeout_secs: 60,
                hedge_ms: 2000,
                demote_secs: 300,
            },
            ConfiguredProvider::Kmip {
                name: "dr".into(),
                servers: vec!["kms-b.example:5696".into(), "kms-\"odd\".example:1".into()],
                timeout_secs: 30,
                hedge_ms: 0,
                demote_secs: 0,
            },
            ConfiguredProvider::Native {
                name: "native".into(),
                backed_up: false,
            },
        ];
        let text = template(&providers, Some("/etc/vmcrypt/config.toml"));
        let t = Topology::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            t.kms.len(),
            3,
            "a server shared by two providers is listed once"
        );
        let p = &t.providers[0];
        assert_eq!(p.servers, ["kms-a.example:5696", "kms-b.example:5696"]);
        assert_eq!(
            (p.timeout_secs, p.hedge_ms, p.demote_secs),
            (60.0, Some(2000.0), Some(300.0))
        );
        assert_eq!(p.order[THIS_SITE], p.servers);
        assert_eq!(
            (t.providers[1].hedge_ms, t.providers[1].demote_secs),
            (None, None)
        );
        assert_eq!(t.providers[1].servers[1], "kms-\"odd\".example:1");
        // What is left to describe shows as findings.
        let r = check(&t);
        assert!(!r.of("native-no-backup").is_empty(), "{}", r.render());
        assert!(!r.of("kms-count").is_empty(), "two servers: {}", r.render());
        // An empty configuration gives a skeleton that parses too.
        let empty = template(&[], None);
        assert!(Topology::from_toml(&empty).is_ok(), "{empty}");
    }
}
