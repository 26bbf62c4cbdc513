//! vmcrypt-topology: the KMS topology doctor.
//!
//! Most outages of encrypted datacenters are topology mistakes visible on paper: one key
//! server; every key server on one host, datastore or power feed; servers in one provider that
//! do not replicate; a site that asks a remote server first; a key server stored on the
//! datastore it unlocks; vCenter encrypted by the provider it brokers. [`check`] reads a
//! described topology ([`Topology`], TOML, docs/topology.md) and reports each such finding
//! with the components involved, why it matters and how to fix it, plus the worst-case time to
//! a key for every site and failure scenario under ordered failover.
//!
//! ```
//! let t = vmcrypt_topology::Topology::from_toml(r#"
//!     [[site]]
//!     name = "A"
//!     [[kms]]
//!     name = "kms-1"
//!     site = "A"
//!     cluster = "c1"
//!     vendor = "acme"
//!     [[provider]]
//!     name = "prod"
//!     servers = ["kms-1"]
//! "#).expect("valid");
//! let report = vmcrypt_topology::check(&t);
//! assert_eq!(report.of("single-kms").len(), 1);
//! assert!(report.errors() > 0);
//! ```
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]
#![forbid(unsafe_code)]

pub mod availability;
pub mod checks;
pub mod graph;
pub mod init;
pub mod live;
pub mod model;
pub mod picture;
pub mod report;
pub mod timing;

pub use model::{ModelError, Topology};
pub use report::{Finding, Report, Severity};
pub use timing::{Kind, Mode, Scenario};

/// [`check`] with what the servers say now ([`live`]): their measurements and findings are
/// added to the report.
pub fn check_live(t: &Topology, measured: Vec<live::LiveServer>) -> Report {
    let mut r = check(t);
    r.findings.extend(live::findings(t, &measured));
    r.findings
        .sort_by(|a, b| (a.severity, a.check).cmp(&(b.severity, b.check)));
    r.live = measured;
    r
}

/// Runs every check and the failover timing on a validated topology.
pub fn check(t: &Topology) -> Report {
    let g = graph::Graph::build(t);
    let mut findings = Vec::new();
    findings.extend(checks::kms_count(t));
    findings.extend(checks::shared_fate(t));
    findings.extend(checks::replication(t));
    findings.extend(checks::site_order(t));
    findings.extend(checks::native_backup(t));
    findings.extend(checks::cycles(&g));
    let (scenarios, slow) = timing::timing(t);
    findings.extend(slow);
    findings.sort_by(|a, b| (a.severity, a.check).cmp(&(b.severity, b.check)));
    let availability = availability::estimate(t).unwrap_or_default();
    Report {
        findings,
        scenarios,
        availability,
        live: Vec::new(),
    }
}
