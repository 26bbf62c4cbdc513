//! The topology an operator describes (TOML, schema in docs/topology.md), checked for dangling
//! references and duplicate names before any check runs.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

/// A whole described topology.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Tuning of the checks.
    #[serde(default)]
    pub settings: Settings,
    /// Sites (datacenters).
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
    /// Hypervisor hosts.
    #[serde(default, rename = "host")]
    pub hosts: Vec<Host>,
    /// Datastores.
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<Datastore>,
    /// Key servers.
    #[serde(default, rename = "kms")]
    pub kms: Vec<Kms>,
    /// Key providers (KMIP clusters as an ordered server list, or native).
    #[serde(default, rename = "provider")]
    pub providers: Vec<Provider>,
    /// Management components (vCenter and the like).
    #[serde(default, rename = "component")]
    pub components: Vec<Component>,
    /// VMs, if wanted.
    #[serde(default, rename = "vm")]
    pub vms: Vec<Vm>,
    /// Failure probabilities: when given, the report estimates each site's key availability.
    #[serde(default)]
    pub availability: Option<Probabilities>,
}

/// Numbers the checks use; every one has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Round trip to a server in the same site, in milliseconds.
    pub local_rtt_ms: f64,
    /// Round trip to a server in another site.
    pub remote_rtt_ms: f64,
    /// Round trip to a server in a cloud.
    pub cloud_rtt_ms: f64,
    /// Round trips of one successful key fetch (TCP, TLS 1.3, version negotiation, state, Get).
    pub fetch_round_trips: f64,
    /// A key fetch slower than this in a failure scenario is a warning (`slow-failover`).
    /// Default: the provider's timeout, i.e. any wait for a hung server.
    pub max_fetch_secs: Option<f64>,
    /// Connect timeout when packets are dropped (a partition): vmcrypt uses min(timeout, 10 s).
    pub connect_timeout_secs: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            local_rtt_ms: 1.0,
            remote_rtt_ms: 30.0,
            cloud_rtt_ms: 60.0,
            fetch_round_trips: 5.0,
            max_fetch_secs: None,
            connect_timeout_secs: 10.0,
        }
    }
}

/// A site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Name.
    pub name: String,
}

/// A hypervisor host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// Rack, if known.
    pub rack: Option<String>,
    /// Power domain (PDU, feed), if known.
    pub power: Option<String>,
    /// What the host needs to boot or join (any component names: vcenter, a datastore...).
    #[serde(default)]
    pub needs: Vec<String>,
}

/// A datastore.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Datastore {
    /// Name.
    pub name: String,
    /// Its site.
    pub site: String,
    /// The key provider it is encrypted by (vSAN encryption), if encrypted.
    pub encrypted_by: Option<String>,
}

/// A key server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kms {
    /// Name (as listed in providers).
    pub name: String,
    /// Its site; absent for a cloud service.
    pub site: Option<String>,
    /// A cloud key service, outside every site.
    #[serde(default)]
    pub cloud: bool,
    /// The host its VM runs on (absent: an appliance or a cloud service).
    pub host: Option<String>,
    /// The datastore its VM is stored on.
    pub datastore: Option<String>,
    /// Power domain of an appliance (a VM's is its host's).
    pub power: Option<String>,
    /// The replication cluster it belongs to.
    pub cluster: String,
    /// Vendor / product.
    pub vendor: String,
}

/// Provider kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// A KMIP cluster.
    #[default]
    Kmip,
    /// vmcrypt's embedded provider (a keystore on the host).
    Native,
}

/// A key provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Name.
    pub name: String,
    /// KMIP or native.
    #[serde(default, rename = "type")]
    pub kind: ProviderKind,
    /// Servers in the default order.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Per-site order, where it differs from `servers`.
    #[serde(default)]
    pub order: BTreeMap<String, Vec<String>>,
    /// Response timeout per server.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Hedged reads (vmcrypt): when the server asked has not answered within this many
    /// milliseconds, the next one is asked too. Absent: ordered failover, each server
    /// waited out, as the reference system does.
    #[serde(default)]
    pub hedge_ms: Option<f64>,
    /// Demotion (vmcrypt's agent): a server that failed is tried after the others for this
    /// many seconds, so later fetches do not pay for it again. Absent: off.
    #[serde(default)]
    pub demote_secs: Option<f64>,
    /// Native: a backup of the keystore has been exported.
    #[serde(default)]
    pub backup: bool,
    /// What the provider needs to serve keys (e.g. the vCenter that brokers them).
    #[serde(default)]
    pub needs: Vec<String>,
}

fn default_timeout() -> f64 {
    60.0
}

/// A management component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Name.
    pub name: String,
    /// What it is (vcenter, ...), for messages.
    #[serde(default)]
    pub kind: String,
    /// The host it runs on.
    pub host: Option<String>,
    /// The datastore it is stored on.
    pub datastore: Option<String>,
    /// The provider its VM is encrypted by, if VM-encrypted.
    pub encrypted_by: Option<String>,
    /// Anything else it needs.
    #[serde(default)]
    pub needs: Vec<String>,
}

/// A VM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// Name.
    pub name: String,
    /// The host it runs on.
    pub host: Option<String>,
    /// The datastore it is stored on.
    pub datastore: Option<String>,
    /// The provider it is encrypted by.
    pub encrypted_by: Option<String>,
}

/// What kind of thing a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A site.
    Site,
    /// A host.
    Host,
    /// A datastore.
    Datastore,
    /// A key server.
    Kms,
    /// A key provider.
    Provider,
    /// A management component.
    Component,
    /// A VM.
    Vm,
}

impl Kind {
    /// Lower-case name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Site => "site",
            Kind::Host => "host",
            Kind::Datastore => "datastore",
            Kind::Kms => "kms",
            Kind::Provider => "provider",
            Kind::Component => "component",
            Kind::Vm => "vm",
        }
    }
}

/// A topology that is not even well formed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// TOML syntax or schema.
    #[error("{0}")]
    Parse(String),
    /// A name used twice.
    #[error("the name {name:?} is used by both a {first} and a {second}; names must be unique")]
    Duplicate {
        /// The name.
        name: String,
        /// First use.
        first: &'static str,
        /// Second use.
        second: &'static str,
    },
    /// A reference to nothing, or to the wrong kind of thing.
    #[error("{owner}: {field} names {target:?}, which is not {expected}")]
    Dangling {
        /// Who refers.
        owner: String,
        /// Which field.
        field: &'static str,
        /// The name given.
        target: String,
        /// What it should be.
        expected: &'static str,
    },
    /// Something else that makes no sense.
    #[error("{0}")]
    Invalid(String),
}

impl Topology {
    /// Parses and validates a topology.
    ///
    /// # Errors
    /// [`ModelError`] for bad TOML, unknown fields, duplicate names and dangling references.
    pub fn from_toml(text: &str) -> Result<Topology, ModelError> {
        let t: Topology = toml::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Every name with its kind, in declaration order (duplicates included).
    fn all_names(&self) -> impl Iterator<Item = (&str, Kind)> {
        self.sites
            .iter()
            .map(|x| (x.name.as_str(), Kind::Site))
            .chain(self.hosts.iter().map(|x| (x.name.as_str(), Kind::Host)))
            .chain(
                self.datastores
                    .iter()
                    .map(|x| (x.name.as_str(), Kind::Datastore)),
            )
            .chain(self.kms.iter().map(|x| (x.name.as_str(), Kind::Kms)))
            .chain(
                self.providers
                    .iter()
                    .map(|x| (x.name.as_str(), Kind::Provider)),
            )
            .chain(
                self.components
                    .iter()
                    .map(|x| (x.name.as_str(), Kind::Component)),
            )
            .chain(self.vms.iter().map(|x| (x.name.as_str(), Kind::Vm)))
    }

    /// Checks names and references.
    ///
    /// # Errors
    /// [`ModelError`].
    pub fn validate(&self) -> Result<(), ModelError> {
        let mut seen: HashMap<&str, Kind> = HashMap::new();
        for (n, k) in self.all_names() {
            if n.is_empty() {
                return Err(ModelError::Invalid(format!(
                    "a {} has an empty name",
                    k.as_str()
                )));
            }
            if let Some(first) = seen.insert(n, k) {
                return Err(ModelError::Duplicate {
                    name: n.to_string(),
                    first: first.as_str(),
                    second: k.as_str(),
                });
            }
        }
        let want = |owner: &str, field: &'static str, target: &str, kinds: &[Kind]| match seen
            .get(target)
        {
            Some(k) if kinds.contains(k) => Ok(()),
            _ => Err(ModelError::Dangling {
                owner: owner.to_string(),
                field,
                target: target.to_string(),
                expected: match kinds {
                    [Kind::Site] => "a site",
                    [Kind::Host] => "a host",
                    [Kind::Datastore] => "a datastore",
                    [Kind::Provider] => "a provider",
                    [Kind::Kms] => "a kms",
                    _ => "a host, datastore, kms, provider or component",
                },
            }),
        };
        let needable = [
            Kind::Host,
            Kind::Datastore,
            Kind::Kms,
            Kind::Provider,
            Kind::Component,
        ];
        for h in &self.hosts {
            let o = format!("host {}", h.name);
            want(&o, "site", &h.site, &[Kind::Site])?;
            for n in &h.needs {
                want(&o, "needs", n, &needable)?;
            }
        }
        for d in &self.datastores {
            let o = format!("datastore {}", d.name);
            want(&o, "site", &d.site, &[Kind::Site])?;
            if let Some(p) = &d.encrypted_by {
                want(&o, "encrypted_by", p, &[Kind::Provider])?;
            }
        }
        for k in &self.kms {
            let o = format!("kms {}", k.name);
            match (&k.site, k.cloud) {
                (Some(s), false) => want(&o, "site", s, &[Kind::Site])?,
                (None, true) => {}
                (Some(_), true) => {
                    return Err(ModelError::Invalid(format!(
                        "{o}: give a site or cloud = true, not both"
                    )));
                }
                (None, false) => {
                    return Err(ModelError::Invalid(format!(
                        "{o}: give its site, or cloud = true for a cloud service"
                    )));
                }
            }
            if let Some(h) = &k.host {
                want(&o, "host", h, &[Kind::Host])?;
            }
            if let Some(d) = &k.datastore {
                want(&o, "datastore", d, &[Kind::Datastore])?;
            }
        }
        for p in &self.providers {
            let o = format!("provider {}", p.name);
            for s in &p.servers {
                want(&o, "servers", s, &[Kind::Kms])?;
            }
            for (site, list) in &p.order {
                want(&o, "order", site, &[Kind::Site])?;
                for s in list {
                    want(&o, "order", s, &[Kind::Kms])?;
                }
            }
            for n in &p.needs {
                want(&o, "needs", n, &needable)?;
            }
            for (what, v) in [
                ("timeout_secs", Some(p.timeout_secs)),
                ("hedge_ms", p.hedge_ms),
                ("demote_secs", p.demote_secs),
            ] {
                if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                    return Err(ModelError::Invalid(format!(
                        "{o}: {what} must be a positive number"
                    )));
                }
            }
            if p.kind == ProviderKind::Native && !p.servers.is_empty() {
                return Err(ModelError::Invalid(format!(
                    "{o}: a native provider has no servers"
                )));
            }
        }
        for c in &self.components {
            let o = format!("component {}", c.name);
            if let Some(h) = &c.host {
                want(&o, "host", h, &[Kind::Host])?;
            }
            if let Some(d) = &c.datastore {
                want(&o, "datastore", d, &[Kind::Datastore])?;
            }
            if let Some(p) = &c.encrypted_by {
                want(&o, "encrypted_by", p, &[Kind::Provider])?;
            }
            for n in &c.needs {
                want(&o, "needs", n, &needable)?;
            }
        }
        for v in &self.vms {
            let o = format!("vm {}", v.name);
            if let Some(h) = &v.host {
                want(&o, "host", h, &[Kind::Host])?;
            }
            if let Some(d) = &v.datastore {
                want(&o, "datastore", d, &[Kind::Datastore])?;
            }
            if let Some(p) = &v.encrypted_by {
                want(&o, "encrypted_by", p, &[Kind::Provider])?;
            }
        }
        if let Some(a) = &self.availability {
            for (n, v) in [
                ("kms", a.kms),
                ("host", a.host),
                ("datastore", a.datastore),
                ("power", a.power),
                ("site", a.site),
                ("cloud", a.cloud),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(ModelError::Invalid(format!(
                        "availability.{n} must be a probability between 0 and 1"
                    )));
                }
            }
            if !(1000..=100_000_000).contains(&a.samples) {
                return Err(ModelError::Invalid(
                    "availability.samples must be between 1000 and 100000000".into(),
                ));
            }
        }
        let s = &self.settings;
        for (n, v) in [
            ("local_rtt_ms", s.local_rtt_ms),
            ("remote_rtt_ms", s.remote_rtt_ms),
            ("cloud_rtt_ms", s.cloud_rtt_ms),
            ("fetch_round_trips", s.fetch_round_trips),
            ("max_fetch_secs", s.max_fetch_secs.unwrap_or(0.0)),
            ("connect_timeout_secs", s.connect_timeout_secs),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ModelError::Invalid(format!(
                    "settings.{n} must be a number of at least 0"
                )));
            }
        }
        Ok(())
    }

    /// A key server by name.
    pub fn kms(&self, name: &str) -> Option<&Kms> {
        self.kms.iter().find(|k| k.name == name)
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The order site `site` uses for provider `p`.
    pub fn order_for<'a>(&self, p: &'a Provider, site: &str) -> &'a [String] {
        p.order.get(site).map_or(&p.servers, |v| v)
    }

    /// The sites that fetch keys from provider `p`: those with a per-site order, those of the
    /// datastores, hosts and VMs it encrypts; failing all that, those of its servers.
    pub fn sites_using(&self, p: &Provider) -> Vec<String> {
        let mut s: Vec<String> = p.order.keys().cloned().collect();
        let by_p = |e: &Option<String>| e.as_deref() == Some(p.name.as_str());
        s.extend(
            self.datastores
                .iter()
                .filter(|d| by_p(&d.encrypted_by))
                .map(|d| d.site.clone()),
        );
        let host_site = |h: &Option<String>| {
            h.as_deref()
                .and_then(|h| self.host(h))
                .map(|h| h.site.clone())
        };
        s.extend(
            self.vms
                .iter()
                .filter(|v| by_p(&v.encrypted_by))
                .filter_map(|v| host_site(&v.host)),
        );
        s.extend(
            self.components
                .iter()
                .filter(|c| by_p(&c.encrypted_by))
                .filter_map(|c| host_site(&c.host)),
        );
        if s.is_empty() {
            s.extend(p.servers.iter().filter_map(|n| self.kms(n)?.site.clone()));
        }
        s.sort();
        s.dedup();
        s
    }

    /// The power domain of a key server: its own, else its host's.
    pub fn power_of(&self, k: &Kms) -> Option<String> {
        k.power.clone().or_else(|| {
            k.host
                .as_deref()
                .and_then(|h| self.host(h))
                .and_then(|h| h.power.clone())
        })
    }
}

/// Failure probabilities (each the chance a component is down at a random moment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probabilities {
    /// A key server (its service or VM).
    pub kms: f64,
    /// A host.
    pub host: f64,
    /// A datastore.
    pub datastore: f64,
    /// A power domain.
    pub power: f64,
    /// A whole site (or its network).
    pub site: f64,
    /// A cloud key service's reachability.
    pub cloud: f64,
    /// Simulated moments.
    pub samples: u64,
}

impl Default for Probabilities {
    fn default() -> Self {
        Probabilities {
            kms: 0.01,
            host: 0.005,
            datastore: 0.001,
            power: 0.001,
            site: 0.0005,
            cloud: 0.001,
            samples: 200_000,
        }
    }
}
