//! A job's report as the operator reads it: one line of text, or (`--json`) the report itself
//! serialized (schema in docs/cli.md).

use vmcrypt_core::Report;

use crate::output::{Out, human_bytes};

/// Prints the report of a finished job.
pub fn report(out: &Out, r: &Report) {
    let doc = serde_json::to_value(r).unwrap_or_default();
    out.result(&text(r), doc);
}

fn text(r: &Report) -> String {
    let secs = r.elapsed.as_secs_f64();
    let disk = r
        .disk
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let opt = |s: &Option<String>| s.clone().unwrap_or_default();
    let generation = r.generation.unwrap_or_default();
    if let Some(vmx) = &r.vmx {
        let vmx = vmx.display();
        if r.operation == "resume" {
            return if r.resumed == Some(true) {
                format!("finished the interrupted VM job on {vmx} (generation {generation})")
            } else {
                format!("{vmx}: nothing to resume")
            };
        }
        return format!(
            "{} VM {vmx}: {} disk(s), {} in {secs:.3} s; provider {}, key id {}, generation {generation}{}",
            r.operation,
            r.disks.as_ref().map_or(0, Vec::len),
            human_bytes(r.bytes),
            opt(&r.provider),
            opt(&r.key_id),
            if r.resumed == Some(true) {
                " (finished an interrupted run)"
            } else {
                ""
            }
        );
    }
    match (r.operation, r.depth) {
        ("rekey", Some("deep")) if r.detached == Some(true) => format!(
            "{disk}: the online deep rekey goes on in the server (pid {}), {} done so far; `vmcrypt jobs {disk}` follows it",
            r.server_pid.unwrap_or_default(),
            human_bytes(r.bytes)
        ),
        ("rekey", Some("deep")) if r.server_pid.is_some() => format!(
            "rekeyed {disk} (deep, online in the server, pid {}): new DEK, generation {generation}, {} re-encrypted in {secs:.2} s while it was served",
            r.server_pid.unwrap_or_default(),
            human_bytes(r.bytes)
        ),
        ("rekey", Some("deep")) => format!(
            "rekeyed {disk} (deep): new DEK, generation {generation}, {} re-encrypted in {secs:.2} s",
            human_bytes(r.bytes)
        ),
        ("rekey", _) => format!(
            "rekeyed {disk} (shallow{}): provider {}, key id {}, generation {generation}, {secs:.3} s; no data sector was rewritten",
            if r.resumed == Some(true) {
                ", finishing an interrupted rekey"
            } else {
                ""
            },
            opt(&r.provider),
            opt(&r.key_id),
        ),
        ("resume", _) => match r.was {
            Some(s) if s != "encrypted" => format!(
                "finished the interrupted job ({s}) on {disk} from byte {}",
                r.from.unwrap_or_default()
            ),
            _ => format!("{disk}: nothing to resume"),
        },
        (verb, _) => {
            let mut human = format!(
                "{verb} {disk}: {} in {secs:.2} s ({:.2} GB/s); provider {}, key id {}",
                human_bytes(r.bytes),
                r.gbps(),
                opt(&r.provider),
                opt(&r.key_id)
            );
            if let Some(m) = &r.metadata {
                human.push_str(&format!("; metadata in {}", m.display()));
            }
            human
        }
    }
}
