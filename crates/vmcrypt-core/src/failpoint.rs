//! Crash injection for tests. With the `failpoints` feature, `VMCRYPT_FAILPOINT=NAME` makes
//! the process abort (no unwinding, no cleanup, like a power cut after the last fsync) when it
//! reaches the point named NAME. Without the feature this compiles to nothing.

/// Aborts here if the failpoint `name` is armed.
#[inline]
pub(crate) fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("VMCRYPT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("vmcrypt: failpoint {name} hit, aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
