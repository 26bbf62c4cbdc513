//! An availability estimate: the chance that a site can get a key, from per-component failure
//! probabilities (`[availability]` in the topology). Components fail independently; a key
//! server is reachable when it, its host, its datastore, their power domains and its site (or
//! the cloud) are all up. Estimated by a seeded Monte Carlo simulation, so a report is the
//! same on every run. Loops are left to the dependency check: this is the steady state.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{ProviderKind, Topology};

/// The estimate for one provider and site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Availability {
    /// Provider.
    pub provider: String,
    /// Site fetching (given that the site itself is up).
    pub site: String,
    /// Estimated chance a key can be fetched.
    pub probability: f64,
    /// Moments simulated with the site up.
    pub samples: u64,
    /// Of those, moments with no reachable server.
    pub failures: u64,
}

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The estimate for every KMIP provider and site using it; `None` without `[availability]`.
pub fn estimate(t: &Topology) -> Option<Vec<Availability>> {
    let p = t.availability.as_ref()?;
    // Every component that can fail, by name, with its probability.
    let mut comps: Vec<(String, f64)> = Vec::new();
    let mut idx: HashMap<String, usize> = HashMap::new();
    let mut add = |name: String, prob: f64| -> usize {
        *idx.entry(name.clone()).or_insert_with(|| {
            comps.push((name, prob));
            comps.len() - 1
        })
    };
    let cloud = add("cloud:".into(), p.cloud);
    let site_of =
        |add: &mut dyn FnMut(String, f64) -> usize, s: &str| add(format!("site:{s}"), p.site);
    // For each key server: the components that must all be up.
    let mut needs: HashMap<&str, Vec<usize>> = HashMap::new();
    for k in &t.kms {
        let mut v = vec![add(format!("kms:{}", k.name), p.kms)];
        match &k.site {
            Some(s) => v.push(site_of(&mut add, s)),
            None => v.push(cloud),
        }
        if let Some(h) = k.host.as_deref().and_then(|h| t.host(h)) {
            v.push(add(format!("host:{}", h.name), p.host));
            v.push(site_of(&mut add, &h.site));
        }
        if let Some(d) = &k.datastore {
            v.push(add(format!("datastore:{d}"), p.datastore));
        }
        if let Some(pw) = t.power_of(k) {
            v.push(add(format!("power:{pw}"), p.power));
        }
        needs.insert(&k.name, v);
    }
    let mut targets: Vec<(String, String, usize, Vec<&[usize]>)> = Vec::new();
    for prov in t.providers.iter().filter(|x| x.kind == ProviderKind::Kmip) {
        for s in t.sites_using(prov) {
            let site = site_of(&mut add, &s);
            let servers: Vec<&[usize]> = t
                .order_for(prov, &s)
                .iter()
                .filter_map(|n| needs.get(n.as_str()).map(Vec::as_slice))
                .collect();
            targets.push((prov.name.clone(), s, site, servers));
        }
    }
    let mut rng = Rng(0x005E_ED0F_7090_1097);
    let mut down = vec![false; comps.len()];
    let mut counts = vec![(0u64, 0u64); targets.len()];
    for _ in 0..p.samples {
        for (i, (_, prob)) in comps.iter().enumerate() {
            down[i] = rng.next() < *prob;
        }
        for (c, (_, _, site, servers)) in counts.iter_mut().zip(&targets) {
            if down[*site] {
                continue;
            }
            c.0 += 1;
            if !servers.iter().any(|need| need.iter().all(|&x| !down[x])) {
                c.1 += 1;
            }
        }
    }
    Some(
        targets
            .into_iter()
            .zip(counts)
            .map(
                |((provider, site, _, _), (samples, failures))| Availability {
                    provider,
                    site,
                    probability: if samples == 0 {
                        0.0
                    } else {
                        1.0 - failures as f64 / samples as f64
                    },
                    samples,
                    failures,
                },
            )
            .collect(),
    )
}
