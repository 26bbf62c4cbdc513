//! Results on stdout (human text or one JSON document), errors on stderr with their causes,
//! and the exit codes.

use serde_json::{Value, json};
use vmcrypt_core::{Error, ErrorKind};

/// Output settings from the global flags.
pub struct Out {
    pub json: bool,
    pub quiet: bool,
}

/// Version of the JSON documents.
pub const JSON_VERSION: u32 = 1;

impl Out {
    /// Prints a result: the JSON document, or the human text unless `-q`.
    pub fn result(&self, human: &str, mut doc: Value) {
        if self.json {
            if let Value::Object(m) = &mut doc {
                m.insert("version".into(), json!(JSON_VERSION));
            }
            println!("{doc}");
        } else if !self.quiet && !human.is_empty() {
            println!("{human}");
        }
    }

    /// A note for the operator on stderr (suppressed by `-q` and `--json`).
    pub fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprintln!("{text}");
        }
    }

    /// Prints an error: `error: ...`, a `caused by:` line per source, an optional hint.
    pub fn error(&self, e: &Error) {
        let mut chain = Vec::new();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            chain.push(s.to_string());
            src = s.source();
        }
        if self.json {
            let doc = json!({
                "version": JSON_VERSION,
                "error": { "kind": kind_name(e.kind()), "message": e.to_string(), "causes": chain, "exit_code": exit_code(e) }
            });
            println!("{doc}");
            return;
        }
        eprintln!("error: {e}");
        for c in &chain {
            eprintln!("  caused by: {c}");
        }
        if let Some(h) = hint(e) {
            eprintln!("  hint: {h}");
        }
    }
}

/// 0 ok, 1 failed, 2 usage (clap), 3 key service unreachable, 4 unwrap or integrity failure,
/// 5 disk in use.
pub fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::KeyService => 3,
        ErrorKind::UnwrapFailed => 4,
        ErrorKind::InUse => 5,
        _ => 1,
    }
}

fn kind_name(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::Io => "io",
        ErrorKind::InvalidInput => "invalid_input",
        ErrorKind::InvalidSettings => "invalid_settings",
        ErrorKind::UnwrapFailed => "unwrap_failed",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::KeyService => "key_service",
        ErrorKind::KeyRefused => "key_refused",
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::InUse => "in_use",
        _ => "other",
    }
}

fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::UnwrapFailed => Some(
            "the keystore or KEK does not match this disk, or its metadata was altered or copied from another disk; nothing was changed",
        ),
        Error::Integrity { .. } => Some("the image and its metadata disagree; nothing was changed"),
        Error::KeyService { .. } => {
            Some("the key provider may be unreachable; it is safe to retry")
        }
        Error::InUse { .. } => Some(
            "one job at a time per disk: wait for the other job to finish, or stop the program that has the disk open; nothing was changed",
        ),
        Error::KeyRefused { .. } => Some(
            "the key provider answered and refused; retrying will not help; nothing was changed",
        ),
        _ => None,
    }
}

/// Bytes as MiB/GiB for people.
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    } else if f >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else {
        format!("{n} bytes")
    }
}
