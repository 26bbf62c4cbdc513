//! Failover timing under the ordered-failover rules of the reference system (and of vmcrypt
//! without hedging): servers are tried in the site's order; a server that refuses costs one
//! round trip, one that hangs costs the whole timeout, one behind a partition (packets dropped)
//! costs the connect timeout, and the first healthy one serves the key.

use crate::model::{Kms, Provider, ProviderKind, Topology};
use crate::report::{Finding, Severity, Timing, fmt_secs};

/// How a server fails in a scenario.
#[derive(Debug, Clone, Copy)]
enum Fail {
    Refused,
    Hung,
    Dropped,
}

struct Site<'a> {
    t: &'a Topology,
    p: &'a Provider,
    site: &'a str,
}

impl Site<'_> {
    fn rtt(&self, k: &Kms) -> f64 {
        let s = &self.t.settings;
        let ms = if k.cloud {
            s.cloud_rtt_ms
        } else if k.site.as_deref() == Some(self.site) {
            s.local_rtt_ms
        } else {
            s.remote_rtt_ms
        };
        ms / 1000.0
    }

    fn cost(&self, k: &Kms, f: Fail) -> f64 {
        match f {
            Fail::Refused => self.rtt(k),
            Fail::Hung => self.p.timeout_secs,
            Fail::Dropped => self
                .t
                .settings
                .connect_timeout_secs
                .min(self.p.timeout_secs),
        }
    }

    /// Walks `order` with the failures `fail` gives; the time until a key and who serves it.
    fn walk(
        &self,
        order: &[String],
        fail: &dyn Fn(&Kms) -> Option<Fail>,
    ) -> (Option<f64>, Option<String>) {
        let mut secs = 0.0;
        for name in order {
            let Some(k) = self.t.kms(name) else { continue };
            match fail(k) {
                Some(f) => secs += self.cost(k, f),
                None => {
                    secs += self.t.settings.fetch_round_trips * self.rtt(k);
                    return (Some(secs), Some(k.name.clone()));
                }
            }
        }
        (None, None)
    }

    fn locality(&self, k: &Kms) -> u8 {
        if k.cloud {
            2
        } else if k.site.as_deref() == Some(self.site) {
            0
        } else {
            1
        }
    }

    /// The order with local servers first, then other sites', then cloud ones (each group in
    /// the operator's order).
    fn better_order(&self, order: &[String]) -> Vec<String> {
        let mut v: Vec<(u8, usize, String)> = order
            .iter()
            .enumerate()
            .map(|(i, n)| (self.t.kms(n).map_or(3, |k| self.locality(k)), i, n.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, n)| n).collect()
    }

    /// Every scenario: (name, seconds, served by).
    fn scenarios(&self, order: &[String]) -> Vec<(String, Option<f64>, Option<String>)> {
        let mut out = Vec::new();
        let (s, by) = self.walk(order, &|_| None);
        out.push(("all servers up".to_string(), s, by));
        for (label, f) in [
            ("one server refused", Fail::Refused),
            ("one server hung", Fail::Hung),
        ] {
            // The worst single failure: the one that costs most (or leaves no key).
            let mut worst: Option<(Option<f64>, Option<String>, String)> = None;
            for failed in order {
                let (s, by) = self.walk(order, &|k| (k.name == *failed).then_some(f));
                let worse = match &worst {
                    None => true,
                    Some((ws, _, _)) => match (s, ws) {
                        (None, Some(_)) => true,
                        (Some(a), Some(b)) => a > *b,
                        _ => false,
                    },
                };
                if worse {
                    worst = Some((s, by, failed.clone()));
                }
            }
            if let Some((s, by, failed)) = worst {
                out.push((format!("{label} (worst: {failed})"), s, by));
            }
        }
        let mut other_sites: Vec<&str> = order
            .iter()
            .filter_map(|n| self.t.kms(n)?.site.as_deref())
            .filter(|s| *s != self.site)
            .collect();
        other_sites.sort_unstable();
        other_sites.dedup();
        for x in other_sites {
            let (s, by) = self.walk(order, &|k| {
                (k.site.as_deref() == Some(x)).then_some(Fail::Dropped)
            });
            out.push((format!("site {x} partitioned"), s, by));
        }
        if order
            .iter()
            .any(|n| self.t.kms(n).is_some_and(|k| self.locality(k) > 0))
        {
            let (s, by) = self.walk(order, &|k| (self.locality(k) > 0).then_some(Fail::Dropped));
            out.push(("this site cut off from the others".to_string(), s, by));
        }
        if order
            .iter()
            .any(|n| self.t.kms(n).is_some_and(|k| self.locality(k) == 0))
        {
            let (s, by) = self.walk(order, &|k| (self.locality(k) == 0).then_some(Fail::Refused));
            out.push(("all local servers down".to_string(), s, by));
        }
        out
    }
}

/// The timing table, and a warning for every site whose worst case passes the threshold.
pub fn timing(t: &Topology) -> (Vec<Timing>, Vec<Finding>) {
    let mut table = Vec::new();
    let mut findings = Vec::new();
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        for site in t.sites_using(p) {
            let s = Site { t, p, site: &site };
            let order = t.order_for(p, &site);
            let rows = s.scenarios(order);
            let worst = |rows: &[(String, Option<f64>, Option<String>)]| {
                rows.iter().filter_map(|r| r.1).fold(0.0, f64::max)
            };
            let worst_now = worst(&rows);
            let max = t.settings.max_fetch_secs.unwrap_or(p.timeout_secs + 5.0);
            let slow: Vec<String> = rows
                .iter()
                .filter(|(_, secs, _)| secs.is_some_and(|x| x > max))
                .map(|(name, secs, _)| format!("{name}: {}", fmt_secs(secs.unwrap_or(0.0))))
                .collect();
            for (scenario, seconds, served_by) in rows {
                table.push(crate::report::Timing {
                    provider: p.name.clone(),
                    site: site.clone(),
                    scenario,
                    seconds,
                    served_by,
                });
            }
            if slow.is_empty() {
                continue;
            }
            let better = s.better_order(order);
            let fix = if better != order {
                let worst_then = worst(&s.scenarios(&better));
                format!(
                    "order site {site}'s servers local first: {} (worst case {} instead of {}); and/or lower timeout_secs, or let vmcrypt hedge key fetches (--hedge-ms)",
                    better.join(", "),
                    fmt_secs(worst_then),
                    fmt_secs(worst_now)
                )
            } else {
                "lower timeout_secs, or let vmcrypt hedge key fetches (--hedge-ms): a hung server then costs the hedge delay, not the timeout".to_string()
            };
            findings.push(Finding {
                check: "slow-failover",
                severity: Severity::Warning,
                components: std::iter::once(p.name.clone()).chain(order.iter().cloned()).collect(),
                message: format!(
                    "provider {} from site {site}: a key can take longer than {} ({})",
                    p.name,
                    fmt_secs(max),
                    slow.join("; ")
                ),
                why: "VMs power on, and hosts unlock encrypted datastores, only as fast as keys arrive; minutes per key turn a small failure into an outage".into(),
                fix,
            });
        }
    }
    (table, findings)
}
