//! A progress bar on stderr for long jobs: only on a terminal, never with `-q` or `--json`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmcrypt_core::Progress;

/// Adapts the library's [`Progress`] to an indicatif bar.
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar when stderr is a terminal and output is not quiet or JSON; otherwise nothing.
    pub fn new(quiet: bool, json: bool, label: &str) -> Bar {
        if quiet || json || !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        pb.set_style(style);
        pb.set_message(label.to_string());
        Bar(Some(pb))
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(pb) = &self.0 {
            pb.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

/// A cancel flag raised by SIGINT or SIGTERM: the job stops at the next chunk boundary and an
/// in-place job undoes its work. A second signal ends the process at once.
pub fn cancel_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Registration only fails for forbidden signals; these two are allowed, and without a
        // handler the default action (terminate) still applies, so the error is not fatal.
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone());
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}
