//! The thread that carries an online job on, window after window, at a rate that leaves
//! guests their I/O, until the job is done, fails, or the server stops (the job then waits in
//! its journal for the next start).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use vmcrypt_core::EncryptedDisk;

use super::JobView;

/// How fast an online job goes.
///
/// The default leaves guests at least half of the disk: after each window during which
/// guests sent requests, the job waits as long as the window took (so it holds the disk at
/// most half the time while guests are busy); with no guest request in a window it goes on
/// at once, at full speed. A cap in bytes per second holds the job's average to it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rate {
    /// Half the time while guests are busy, full speed while they are idle.
    #[default]
    Yield,
    /// At most this many bytes per second, on average since the job (re)started.
    Cap(u64),
}

impl Rate {
    /// The rate from a request: a cap, or the default.
    pub fn from_request(cap: Option<u64>) -> Rate {
        cap.filter(|c| *c > 0).map_or(Rate::Yield, Rate::Cap)
    }

    fn cap(self) -> Option<u64> {
        match self {
            Rate::Yield => None,
            Rate::Cap(c) => Some(c),
        }
    }
}

/// The runner's state, shared with the control connections.
#[derive(Default)]
struct State {
    /// The job thread should run the job.
    wanted: bool,
    rate: Rate,
    /// When this process started (or took up) the job.
    since: Option<Instant>,
    error: Option<String>,
    last: Option<JobView>,
}

/// Runs a served disk's online job; see the module docs.
pub(super) struct Runner<'d> {
    disk: &'d EncryptedDisk,
    state: Mutex<State>,
    wake: Condvar,
}

/// Sleeps in steps so a stop request is seen within 50 ms.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

fn view(kind: &str, state: &str, (done, len): (u64, u64), s: &State) -> JobView {
    JobView {
        kind: kind.into(),
        state: state.into(),
        done,
        len,
        rate: s.rate.cap(),
        error: s.error.clone(),
        seconds: s.since.map_or(0.0, |t| t.elapsed().as_secs_f64()),
    }
}

impl<'d> Runner<'d> {
    pub(super) fn new(disk: &'d EncryptedDisk) -> Runner<'d> {
        let st = State {
            // A job taken up from its journal when the disk was opened goes on at once.
            wanted: disk.job().is_some(),
            since: disk.job().map(|_| Instant::now()),
            ..State::default()
        };
        Runner {
            disk,
            state: Mutex::new(st),
            wake: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the thread to run the job (started, or taken up again after an error) at `rate`.
    pub(super) fn go(&self, rate: Rate) {
        let mut s = self.state();
        s.wanted = true;
        s.rate = rate;
        s.error = None;
        s.since = Some(Instant::now());
        self.wake.notify_all();
    }

    /// The job (running or failed) and the last one done.
    pub(super) fn views(&self) -> (Option<JobView>, Option<JobView>) {
        let s = self.state();
        let job = self.disk.job().map(|st| {
            let state = if s.error.is_some() {
                "failed"
            } else {
                "running"
            };
            view(st.kind.as_str(), state, (st.done, st.len), &s)
        });
        (job, s.last.clone())
    }

    /// The job thread: waits for a job, runs it, until `stop`.
    pub(super) fn run(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let rate = {
                let mut s = self.state();
                while !s.wanted && !stop.load(Ordering::Relaxed) {
                    s = self
                        .wake
                        .wait_timeout(s, Duration::from_millis(100))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                s.rate
            };
            if stop.load(Ordering::Relaxed) {
                break;
            }
            self.run_job(rate, stop);
        }
        if let Some(st) = self.disk.job() {
            tracing::info!(disk = %self.disk.path().display(), done = st.done, "online job paused: it goes on when the disk is served again");
        }
    }

    fn run_job(&self, rate: Rate, stop: &AtomicBool) {
        let started = Instant::now();
        let first = self.disk.job().map_or(0, |j| j.done);
        let kind = self.disk.job().map(|j| j.kind.as_str());
        loop {
            if stop.load(Ordering::Relaxed) || self.state().rate != rate {
                // Stopping, or asked again with another rate: the outer loop picks it up.
                return;
            }
            let before = self.disk.job();
            let t = Instant::now();
            // On a worker of the pool, so the window's parallel pieces start there without a hand-off
            // per step.
            match rayon::scope(|_| self.disk.job_step()) {
                Ok(true) => {}
                Ok(false) => {
                    let mut s = self.state();
                    s.wanted = false;
                    if let (Some(kind), Some(b)) = (kind, before) {
                        s.last = Some(view(kind, "done", (b.len, b.len), &s));
                    }
                    return;
                }
                Err(e) => {
                    let msg = vmcrypt_core::error_line(&e);
                    tracing::error!(disk = %self.disk.path().display(), "online job stopped: {msg}");
                    let mut s = self.state();
                    s.wanted = false;
                    s.error = Some(msg);
                    return;
                }
            }
            let took = t.elapsed();
            let (Some(b), Some(a)) = (before, self.disk.job()) else {
                continue;
            };
            match rate {
                Rate::Yield if a.requests > b.requests => sleep_unless(stop, took),
                Rate::Yield => {}
                Rate::Cap(cap) => {
                    let due = Duration::from_secs_f64((a.done - first) as f64 / cap as f64);
                    sleep_unless(stop, due.saturating_sub(started.elapsed()));
                }
            }
        }
    }
}
