//! `vmcrypt topology check FILE`: the KMS topology doctor (docs/topology.md).

use vmcrypt_core::{Error, Result};
use vmcrypt_topology::{Topology, check};

use crate::cli::TopologyCmd;
use crate::output::Out;

/// Prints the report; returns the exit code (0 clean or warnings only, 1 with errors).
pub fn run(t: &TopologyCmd, out: &Out) -> Result<u8> {
    let TopologyCmd::Check { file } = t;
    let bytes = vmcrypt_core::fsutil::read_bounded(file, vmcrypt_core::settings::MAX_SIZE)?;
    let text = String::from_utf8(bytes).map_err(|_| Error::InvalidSettings {
        path: file.clone(),
        line: None,
        reason: "not UTF-8 text".into(),
    })?;
    let topology = Topology::from_toml(&text).map_err(|e| Error::InvalidSettings {
        path: file.clone(),
        line: None,
        reason: e.to_string(),
    })?;
    let report = check(&topology);
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
