//! Every environment variable vmcrypt reads, with what it does and what it accepts. Each is
//! checked before a command runs: `VMCRYPT_CHUNK_BYTES=banana` is an error naming the
//! variable, not a silent default, and a `VMCRYPT_*` variable vmcrypt does not read (a typo)
//! is warned about. docs/cli.md lists the same table; a test keeps the two, and the sources,
//! in step.

use vmcrypt_core::{Error, Result};

/// One variable.
#[derive(Debug)]
pub struct Var {
    /// Its name.
    pub name: &'static str,
    /// What it does, for docs/cli.md.
    pub doc: &'static str,
    /// Whether its value is a secret: never echoed in an error.
    pub secret: bool,
    /// None when any value is good, else why this one is not.
    check: fn(&str) -> Option<String>,
}

fn any(_: &str) -> Option<String> {
    None
}

fn path(v: &str) -> Option<String> {
    v.is_empty().then(|| "must name a file".into())
}

fn chunk(v: &str) -> Option<String> {
    match v.parse::<u64>() {
        Ok(n) if n >= 4096 && n.is_multiple_of(4096) && n <= MAX_CHUNK => None,
        _ => Some(format!(
            "must be a number of bytes, a multiple of 4096 from 4096 to {MAX_CHUNK}"
        )),
    }
}

/// The largest chunk (and window) `VMCRYPT_CHUNK_BYTES` may ask for: 1 GiB, far above any
/// useful size, and small enough that a buffer of it can be allocated.
const MAX_CHUNK: u64 = 1 << 30;

fn one_of(allowed: &'static [&'static str]) -> impl Fn(&str) -> Option<String> {
    move |v| (!allowed.contains(&v)).then(|| format!("must be one of: {}", allowed.join(", ")))
}

fn engine(v: &str) -> Option<String> {
    one_of(&["auto", "journal"])(v)
}

fn backend(v: &str) -> Option<String> {
    one_of(&["auto", "portable"])(v)
}

fn level(v: &str) -> Option<String> {
    one_of(&["error", "warn", "info", "debug", "trace"])(&v.trim().to_ascii_lowercase())
}

fn passphrase(v: &str) -> Option<String> {
    v.is_empty().then(|| "is empty".into())
}

/// The variables, in the order docs/cli.md lists them.
pub const VARS: &[Var] = &[
    Var {
        name: "VMCRYPT_CONFIG",
        doc: "the configuration file, when `--config` is not given (default: /etc/vmcrypt/config.toml for root, else $XDG_CONFIG_HOME/vmcrypt/config.toml)",
        secret: false,
        check: path,
    },
    Var {
        name: "VMCRYPT_AGENT",
        doc: "the host agent's socket, as `--agent`",
        secret: false,
        check: path,
    },
    Var {
        name: "VMCRYPT_AUDIT_LOG",
        doc: "the audit log, as `--audit-log`: a file, or `journald`",
        secret: false,
        check: path,
    },
    Var {
        name: "VMCRYPT_PASSPHRASE",
        doc: "the passphrase of `provider backup` and `provider restore` when no `--passphrase-file` is given (it is visible to root in /proc: prefer the file)",
        secret: true,
        check: passphrase,
    },
    Var {
        name: "VMCRYPT_CHUNK_BYTES",
        doc: "chunk and window of in-place jobs in bytes (a multiple of 4096; default 8 MiB chunks, 64 MiB windows); for testing and comparisons",
        secret: false,
        check: chunk,
    },
    Var {
        name: "VMCRYPT_INPLACE_ENGINE",
        doc: "`journal`: the journaled engine for every in-place job, not only where the payload cannot move; `auto` (the default) chooses",
        secret: false,
        check: engine,
    },
    Var {
        name: "VMCRYPT_XTS_BACKEND",
        doc: "`portable`: the portable XTS kernel even where the CPU has VAES (how CI tests both); `auto` (the default) takes the fastest",
        secret: false,
        check: backend,
    },
    Var {
        name: "RUST_LOG",
        doc: "the log level on stderr (error, warn, info, debug, trace), over `-q` and `-v`",
        secret: false,
        check: level,
    },
    Var {
        name: "NOTIFY_SOCKET",
        doc: "set by systemd for a `Type=notify` service: where `agent serve` and `serve` send READY=1 and STOPPING=1",
        secret: false,
        check: any,
    },
    Var {
        name: "LISTEN_PID",
        doc: "set by systemd's socket activation, with LISTEN_FDS: the socket `agent serve` is to serve (descriptor 3)",
        secret: false,
        check: any,
    },
    Var {
        name: "LISTEN_FDS",
        doc: "set by systemd's socket activation: how many sockets it passed",
        secret: false,
        check: any,
    },
    Var {
        name: "XDG_CONFIG_HOME",
        doc: "where a user's configuration is (default ~/.config), as the XDG base directory specification says",
        secret: false,
        check: any,
    },
    Var {
        name: "HOME",
        doc: "a user's home, for ~/.config",
        secret: false,
        check: any,
    },
];

/// Variables that vmcrypt's own processes and tests set, never an operator: known, so not
/// warned about, and not documented as settings.
const INTERNAL: &[&str] = &[
    // A hardened child process's marker (vmcrypt-secmem).
    "VMCRYPT_HARDEN_CHILD",
    // Crash injection of the fault tests (builds with the `failpoints` feature only).
    "VMCRYPT_FAILPOINT",
    "VMCRYPT_PAUSE_AT",
    "VMCRYPT_PAUSE_FILE",
];

/// Checks every variable that is set: the first bad one is an error naming it (and its value,
/// unless secret); an unknown `VMCRYPT_*` one is a warning, with the name it may have meant.
///
/// # Errors
/// [`Error::InvalidInput`] for a variable with a value it cannot take.
pub fn check() -> Result<()> {
    check_with(&|k| std::env::var_os(k), &|| {
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect()
    })
}

fn check_with(
    get: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    names: &dyn Fn() -> Vec<String>,
) -> Result<()> {
    for var in VARS {
        let Some(raw) = get(var.name) else { continue };
        let Some(v) = raw.to_str() else {
            return Err(Error::input(format!(
                "environment variable {} is not UTF-8 text",
                var.name
            )));
        };
        // An empty variable is unset, as for most Unix tools; for the passphrase, an error.
        if v.is_empty() && !var.secret {
            continue;
        }
        if let Some(why) = (var.check)(v) {
            let shown = if var.secret {
                var.name.to_string()
            } else {
                format!("{}={v:?}", var.name)
            };
            return Err(Error::input(format!("environment variable {shown} {why}")));
        }
    }
    for name in names() {
        if name.starts_with("VMCRYPT_")
            && !VARS.iter().any(|v| v.name == name)
            && !INTERNAL.contains(&name.as_str())
        {
            let near = VARS
                .iter()
                .map(|v| v.name)
                .find(|known| similar(known, &name))
                .map(|k| format!("; did you mean {k}?"))
                .unwrap_or_default();
            tracing::warn!("environment variable {name} is not one vmcrypt reads{near}");
        }
    }
    Ok(())
}

/// Within two single-letter edits (a typo), by Levenshtein distance.
fn similar(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            row.push(sub.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()] <= 2
}

/// `VMCRYPT_CHUNK_BYTES`, once [`check`] has passed.
pub fn chunk_bytes() -> Option<u64> {
    std::env::var("VMCRYPT_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// `VMCRYPT_INPLACE_ENGINE=journal`.
pub fn journal_only() -> bool {
    std::env::var("VMCRYPT_INPLACE_ENGINE").is_ok_and(|v| v == "journal")
}

/// The level `RUST_LOG` asks for, once [`check`] has passed.
pub fn log_level() -> Option<tracing::Level> {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, &str)]) -> Result<()> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = |k: &str| {
            owned
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| std::ffi::OsString::from(v))
        };
        let names = || owned.iter().map(|(k, _)| k.clone()).collect();
        check_with(&get, &names)
    }

    fn reason(pairs: &[(&str, &str)]) -> String {
        match run(pairs) {
            Err(Error::InvalidInput { reason }) => reason,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    #[test]
    fn bad_values_are_errors_that_name_the_variable() {
        let r = reason(&[("VMCRYPT_CHUNK_BYTES", "banana")]);
        assert!(r.contains("VMCRYPT_CHUNK_BYTES=\"banana\""), "{r}");
        assert!(r.contains("multiple of 4096"), "{r}");
        for bad in ["4095", "6000", "0", "-4096", "2147483648"] {
            reason(&[("VMCRYPT_CHUNK_BYTES", bad)]);
        }
        assert!(reason(&[("VMCRYPT_INPLACE_ENGINE", "jornal")]).contains("auto, journal"));
        assert!(reason(&[("VMCRYPT_XTS_BACKEND", "fast")]).contains("portable"));
        assert!(reason(&[("RUST_LOG", "loud")]).contains("RUST_LOG"));
    }

    #[test]
    fn good_and_empty_values_pass() {
        run(&[
            ("VMCRYPT_CHUNK_BYTES", "1048576"),
            ("VMCRYPT_INPLACE_ENGINE", "journal"),
            ("VMCRYPT_XTS_BACKEND", "portable"),
            ("RUST_LOG", "DEBUG"),
            ("VMCRYPT_CONFIG", "/etc/vmcrypt/config.toml"),
            ("VMCRYPT_AGENT", ""),
            ("VMCRYPT_FAILPOINT", "anything"),
            ("VMCRYPT_CHUNKBYTES", "1"),
            ("PATH", "/bin"),
        ])
        .expect("good values");
    }

    #[test]
    fn a_secret_is_never_echoed() {
        let r = reason(&[("VMCRYPT_PASSPHRASE", "")]);
        assert!(r.contains("VMCRYPT_PASSPHRASE is empty"), "{r}");
        run(&[("VMCRYPT_PASSPHRASE", "hunter22hunter22")]).expect("any passphrase");
    }

    #[test]
    fn typos_are_near_and_other_names_are_not() {
        assert!(similar("VMCRYPT_CHUNK_BYTES", "VMCRYPT_CHUNKBYTES"));
        assert!(similar("VMCRYPT_CONFIG", "VMCRYPT_CONFG"));
        assert!(!similar("VMCRYPT_CONFIG", "VMCRYPT_AGENT"));
    }

    /// Every variable the sources read is in the table (or internal), and docs/cli.md lists
    /// every one of the table: the documented interface cannot drift from the code.
    #[test]
    fn the_table_covers_the_sources_and_the_docs_cover_the_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut read = std::collections::BTreeSet::new();
        let mut stack = vec![root.join("crates")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n != "tests" && n != "target") {
                        stack.push(p);
                    }
                } else if p.extension().is_some_and(|x| x == "rs")
                    && !p.ends_with("vmcrypt-cli/src/environment.rs")
                {
                    let text = std::fs::read_to_string(&p).expect("read source");
                    // The ways the sources read a variable: std::env, clap's `env =`, and
                    // a lookup function passed in for tests (`env("...")`).
                    for how in ["var(\"", "var_os(\"", "env = \"", "env(\""] {
                        for (i, _) in text.match_indices(how) {
                            let name: String = text[i + how.len()..]
                                .chars()
                                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                                .collect();
                            if name.starts_with("VMCRYPT_") {
                                read.insert(name);
                            }
                        }
                    }
                }
            }
        }
        for known in [
            "VMCRYPT_XTS_BACKEND",
            "VMCRYPT_AGENT",
            "VMCRYPT_AUDIT_LOG",
            "VMCRYPT_CONFIG",
        ] {
            assert!(read.contains(known), "the scan missed {known}: {read:?}");
        }
        for name in &read {
            assert!(
                VARS.iter().any(|v| v.name == name) || INTERNAL.contains(&name.as_str()),
                "{name} is read by the sources but not in environment::VARS"
            );
        }
        let docs = std::fs::read_to_string(root.join("docs/cli.md")).expect("docs/cli.md");
        for v in VARS {
            assert!(
                docs.contains(&format!("`{}`", v.name)),
                "docs/cli.md does not document {}",
                v.name
            );
        }
    }
}
