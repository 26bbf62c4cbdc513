//! Test fixtures for vmcrypt, shared by the crates' integration tests (never shipped):
//! - [`pki`]: a throwaway PKI made with the `openssl` command (ECDSA P-256 and RSA, plus an
//!   untrusted second CA);
//! - [`pykmip`]: real PyKMIP servers on 127.0.0.1 sharing one SQLite database, a stand-in for
//!   a replicating KMS cluster, provisioned into target/pykmip-venv on first use;
//! - [`faults`]: misbehaving peers for failover tests (refused, hang, close, untrusted TLS,
//!   garbage, truncated, 4 GiB length claims, trickled replies).
//!
//! Missing tools make the fixtures panic with how to install them: a test never passes because
//! its dependency is missing.
#![allow(missing_docs)]
#![forbid(unsafe_code)]

pub mod faults;
pub mod guest;
pub mod pki;
pub mod pykmip;

use std::path::PathBuf;

/// The workspace's target directory (CARGO_TARGET_DIR wins).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// The inputs of one cargo-fuzz corpus (`fuzz/corpus/NAME`), for tests that replay it with the
/// fuzz target's checks.
pub fn fuzz_corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(name);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect()
}
