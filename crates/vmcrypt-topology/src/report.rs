//! Findings and the report: readable text for an operator, JSON for a pipeline.

use serde::Serialize;

use crate::timing::{Mode, Scenario, describe, worse};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Will cause an outage or data loss in a foreseeable failure: fix before relying on it.
    Error,
    /// Makes an outage likelier or slower to recover from.
    Warning,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Which check (stable id, e.g. `dependency-cycle`).
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// The components involved (for a cycle: in order, the first repeated at the end).
    pub components: Vec<String>,
    /// The site it is about, where it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// What is wrong.
    pub message: String,
    /// Why it matters.
    pub why: String,
    /// How to fix it.
    pub fix: String,
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Findings, errors first.
    pub findings: Vec<Finding>,
    /// The time to a key for every provider, site and failure scenario.
    pub scenarios: Vec<Scenario>,
    /// Key availability per provider and site, when failure probabilities were given.
    pub availability: Vec<crate::availability::Availability>,
    /// What each configured server says now (`check --live`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<crate::live::LiveServer>,
}

impl Finding {
    /// The finding, about site `site`.
    pub fn at(self, site: &str) -> Finding {
        Finding {
            site: Some(site.to_string()),
            ..self
        }
    }
}

impl Report {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count()
    }

    /// The findings of one check.
    pub fn of(&self, check: &str) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.check == check).collect()
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            let sev = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            s.push_str(&format!("{sev} [{}] {}\n", f.check, f.message));
            s.push_str(&format!("    involves: {}\n", f.components.join(" -> ")));
            s.push_str(&format!("    why: {}\n", f.why));
            s.push_str(&format!("    fix: {}\n", f.fix));
        }
        if !self.scenarios.is_empty() {
            s.push_str("\ntime to a key, the worst case of each scenario and mode (refused = one round trip, hung = the timeout, dropped = the connect timeout; every case in --json):\n");
            s.push_str(&self.render_scenarios());
        }
        if !self.availability.is_empty() {
            s.push_str("\nkey availability (independent failures, seeded Monte Carlo; given the site is up):\n");
            for a in &self.availability {
                let at = format!("{} @ {}", a.provider, a.site);
                let v = if a.failures == 0 {
                    format!(
                        "no failure in {} moments (> {:.6} %)",
                        a.samples,
                        100.0 * (1.0 - 1.0 / a.samples as f64)
                    )
                } else {
                    format!(
                        "{:.6} % ({:.1} nines; {} of {} moments without a key)",
                        100.0 * a.probability,
                        -(1.0 - a.probability).log10(),
                        a.failures,
                        a.samples
                    )
                };
                s.push_str(&format!("  {at}  {v}\n"));
            }
        }
        if !self.live.is_empty() {
            s.push_str("\nthe servers now (this host's configuration):\n");
            let rows: Vec<[String; 5]> = self
                .live
                .iter()
                .map(|l| {
                    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
                    let state = match (&l.error, l.reachable, l.trusted) {
                        (None, _, _) => "up".to_string(),
                        (Some(_), false, _) => "unreachable".to_string(),
                        (Some(_), true, false) => "untrusted".to_string(),
                        (Some(_), true, true) => "no answer".to_string(),
                    };
                    let lag = match (&l.lag_error, l.lag_ms) {
                        (Some(_), _) => "lag: never".to_string(),
                        (None, Some(v)) => format!("lag {}", ms(Some(v))),
                        (None, None) => String::new(),
                    };
                    [
                        format!("{} / {}", l.provider, l.server),
                        state,
                        ms(l.latency_ms),
                        lag,
                        l.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            s.push_str(&aligned(&rows, &[false, false, true, false, false], "  "));
        }
        s.push_str(&format!(
            "\n{} error(s), {} warning(s)\n",
            self.errors(),
            self.warnings()
        ));
        s
    }
}

impl Report {
    /// The worst row of each provider, site, kind and mode, as an aligned table.
    fn render_scenarios(&self) -> String {
        let mut worst: Vec<&Scenario> = Vec::new();
        for r in &self.scenarios {
            let same = |w: &&Scenario| {
                (&w.provider, &w.site, w.kind, w.mode) == (&r.provider, &r.site, r.kind, r.mode)
            };
            match worst.iter().position(same) {
                Some(i) if worse(r, worst[i]) => worst[i] = r,
                Some(_) => {}
                None => worst.push(r),
            }
        }
        let rows: Vec<[String; 5]> = worst
            .iter()
            .map(|r| {
                let (secs, by) = match (r.seconds, &r.served_by) {
                    (Some(secs), Some(by)) => (fmt_secs(secs), format!("by {by}")),
                    _ => ("no key".to_string(), String::new()),
                };
                let mode = match r.mode {
                    Mode::Mixed => format!("mixed ({} hung)", r.hung.len()),
                    m => m.as_str().to_string(),
                };
                let what = describe(r);
                let then = r
                    .repeat_seconds
                    .map_or(String::new(), |t| format!("; next fetch {}", fmt_secs(t)));
                [
                    format!("{} @ {}", r.provider, r.site),
                    what,
                    mode,
                    secs,
                    format!("{by}{then}"),
                ]
            })
            .collect();
        aligned(&rows, &[false, false, false, true, false], "  ")
    }
}

/// `rows` as a table: each column as wide as its widest cell (in characters), those marked
/// in `right` aligned right, columns apart by `gap`, each line indented by two spaces and
/// without trailing blanks.
fn aligned<const N: usize>(rows: &[[String; N]], right: &[bool; N], gap: &str) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::from("  ");
        for (i, cell) in r.iter().enumerate() {
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i > 0 {
                line.push_str(gap);
            }
            if right[i] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// Seconds for people: milliseconds below one second.
pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}
