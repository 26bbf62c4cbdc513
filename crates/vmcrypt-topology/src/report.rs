//! Findings and the report: readable text for an operator, JSON for a pipeline.

use serde::Serialize;

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
    /// What is wrong.
    pub message: String,
    /// Why it matters.
    pub why: String,
    /// How to fix it.
    pub fix: String,
}

/// Worst-case time to a key for one site, provider and failure scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// Provider.
    pub provider: String,
    /// The site fetching.
    pub site: String,
    /// The scenario (e.g. `first server hung`).
    pub scenario: String,
    /// Seconds until the key arrives, or `None` when no server can answer.
    pub seconds: Option<f64>,
    /// The server that answers.
    pub served_by: Option<String>,
}

/// What `check` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Findings, errors first.
    pub findings: Vec<Finding>,
    /// Failover timing for every provider, site and scenario.
    pub timing: Vec<Timing>,
    /// Key availability per provider and site, when failure probabilities were given.
    pub availability: Vec<crate::availability::Availability>,
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
        if !self.timing.is_empty() {
            s.push_str("\nworst-case time to a key (ordered failover: refused = one round trip, hung = the timeout):\n");
            let w = self
                .timing
                .iter()
                .map(|t| t.provider.len() + t.site.len() + 3)
                .max()
                .unwrap_or(0);
            for t in &self.timing {
                let at = format!("{} @ {}", t.provider, t.site);
                let v = match (t.seconds, &t.served_by) {
                    (Some(secs), Some(by)) => format!("{:>9} by {by}", fmt_secs(secs)),
                    _ => format!("{:>9}", "no key"),
                };
                s.push_str(&format!("  {at:<w$}  {:<34} {v}\n", t.scenario));
            }
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
        s.push_str(&format!(
            "\n{} error(s), {} warning(s)\n",
            self.errors(),
            self.warnings()
        ));
        s
    }
}

/// Seconds for people: milliseconds below one second.
pub fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.1} s")
    }
}
