//! Passphrases come from `--passphrase-file`, else `$VMCRYPT_PASSPHRASE`, else a terminal
//! prompt; never from argv, where `ps` would show them.

use std::io::IsTerminal;
use std::path::Path;

use vmcrypt_core::{Error, Result};
use zeroize::Zeroizing;

/// Reads a passphrase. `confirm` asks twice on a terminal (for new backups).
pub fn read(file: Option<&Path>, confirm: bool) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        let text = Zeroizing::new(std::fs::read_to_string(f).map_err(|e| Error::Io {
            op: "read",
            path: f.to_path_buf(),
            source: e,
        })?);
        let line = text.lines().next().unwrap_or("");
        return nonempty(Zeroizing::new(line.to_string()));
    }
    if let Ok(v) = std::env::var("VMCRYPT_PASSPHRASE") {
        return nonempty(Zeroizing::new(v));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::InvalidInput {
            reason: "no passphrase: give --passphrase-file FILE or set VMCRYPT_PASSPHRASE (no terminal to prompt on)".into(),
        });
    }
    let first =
        Zeroizing::new(
            rpassword::prompt_password("Passphrase: ").map_err(|e| Error::Io {
                op: "read passphrase from",
                path: "/dev/tty".into(),
                source: e,
            })?,
        );
    if confirm {
        let second = Zeroizing::new(rpassword::prompt_password("Repeat passphrase: ").map_err(
            |e| Error::Io {
                op: "read passphrase from",
                path: "/dev/tty".into(),
                source: e,
            },
        )?);
        if *first != *second {
            return Err(Error::InvalidInput {
                reason: "the passphrases differ".into(),
            });
        }
    }
    nonempty(first)
}

fn nonempty(p: Zeroizing<String>) -> Result<Zeroizing<String>> {
    if p.is_empty() {
        return Err(Error::InvalidInput {
            reason: "the passphrase is empty".into(),
        });
    }
    Ok(p)
}

/// The fewest characters a new backup passphrase may have without
/// `--allow-short-passphrase`. A backup can be copied and attacked offline; Argon2id slows each
/// guess, but a short passphrase still falls.
pub const MIN_LEN: usize = 12;

/// Refuses a new passphrase shorter than [`MIN_LEN`] characters unless `allow_short`.
///
/// # Errors
/// [`Error::InvalidInput`], saying how long it must be (never what it was).
pub fn check_strength(pw: &str, allow_short: bool) -> Result<()> {
    let n = pw.chars().count();
    if n < MIN_LEN && !allow_short {
        return Err(Error::input(format!(
            "the backup passphrase has {n} characters; use at least {MIN_LEN} (a backup can be attacked offline), or pass --allow-short-passphrase"
        )));
    }
    if n < MIN_LEN {
        tracing::warn!("the backup passphrase has only {n} characters (--allow-short-passphrase)");
    }
    Ok(())
}
