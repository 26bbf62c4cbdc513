//! Online jobs: on a disk that `vmcrypt serve` holds, `rekey --deep`, `encrypt --in-place`
//! and `decrypt --in-place` are carried out by the server, over its control socket
//! (vmcrypt_serve::control); this command starts the job, draws its progress and returns
//! when it is done. `rekey --shallow` is done by the server too. Ctrl-C stops following and
//! leaves the job running; `vmcrypt jobs DISK` shows it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use vmcrypt_core::disk::{Disk, control_path};
use vmcrypt_core::{Error, ErrorKind, Progress, Report, Result};
use vmcrypt_serve::control::{Client, JobView, Reply, Request};

use crate::output::{Out, human_bytes};
use crate::progress::{Bar, cancel_on_signal};

/// How often a followed job is asked how far it has come.
const POLL: Duration = Duration::from_millis(200);

/// The server of `disk`, if one holds it and answers.
pub fn server_of(disk: &Path) -> Result<Option<Client>> {
    let Ok(d) = Disk::open(disk) else {
        // Not a disk this command can read: the offline path says why.
        return Ok(None);
    };
    Client::connect(&control_path(d.payload_path()))
}

/// How a followed job ended.
enum Followed {
    Done(JobView),
    Detached(JobView),
}

/// Polls `reply`'s job until it is done, fails, or the user presses Ctrl-C.
fn follow(c: &mut Client, mut reply: Reply, bar: &Bar) -> Result<(Followed, Reply)> {
    let cancel = cancel_on_signal();
    let mut shown = 0;
    let mut started = false;
    loop {
        match reply.job.clone() {
            Some(j) if j.state == "failed" => {
                bar.finish();
                return Err(Error::Served {
                    disk: reply.disk.clone(),
                    pid: reply.pid,
                    kind: ErrorKind::Io,
                    message: format!(
                        "the online {} stopped at {} of {}: {}; it stays recorded: run the command again (or restart the server) to go on",
                        j.kind,
                        human_bytes(j.done),
                        human_bytes(j.len),
                        j.error.unwrap_or_default()
                    ),
                });
            }
            Some(j) => {
                if !started {
                    bar.start(j.len);
                    started = true;
                }
                bar.advance(j.done.saturating_sub(shown));
                shown = shown.max(j.done);
                if cancel.load(Ordering::Relaxed) {
                    bar.finish();
                    return Ok((Followed::Detached(j), reply));
                }
            }
            None => {
                bar.finish();
                let last = reply.last.clone().ok_or_else(|| Error::Served {
                    disk: reply.disk.clone(),
                    pid: reply.pid,
                    kind: ErrorKind::Io,
                    message:
                        "the job is no longer under way, and the server has no record of it ending"
                            .into(),
                })?;
                return Ok((Followed::Done(last), reply));
            }
        }
        std::thread::sleep(POLL);
        reply = c.request(&Request::Status)?;
    }
}

/// An online job as this command shows it.
struct Shown {
    /// The report's operation and depth.
    operation: &'static str,
    depth: Option<&'static str>,
    /// What the server does, after "the server ...".
    doing: &'static str,
    /// The progress bar's label.
    bar: &'static str,
}

/// `rekey --deep` of a served disk, by its server: `Ok(None)` when nobody serves it.
pub fn deep_rekey(disk: &Path, rate: Option<u64>, out: &Out) -> Result<Option<Report>> {
    let Some(c) = server_of(disk)? else {
        return Ok(None);
    };
    let shown = Shown {
        operation: "rekey",
        depth: Some("deep"),
        doing: "rekeys it online",
        bar: "rekeying online",
    };
    let req = Request::DeepRekey { rate, vm: None };
    run_job(c, disk, &req, &shown, rate, out).map(Some)
}

/// The servers of a running VM's disks, for `vm rekey --deep` (vmcrypt_core::vm::ServedDisks):
/// each served disk is rekeyed online by its server, at `rate`, with its own progress bar.
pub struct VmServers<'a> {
    pub rate: Option<u64>,
    pub out: &'a Out,
}

impl vmcrypt_core::vm::ServedDisks for VmServers<'_> {
    fn serves(&self, disk: &Path) -> bool {
        matches!(server_of(disk), Ok(Some(_)))
    }

    fn deep_rekey(&self, disk: &Path, vmx: &Path) -> Result<u64> {
        let c = server_of(disk)?.ok_or_else(|| {
            Error::input(format!(
                "{}: its server went away before its online rekey started; run the VM's rekey again",
                disk.display()
            ))
        })?;
        let shown = Shown {
            operation: "rekey",
            depth: Some("deep"),
            doing: "rekeys it online for the VM",
            bar: "rekeying online",
        };
        let req = Request::DeepRekey {
            rate: self.rate,
            vm: Some(vmx.to_path_buf()),
        };
        let r = run_job(c, disk, &req, &shown, self.rate, self.out)?;
        if r.detached == Some(true) {
            // The disk's job goes on in its server; the VM commits when the rekey is run
            // again and finds every disk done.
            return Err(Error::Cancelled {
                done: r.bytes,
                restored: false,
            });
        }
        Ok(r.bytes)
    }
}

/// `encrypt --in-place` of a plaintext disk served as such, by its server (`c`), under a new
/// KEK from `provider`.
pub fn encrypt(
    c: Client,
    disk: &Path,
    provider: &str,
    rate: Option<u64>,
    out: &Out,
) -> Result<Report> {
    let shown = Shown {
        operation: "encrypt",
        depth: None,
        doing: "encrypts it online",
        bar: "encrypting online",
    };
    let req = Request::Encrypt {
        provider: provider.to_string(),
        rate,
    };
    run_job(c, disk, &req, &shown, rate, out)
}

/// `decrypt --in-place` of a served disk, by its server (`c`); it serves the disk as
/// plaintext afterwards.
pub fn decrypt(c: Client, disk: &Path, rate: Option<u64>, out: &Out) -> Result<Report> {
    let shown = Shown {
        operation: "decrypt",
        depth: None,
        doing: "decrypts it online, and serves it as plaintext afterwards",
        bar: "decrypting online",
    };
    run_job(c, disk, &Request::Decrypt { rate }, &shown, rate, out)
}

/// Starts `req` on the server and follows the job to its end (or until Ctrl-C detaches).
fn run_job(
    mut c: Client,
    disk: &Path,
    req: &Request,
    shown: &Shown,
    rate: Option<u64>,
    out: &Out,
) -> Result<Report> {
    let t = Instant::now();
    let reply = c.request(req)?;
    if !out.quiet && !out.json {
        eprintln!(
            "vmcrypt: {} is served by pid {}: the server {}{}",
            disk.display(),
            reply.pid,
            shown.doing,
            rate.map_or(String::new(), |r| format!(
                ", at most {} MB/s",
                r / 1_000_000
            ))
        );
    }
    let bar = Bar::new(out.quiet, out.json, shown.bar);
    let (ended, reply) = follow(&mut c, reply, &bar)?;
    let mut r = served_report(disk, shown.operation, shown.depth, reply.pid, t);
    match ended {
        Followed::Detached(j) => {
            r.bytes = j.done;
            r.detached = Some(true);
        }
        Followed::Done(j) => {
            r.bytes = j.len;
            recorded(disk, &mut r);
        }
    }
    Ok(r)
}

/// `rekey --shallow` of a served disk, by its server (metadata only: its guests go on
/// undisturbed): `Ok(None)` when nobody serves it.
pub fn shallow_rekey(disk: &Path, provider: &str, out: &Out) -> Result<Option<Report>> {
    let Some(mut c) = server_of(disk)? else {
        return Ok(None);
    };
    let t = Instant::now();
    let reply = c.request(&Request::ShallowRekey {
        provider: provider.to_string(),
    })?;
    if !out.quiet && !out.json {
        eprintln!(
            "vmcrypt: {} is served by pid {}: the server re-wrapped its key",
            disk.display(),
            reply.pid
        );
    }
    let mut r = served_report(disk, "rekey", Some("shallow"), reply.pid, t);
    recorded(disk, &mut r);
    Ok(Some(r))
}

/// The report of a job on `disk` that its server (`pid`) did, started at `t`.
fn served_report(
    disk: &Path,
    operation: &'static str,
    depth: Option<&'static str>,
    pid: u32,
    t: Instant,
) -> Report {
    let mut r = Report::default();
    r.operation = operation;
    r.depth = depth;
    r.disk = Some(disk.to_path_buf());
    r.server_pid = Some(pid);
    r.elapsed = t.elapsed();
    r
}

/// What the server recorded in the disk's metadata (read without the lock, as `inspect`
/// does): generation, provider and key id of its KEK, data unit.
fn recorded(disk: &Path, r: &mut Report) {
    if let Some(m) = Disk::open(disk).ok().and_then(|d| d.encryption().cloned()) {
        r.generation = Some(m.generation);
        if let Some((p, k)) = m.keys().into_iter().next() {
            r.provider = Some(p);
            r.key_id = Some(k);
        }
        r.sector_size = Some(m.identity.sector_size.bytes());
    }
}

/// `vmcrypt jobs DISK [--follow]`.
pub fn jobs(disk: &Path, follow_it: bool, out: &Out) -> Result<()> {
    let Some(mut c) = server_of(disk)? else {
        let stopped = Disk::open(disk)
            .ok()
            .and_then(|d| d.encryption().map(|m| m.state))
            .filter(|s| s.is_online());
        let text = if let Some(state) = stopped {
            format!(
                "{}: not served; an online job is recorded and stopped ({}): `vmcrypt serve` takes it up, `vmcrypt resume` finishes it offline",
                disk.display(),
                state.as_str()
            )
        } else {
            format!("{}: not served; no online job", disk.display())
        };
        out.result(
            &text,
            json!({"disk": disk, "served": false, "stopped_job": stopped.is_some(), "state": stopped.map(|s| s.as_str())}),
        );
        return Ok(());
    };
    let mut reply = c.request(&Request::Status)?;
    if follow_it && reply.job.is_some() {
        let bar = Bar::new(out.quiet, out.json, "online job");
        reply = follow(&mut c, reply, &bar)?.1;
    }
    let line = |j: &JobView| {
        format!(
            "{} {}: {} of {} ({:.0} %), {:.1} s{}{}",
            j.kind,
            j.state,
            human_bytes(j.done),
            human_bytes(j.len),
            if j.len > 0 {
                j.done as f64 * 100.0 / j.len as f64
            } else {
                100.0
            },
            j.seconds,
            j.rate.map_or(String::new(), |r| format!(
                ", at most {} MB/s",
                r / 1_000_000
            )),
            j.error
                .as_deref()
                .map_or(String::new(), |e| format!(": {e}"))
        )
    };
    let text = match (&reply.job, &reply.last) {
        (Some(j), _) => format!(
            "{} (served by pid {}): {}",
            disk.display(),
            reply.pid,
            line(j)
        ),
        (None, Some(l)) => format!(
            "{} (served by pid {}): no job under way; the last: {}",
            disk.display(),
            reply.pid,
            line(l)
        ),
        (None, None) => format!(
            "{} (served by pid {}): no online job",
            disk.display(),
            reply.pid
        ),
    };
    out.result(
        &text,
        json!({"disk": disk, "served": true, "pid": reply.pid, "job": reply.job, "last": reply.last}),
    );
    Ok(())
}
