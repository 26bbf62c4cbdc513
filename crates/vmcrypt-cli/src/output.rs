//! Results on stdout (human text or one JSON document), errors on stderr with their causes,
//! and the exit codes.

use serde_json::{Value, json};
use vmcrypt_core::{Error, ErrorKind};

/// Output settings from the global flags.
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    /// Whether a JSON document was printed: `--json` prints exactly one, so an error after a
    /// result (a check that found every server down) goes into the exit code and stderr only.
    pub printed: std::cell::Cell<bool>,
}

/// Writes a line to stdout. A reader that went away (`vmcrypt ... | head`) ends the process
/// quietly with 141, as a shell reports SIGPIPE, instead of a panic.
pub fn print_line(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{text}").and_then(|()| o.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(141);
    }
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
            self.printed.set(true);
            print_line(&doc.to_string());
        } else if !self.quiet && !human.is_empty() {
            print_line(human);
        }
    }

    /// A note for the operator on stderr (suppressed by `-q` and `--json`).
    pub fn note(&self, text: &str) {
        if !self.quiet && !self.json {
            eprintln!("{text}");
        }
    }

    /// Prints an error: `error: ...`, a `caused by:` line per source, an optional hint; with
    /// `--json`, one document with the same (unless a result document was printed already).
    pub fn error(&self, e: &Error) {
        let chain = vmcrypt_core::error_causes(e);
        if self.json {
            if self.printed.get() {
                // The one document is out: the error goes to stderr and the exit code.
                eprintln!("error: {e}");
                return;
            }
            let doc = json!({
                "version": JSON_VERSION,
                "error": { "kind": kind_name(e.kind()), "message": e.to_string(), "causes": chain, "exit_code": exit_code(e), "hint": hint(e) }
            });
            self.printed.set(true);
            print_line(&doc.to_string());
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
/// 5 disk in use, 130 interrupted (SIGINT or SIGTERM, after the job's clean-up).
pub fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::Cancelled => 130,
        ErrorKind::KeyService => 3,
        ErrorKind::UnwrapFailed => 4,
        ErrorKind::InUse => 5,
        _ => 1,
    }
}

fn kind_name(k: ErrorKind) -> &'static str {
    k.as_str()
}

fn hint(e: &Error) -> Option<&'static str> {
    match e {
        Error::UnwrapFailed => Some(
            "the keystore or KEK does not match this disk, or its metadata was altered or copied from another disk; nothing was changed",
        ),
        Error::Integrity { .. } => Some("the image and its metadata disagree; nothing was changed"),
        Error::WrongPassphrase { .. } => Some(
            "give the passphrase the backup was made with (--passphrase-file or VMCRYPT_PASSPHRASE); a backup cannot be opened without it",
        ),
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
