//! Crash injection for tests. With the `failpoints` feature, `VMCRYPT_FAILPOINT=NAME` makes
//! the process abort (no unwinding, no cleanup, like a power cut after the last fsync) when it
//! reaches the point named NAME. Without the feature this compiles to nothing.

/// Aborts here if the failpoint `name` is armed.
#[inline]
pub(crate) fn hit(name: &str) {
    #[cfg(test)]
    if CRASH_AT.with(|c| c.get() == Some(name)) {
        // Unwinds without the panic hook's message; the in-process crash tests catch it.
        std::panic::resume_unwind(Box::new(Crashed(name.to_string())));
    }
    #[cfg(feature = "failpoints")]
    if std::env::var("VMCRYPT_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("vmcrypt: failpoint {name} hit, aborting");
        std::process::abort();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Pauses here, once per process, if `VMCRYPT_PAUSE_AT=name` (with the `failpoints` feature):
/// creates the file `VMCRYPT_PAUSE_FILE`, then waits until a test removes it (at most 60 s).
/// The concurrency tests use it to hold a job at a known point, such as just after it took its
/// locks.
#[inline]
pub(crate) fn pause(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static PAUSED: AtomicBool = AtomicBool::new(false);
        let armed = std::env::var("VMCRYPT_PAUSE_AT").is_ok_and(|v| v == name);
        if let (true, Some(file)) = (armed, std::env::var_os("VMCRYPT_PAUSE_FILE"))
            && !PAUSED.swap(true, Ordering::SeqCst)
        {
            let file = std::path::PathBuf::from(file);
            if std::fs::write(&file, b"paused\n").is_ok() {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while file.exists() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(test)]
thread_local! {
    /// The failpoint at which this thread "crashes" (unwinds with [`Crashed`]): the
    /// in-process crash tests of the online job, which keep the files and drop the process
    /// state, as kill -9 does.
    pub(crate) static CRASH_AT: std::cell::Cell<Option<&'static str>> =
        const { std::cell::Cell::new(None) };
}

/// The unwind payload of a crash at a failpoint (tests).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Crashed(pub(crate) String);
