//! `vmcrypt topology check FILE [--live]` and `vmcrypt topology init [--from-config]`: the
//! KMS topology doctor (docs/topology.md).

use std::path::Path;
use std::time::Duration;

use vmcrypt_agent::config::{Config, ProviderConfig};
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{Error, Result};
use vmcrypt_kmip::provider::KmipProvider;
use vmcrypt_topology::init::{ConfiguredProvider, template};
use vmcrypt_topology::live::LiveServer;
use vmcrypt_topology::{Topology, check, check_live};

use super::load_config;
use crate::cli::{Cli, TopologyCmd};
use crate::output::Out;

/// How long a replica may take to show the probe key before it counts as not replicating.
const REPLICATION_WAIT: Duration = Duration::from_secs(30);

/// Runs the command; returns the exit code (0 clean or warnings only, 1 with errors).
pub fn run(cli: &Cli, t: &TopologyCmd, out: &Out) -> Result<u8> {
    match t {
        TopologyCmd::Check {
            file,
            live,
            dot,
            svg,
        } => check_file(cli, file, *live, [dot.as_deref(), svg.as_deref()], out),
        TopologyCmd::Init { from_config } => {
            let text = if *from_config {
                let cfg = load_config(cli)?;
                template(&configured(&cfg), Some(&cfg.path().display().to_string()))
            } else {
                template(&[], None)
            };
            // The file itself, for `> topology.toml`, whatever --json says.
            print!("{text}");
            Ok(0)
        }
    }
}

/// The providers of this host's configuration, as a topology file describes them.
fn configured(cfg: &Config) -> Vec<ConfiguredProvider> {
    cfg.providers
        .iter()
        .map(|(name, p)| match p {
            ProviderConfig::Kmip(k) => ConfiguredProvider::Kmip {
                name: name.clone(),
                servers: k.servers.clone(),
                timeout_secs: k.timeout,
                hedge_ms: k.hedge_ms,
                demote_secs: k.demote_secs,
            },
            ProviderConfig::Native { keystore } => ConfiguredProvider::Native {
                name: name.clone(),
                backed_up: NativeProvider::open(name, keystore).is_ok_and(|n| n.is_backed_up()),
            },
        })
        .collect()
}

fn check_file(
    cli: &Cli,
    file: &Path,
    live: bool,
    [dot, svg]: [Option<&Path>; 2],
    out: &Out,
) -> Result<u8> {
    let bytes = vmcrypt_core::fsutil::read_bounded(file, vmcrypt_core::settings::MAX_SIZE)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::InvalidSettings {
        path: file.to_path_buf(),
        line: None,
        reason: "not UTF-8 text".into(),
    })?;
    let topology = Topology::from_toml(&text).map_err(|e| Error::InvalidSettings {
        path: file.to_path_buf(),
        line: None,
        reason: e.to_string(),
    })?;
    let report = if live {
        let cfg = load_config(cli)?;
        check_live(&topology, measure(&cfg, &topology, file)?)
    } else {
        check(&topology)
    };
    for (path, draw) in [
        (
            dot,
            vmcrypt_topology::picture::dot as fn(&Topology, &_) -> String,
        ),
        (svg, vmcrypt_topology::picture::svg),
    ] {
        if let Some(p) = path {
            vmcrypt_core::fsutil::write_atomic(p, draw(&topology, &report).as_bytes(), 0o644)?;
        }
    }
    let doc = serde_json::to_value(&report).map_err(|e| Error::InvalidInput {
        reason: format!("rendering the report: {e}"),
    })?;
    // The report is the result, errors or not: print it, then fail if it has errors.
    let mut doc = doc;
    if let serde_json::Value::Object(m) = &mut doc {
        m.insert("errors".into(), report.errors().into());
        m.insert("warnings".into(), report.warnings().into());
    }
    out.result(report.render().trim_end(), doc);
    Ok(u8::from(report.errors() > 0))
}

/// Measures every server of each KMIP provider the topology and this host's configuration
/// both have (by name).
fn measure(cfg: &Config, t: &Topology, file: &Path) -> Result<Vec<LiveServer>> {
    let mut live = Vec::new();
    let mut matched = 0;
    for p in &t.providers {
        let Some(ProviderConfig::Kmip(k)) = cfg.get(&p.name) else {
            continue;
        };
        matched += 1;
        let client = KmipProvider::new(k.settings(&p.name)).map_err(Error::from)?;
        let checks = client.check();
        let healthy = checks.iter().filter(|c| c.error.is_none()).count();
        let replication = if healthy >= 2 {
            client.replication(REPLICATION_WAIT).ok()
        } else {
            None
        };
        for c in checks {
            let lag = replication
                .as_ref()
                .and_then(|r| r.lag.iter().find(|(s, _)| *s == c.server));
            live.push(LiveServer {
                provider: p.name.clone(),
                server: c.server.clone(),
                reachable: c.reachable,
                trusted: c.trusted,
                latency_ms: c.latency.map(|d| d.as_secs_f64() * 1000.0),
                lag_ms: lag.and_then(|(_, r)| r.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0)),
                lag_error: lag.and_then(|(_, r)| r.as_ref().err().cloned()),
                error: c.error.clone(),
            });
        }
    }
    if matched == 0 {
        return Err(Error::input(format!(
            "--live: no KMIP provider of {} is in this host's configuration ({}); the names must match `vmcrypt provider list`",
            file.display(),
            cfg.path().display()
        )));
    }
    Ok(live)
}
