//! Failover timing: the time to a key for every provider, site and failure scenario, under
//! the rules the client follows (vmcrypt-kmip's `failover`, docs/kmip.md):
//!
//! - servers are tried in the site's order; a server that refuses costs one round trip, one
//!   that accepts and never answers (hung) the provider's whole timeout, one behind a
//!   partition (packets dropped) the connect timeout, min(timeout, `connect_timeout_secs`);
//!   the first healthy one serves the key in `fetch_round_trips` round trips;
//! - with `hedge_ms` (vmcrypt's hedged reads), the next server is also asked whenever the
//!   last one asked has not answered within the hedge delay since the last event (a launch
//!   or a failure), and at once when one fails; the first answer wins;
//! - with `demote_secs` (the agent), a server that failed is tried after the others for that
//!   long: a later fetch in the same failure ([`Scenario::repeat_seconds`]) is walked with the
//!   failed servers last.
//!
//! Each scenario is computed with its failed servers refused, with them hung, and (two or
//! more) in the worst mix of the two; the site scenarios also as a partition. The model and
//! the client must agree: `crates/vmcrypt-kmip/tests/topology_live.rs` runs the real client
//! against hung and refused endpoints and checks these predictions.

use serde::Serialize;

use crate::model::{Kms, Provider, ProviderKind, Topology};
use crate::report::{Finding, Severity, fmt_secs};

/// How the failed servers of a scenario fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No server fails.
    None,
    /// Each refuses the connection (a stopped service, a host that is up).
    Refused,
    /// Each accepts and never answers (a hung service, a full disk, a stuck HSM).
    Hung,
    /// Some refuse and some hang: the worst such mix.
    Mixed,
    /// Packets to them are dropped (a partition): each costs the connect timeout.
    Dropped,
}

impl Mode {
    /// Its name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Refused => "refused",
            Mode::Hung => "hung",
            Mode::Mixed => "mixed",
            Mode::Dropped => "dropped",
        }
    }
}

/// Which servers fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Every server is up.
    AllUp,
    /// One server.
    OneServer,
    /// Two servers (providers with three or more).
    TwoServers,
    /// Every server in the fetching site.
    LocalSite,
    /// Every server in one other site.
    OtherSite,
    /// Every server outside the fetching site (the site cut off; always dropped).
    CutOff,
    /// Every server but one.
    AllButOne,
}

impl Kind {
    /// Its words in the text report.
    pub fn label(self) -> &'static str {
        match self {
            Kind::AllUp => "all servers up",
            Kind::OneServer => "one server",
            Kind::TwoServers => "two servers",
            Kind::LocalSite => "this site's servers",
            Kind::OtherSite => "another site's servers",
            Kind::CutOff => "this site cut off",
            Kind::AllButOne => "all but one server",
        }
    }
}

/// The time to a key for one provider, site and failure scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// The provider.
    pub provider: String,
    /// The site fetching.
    pub site: String,
    /// Which servers fail.
    pub kind: Kind,
    /// How they fail.
    pub mode: Mode,
    /// The servers that fail, in the site's order.
    pub failed: Vec<String>,
    /// Those of them that hang (all of them in `hung` mode, none in `refused`, the worst
    /// mix in `mixed`).
    pub hung: Vec<String>,
    /// The server that answers, if any.
    pub served_by: Option<String>,
    /// Seconds until the key arrives; `None` when no server can answer.
    pub seconds: Option<f64>,
    /// With the agent's demotion (`demote_secs`): a later fetch in the same failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_seconds: Option<f64>,
}

/// How one server behaves in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    Refused,
    Hung,
    Dropped,
}

/// The timing rules for one provider seen from one site.
struct Rules<'a> {
    t: &'a Topology,
    p: &'a Provider,
    site: &'a str,
}

impl Rules<'_> {
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

    /// The time to a key and who serves it, walking `order` with the failures `fail` gives.
    fn fetch(
        &self,
        order: &[&Kms],
        fail: &dyn Fn(&Kms) -> Option<Fail>,
    ) -> (Option<f64>, Option<String>) {
        match self.p.hedge_ms {
            Some(ms) => self.hedged(order, fail, ms / 1000.0),
            None => self.sequential(order, fail),
        }
    }

    fn sequential(
        &self,
        order: &[&Kms],
        fail: &dyn Fn(&Kms) -> Option<Fail>,
    ) -> (Option<f64>, Option<String>) {
        let mut secs = 0.0;
        for k in order {
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

    /// The client's hedged walk, event by event: it waits for an answer at most `delay`
    /// after its last event, then also asks the next server; a failure asks the next one at
    /// once; the first good answer wins.
    fn hedged(
        &self,
        order: &[&Kms],
        fail: &dyn Fn(&Kms) -> Option<Fail>,
        delay: f64,
    ) -> (Option<f64>, Option<String>) {
        // (when it ends, whether it serves, index) of each attempt under way.
        let mut pending: Vec<(f64, bool, usize)> = Vec::new();
        let launch = |i: usize, at: f64, pending: &mut Vec<(f64, bool, usize)>| {
            let k = order[i];
            let (secs, ok) = match fail(k) {
                Some(f) => (self.cost(k, f), false),
                None => (self.t.settings.fetch_round_trips * self.rtt(k), true),
            };
            pending.push((at + secs, ok, i));
        };
        if order.is_empty() {
            return (None, None);
        }
        let mut now = 0.0;
        launch(0, now, &mut pending);
        let mut next = 1;
        loop {
            let first = pending
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.1.2.cmp(&b.1.2)))
                .map(|(i, e)| (i, *e));
            let hedge_at = (next < order.len()).then_some(now + delay);
            match (first, hedge_at) {
                (Some((_, (end, _, _))), Some(h)) if h < end => {
                    now = h;
                    launch(next, now, &mut pending);
                    next += 1;
                }
                (None, Some(h)) => {
                    now = h;
                    launch(next, now, &mut pending);
                    next += 1;
                }
                (Some((i, (end, ok, who))), _) => {
                    now = end;
                    pending.swap_remove(i);
                    if ok {
                        return (Some(now), Some(order[who].name.clone()));
                    }
                    if next < order.len() {
                        launch(next, now, &mut pending);
                        next += 1;
                    }
                }
                (None, None) => return (None, None),
            }
        }
    }

    /// One scenario: `failed` (in the site's order) failing as `how` says.
    fn scenario(
        &self,
        order: &[&Kms],
        kind: Kind,
        mode: Mode,
        failed: &[&Kms],
        how: &dyn Fn(&Kms) -> Fail,
    ) -> Scenario {
        let in_failed = |k: &Kms| failed.iter().any(|f| f.name == k.name);
        let fail = |k: &Kms| in_failed(k).then(|| how(k));
        let (seconds, served_by) = self.fetch(order, &fail);
        // To the microsecond: sums of round trips carry float noise a report should not.
        let micro = |s: f64| (s * 1e6).round() / 1e6;
        let seconds = seconds.map(micro);
        let repeat_seconds = self.p.demote_secs.map(|_| {
            // Failed servers, once tried, are tried last (in order among themselves).
            let demoted: Vec<&Kms> = order
                .iter()
                .copied()
                .filter(|k| !in_failed(k))
                .chain(order.iter().copied().filter(|k| in_failed(k)))
                .collect();
            self.fetch(&demoted, &fail).0.map(micro)
        });
        Scenario {
            provider: self.p.name.clone(),
            site: self.site.to_string(),
            kind,
            mode,
            failed: failed.iter().map(|k| k.name.clone()).collect(),
            hung: failed
                .iter()
                .filter(|k| how(k) == Fail::Hung)
                .map(|k| k.name.clone())
                .collect(),
            served_by,
            seconds,
            repeat_seconds: repeat_seconds.flatten(),
        }
    }

    /// `failed` refused, hung, and (two or more) in the worst mix.
    fn each_mode(&self, order: &[&Kms], kind: Kind, failed: &[&Kms], out: &mut Vec<Scenario>) {
        out.push(self.scenario(order, kind, Mode::Refused, failed, &|_| Fail::Refused));
        debug_assert!(failed.len() <= 64);
        out.push(self.scenario(order, kind, Mode::Hung, failed, &|_| Fail::Hung));
        let n = failed.len();
        if n < 2 {
            return;
        }
        // Every mix up to 12 failed servers; beyond, those with one server refused or one
        // hung (2n of them: the extremes, where the worst case lies without hedging).
        let masks: Vec<u64> = if n <= 12 {
            (1u64..(1 << n) - 1).collect()
        } else {
            let all = (1u64 << n) - 1;
            (0..n)
                .flat_map(|i| [1u64 << i, all & !(1u64 << i)])
                .collect()
        };
        let mixes = masks.into_iter().map(|mask| {
            let how = move |k: &Kms| {
                let i = failed.iter().position(|f| f.name == k.name).unwrap_or(0);
                if mask & (1 << i) != 0 {
                    Fail::Hung
                } else {
                    Fail::Refused
                }
            };
            self.scenario(order, kind, Mode::Mixed, failed, &how)
        });
        if let Some(worst) = mixes.reduce(|a, b| if worse(&b, &a) { b } else { a }) {
            out.push(worst);
        }
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

    /// Every scenario of this site's order.
    fn scenarios(&self, names: &[String]) -> Vec<Scenario> {
        let order: Vec<&Kms> = names.iter().filter_map(|n| self.t.kms(n)).collect();
        let mut out = vec![self.scenario(&order, Kind::AllUp, Mode::None, &[], &|_| Fail::Refused)];
        for k in &order {
            self.each_mode(&order, Kind::OneServer, &[k], &mut out);
        }
        if order.len() >= 3 {
            for (i, a) in order.iter().enumerate() {
                for b in &order[i + 1..] {
                    self.each_mode(&order, Kind::TwoServers, &[a, b], &mut out);
                }
            }
        }
        let local: Vec<&Kms> = order
            .iter()
            .copied()
            .filter(|k| self.locality(k) == 0)
            .collect();
        if !local.is_empty() {
            self.each_mode(&order, Kind::LocalSite, &local, &mut out);
        }
        let mut others: Vec<&str> = order
            .iter()
            .filter(|k| self.locality(k) == 1)
            .filter_map(|k| k.site.as_deref())
            .collect();
        others.sort_unstable();
        others.dedup();
        for x in others {
            let there: Vec<&Kms> = order
                .iter()
                .copied()
                .filter(|k| !k.cloud && k.site.as_deref() == Some(x))
                .collect();
            self.each_mode(&order, Kind::OtherSite, &there, &mut out);
            out.push(
                self.scenario(&order, Kind::OtherSite, Mode::Dropped, &there, &|_| {
                    Fail::Dropped
                }),
            );
        }
        let away: Vec<&Kms> = order
            .iter()
            .copied()
            .filter(|k| self.locality(k) > 0)
            .collect();
        if !away.is_empty() {
            out.push(
                self.scenario(&order, Kind::CutOff, Mode::Dropped, &away, &|_| {
                    Fail::Dropped
                }),
            );
        }
        if order.len() >= 2 {
            for k in &order {
                let rest: Vec<&Kms> = order.iter().copied().filter(|o| o.name != k.name).collect();
                self.each_mode(&order, Kind::AllButOne, &rest, &mut out);
            }
        }
        out
    }

    /// The order with local servers first, then other sites', then cloud ones (each group
    /// in the operator's order).
    fn better_order(&self, order: &[String]) -> Vec<String> {
        let mut v: Vec<(u8, usize, String)> = order
            .iter()
            .enumerate()
            .map(|(i, n)| (self.t.kms(n).map_or(3, |k| self.locality(k)), i, n.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, n)| n).collect()
    }
}

/// The time to a key from `site` through `provider` when the servers in `hung` hang and
/// those in `refused` refuse (the others answer): one case of the scenarios, for a caller
/// that measures it against the real client. With `repeat`, a later fetch after the
/// agent's demotion (`demote_secs`) moved the failed servers last. `None`: no key, or an
/// unknown provider.
pub fn time_to_key(
    t: &Topology,
    provider: &str,
    site: &str,
    hung: &[&str],
    refused: &[&str],
    repeat: bool,
) -> Option<(f64, String)> {
    let p = t.providers.iter().find(|p| p.name == provider)?;
    let rules = Rules { t, p, site };
    let order: Vec<&Kms> = t
        .order_for(p, site)
        .iter()
        .filter_map(|n| t.kms(n))
        .collect();
    let failed: Vec<&Kms> = order
        .iter()
        .copied()
        .filter(|k| hung.contains(&k.name.as_str()) || refused.contains(&k.name.as_str()))
        .collect();
    let how = |k: &Kms| {
        if hung.contains(&k.name.as_str()) {
            Fail::Hung
        } else {
            Fail::Refused
        }
    };
    let s = rules.scenario(&order, Kind::AllUp, Mode::Mixed, &failed, &how);
    let secs = if repeat { s.repeat_seconds } else { s.seconds };
    Some((secs?, s.served_by?))
}

/// Whether `a` is worse than `b`: no key beats any time; else the longer time.
pub fn worse(a: &Scenario, b: &Scenario) -> bool {
    match (a.seconds, b.seconds) {
        (None, Some(_)) => true,
        (Some(x), Some(y)) => x > y,
        _ => false,
    }
}

/// The longest time to a key among `rows` that get one.
fn worst_secs(rows: &[Scenario]) -> Option<&Scenario> {
    rows.iter()
        .filter(|r| r.seconds.is_some())
        .reduce(|a, b| if worse(b, a) { b } else { a })
}

/// Every scenario's timing, and a `slow-failover` warning for each provider and site where
/// a scenario that gets a key takes longer than the threshold (`max_fetch_secs`, default
/// the provider's timeout).
pub fn timing(t: &Topology) -> (Vec<Scenario>, Vec<Finding>) {
    let mut table = Vec::new();
    let mut findings = Vec::new();
    for p in t.providers.iter().filter(|p| p.kind == ProviderKind::Kmip) {
        for site in t.sites_using(p) {
            let rules = Rules { t, p, site: &site };
            let order = t.order_for(p, &site);
            let rows = rules.scenarios(order);
            let max = t.settings.max_fetch_secs.unwrap_or(p.timeout_secs);
            let slow: Vec<&Scenario> = rows
                .iter()
                .filter(|r| r.seconds.is_some_and(|s| s > max))
                .collect();
            if let Some(f) = slow_failover(&rules, order, &rows, &slow, max) {
                findings.push(f);
            }
            table.extend(rows);
        }
    }
    (table, findings)
}

/// The `slow-failover` finding of one provider and site, with what to change.
fn slow_failover(
    rules: &Rules<'_>,
    order: &[String],
    rows: &[Scenario],
    slow: &[&Scenario],
    max: f64,
) -> Option<Finding> {
    let worst = *slow.iter().reduce(|a, b| if worse(b, a) { b } else { a })?;
    let (p, site) = (rules.p, rules.site);
    let secs = worst.seconds.unwrap_or(0.0);
    let mut fix = Vec::new();
    let better = rules.better_order(order);
    if better != order {
        let rows_then = rules.scenarios(&better);
        let slow_then = rows_then
            .iter()
            .filter(|r| r.seconds.is_some_and(|s| s > max))
            .count();
        let then = worst_secs(&rows_then)
            .and_then(|r| r.seconds)
            .unwrap_or(0.0);
        if slow_then < slow.len() || then < secs {
            fix.push(format!(
                "order site {site}'s servers local first: {} ({slow_then} slow scenario(s) instead of {}, worst case {} instead of {})",
                better.join(", "),
                slow.len(),
                fmt_secs(then),
                fmt_secs(secs)
            ));
        }
    }
    // The hung servers the worst case waits out before its answer.
    let waited: Vec<&String> = worst
        .hung
        .iter()
        .filter(|h| {
            let pos = |n: &String| order.iter().position(|o| o == n);
            worst.served_by.as_ref().is_none_or(|s| pos(h) < pos(s))
        })
        .collect();
    if !waited.is_empty() && p.hedge_ms.is_none() {
        let hedged = Provider {
            hedge_ms: Some(2000.0),
            ..p.clone()
        };
        let r = Rules {
            p: &hedged,
            ..*rules
        };
        let then = worst_secs(&r.scenarios(order)).and_then(|r| r.seconds);
        fix.push(format!(
            "let vmcrypt hedge key fetches (hedge_ms = 2000, its default: a hung server then costs 2 s, not the timeout; worst case {})",
            fmt_secs(then.unwrap_or(0.0))
        ));
    }
    if !waited.is_empty() && rules.t.settings.max_fetch_secs.is_some() {
        let k = waited.len() as f64;
        let timeout = ((max / k) * 10.0).floor() / 10.0;
        if timeout > 0.0 && timeout < p.timeout_secs {
            fix.push(format!(
                "lower timeout_secs to {timeout} or less: the worst case waits out {} hung server(s) ({})",
                waited.len(),
                waited.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if fix.is_empty() {
        fix.push(format!(
            "lower timeout_secs (each hung server costs {}), or raise max_fetch_secs if this wait is acceptable",
            fmt_secs(p.timeout_secs)
        ));
    }
    Some(Finding {
        check: "slow-failover",
        severity: Severity::Warning,
        components: std::iter::once(p.name.clone())
            .chain(order.iter().cloned())
            .collect(),
        site: Some(site.to_string()),
        message: format!(
            "provider {} from site {site}: {} of {} failure scenarios take longer than {} to a key (worst: {}, {}: {})",
            p.name,
            slow.len(),
            rows.len(),
            fmt_secs(max),
            describe(worst),
            worst.mode.as_str(),
            fmt_secs(secs)
        ),
        why: "VMs power on, and hosts unlock encrypted datastores, only as fast as keys arrive; minutes per key turn a small failure into an outage".into(),
        fix: fix.join("; "),
    })
}

/// A scenario in words: its kind and the servers that fail.
pub fn describe(s: &Scenario) -> String {
    if s.failed.is_empty() {
        return s.kind.label().to_string();
    }
    format!("{} ({})", s.kind.label(), s.failed.join(", "))
}
