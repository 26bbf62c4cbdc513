//! Many VMs in one command: `vm encrypt | vm rekey VMX... | --from-file LIST`. The VMs run
//! `--parallel` at a time; each VM's result is one JSON line on stdout as it ends; a VM that
//! fails does not stop the others; the exit code is 0 only if every VM succeeded. With
//! `--results FILE` every line is also appended (and synced) to FILE, and a VM that FILE
//! already records as done for the same operation is skipped: after a failure, a crash or
//! Ctrl-C, the same command again does only what is left.
//!
//! Each VM's job is the single-VM command's (crash-safe, resumable with `vmcrypt resume
//! VMX`); the providers are opened once for the fleet (one KMIP connection pool, one memory of
//! failed servers).

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vmcrypt_core::{Error, Report, Result};

use crate::cli::FleetArgs;
use crate::output::{self, Out};

/// The most VMs at once `--parallel` accepts.
pub const MAX_PARALLEL: usize = 256;

/// The VMs to run: those named, then those of `--from-file` (one path per line; blank lines
/// and `#` comments skipped), each once, in order, made absolute (so that `--results` knows
/// a VM however it was named).
///
/// # Errors
/// An unreadable list; no VM at all.
pub fn vms(named: &[PathBuf], from_file: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = named.to_vec();
    if let Some(f) = from_file {
        let bytes = vmcrypt_core::fsutil::read_bounded(f, 64 << 20)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::input(format!("{} is not UTF-8 text", f.display())))?;
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(PathBuf::from),
        );
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in all {
        let abs = std::path::absolute(&p).map_err(Error::io("resolve", &p))?;
        if seen.insert(abs.clone()) {
            out.push(abs);
        }
    }
    if out.is_empty() {
        return Err(Error::input(
            "no VM to run: name VMX files or give --from-file LIST",
        ));
    }
    Ok(out)
}

/// The VMs that `file` records as done by `operation` (a line with `"result": "ok"`). Lines
/// that are not JSON (a line cut by a crash) are skipped.
fn done_in(file: &Path, operation: &str) -> Result<BTreeSet<PathBuf>> {
    let bytes = match vmcrypt_core::fsutil::read_bounded(file, 1 << 30) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(BTreeSet::new());
        }
        Err(e) => return Err(e),
    };
    let mut done = BTreeSet::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["operation"] == operation
            && let Some(vmx) = v["vmx"].as_str()
        {
            if v["result"] == "ok" {
                done.insert(PathBuf::from(vmx));
            } else if v["result"] == "error" {
                // A later failure (say, of a VM decrypted and encrypted again) counts.
                done.remove(Path::new(vmx));
            }
        }
    }
    Ok(done)
}

/// Where the lines go: stdout, and the results file when there is one.
struct Sink {
    results: Option<(PathBuf, Mutex<std::fs::File>)>,
    stdout: Mutex<()>,
}

impl Sink {
    fn open(results: Option<&Path>) -> Result<Sink> {
        let results = match results {
            Some(p) => {
                let f = vmcrypt_core::fsutil::open_append(p, 0o600)?;
                Some((p.to_path_buf(), Mutex::new(f)))
            }
            None => None,
        };
        Ok(Sink {
            results,
            stdout: Mutex::new(()),
        })
    }

    fn line(&self, v: &Value) {
        let text = v.to_string();
        if let Some((path, f)) = &self.results {
            let mut f = f.lock().unwrap_or_else(PoisonError::into_inner);
            let written = f
                .write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_data());
            if let Err(e) = written {
                tracing::error!(
                    "cannot append to {}: {e}; a rerun may redo this VM",
                    path.display()
                );
            }
        }
        let _g = self.stdout.lock().unwrap_or_else(PoisonError::into_inner);
        output::print_line(&text);
    }
}

/// What a fleet run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub ok: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_started: usize,
}

/// Runs `job` on every VM, `parallel` at a time, and prints a line for each; see the module
/// docs. `operation` names the job in the lines (`encrypt`, `rekey-shallow`, `rekey-deep`).
pub fn run(
    operation: &str,
    vms: Vec<PathBuf>,
    args: &FleetArgs,
    cancel: &AtomicBool,
    out: &Out,
    job: &(dyn Fn(&Path) -> Result<Report> + Sync),
) -> ExitCode {
    let started = Instant::now();
    let total = vms.len();
    let sink = match Sink::open(args.results.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(out, &e),
    };
    let done = match args.results.as_deref().map(|f| done_in(f, operation)) {
        Some(Ok(d)) => d,
        Some(Err(e)) => return fail(out, &e),
        None => BTreeSet::new(),
    };
    let mut summary = Summary::default();
    let mut queue = VecDeque::new();
    for vmx in vms {
        if done.contains(&vmx) {
            summary.skipped += 1;
            output::print_line(
                &json!({"vmx": vmx, "operation": operation, "result": "skipped",
                        "reason": "done, as the results file records"})
                .to_string(),
            );
        } else {
            queue.push_back(vmx);
        }
    }
    let queue = Mutex::new(queue);
    let tally = Mutex::new(summary);
    let parallel = (args.parallel as usize).clamp(1, MAX_PARALLEL);
    std::thread::scope(|s| {
        for _ in 0..parallel.min(total.max(1)) {
            s.spawn(|| {
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some(vmx) = next else { return };
                    let t = Instant::now();
                    let r = job(&vmx);
                    let line = line_for(operation, &vmx, &r, t.elapsed());
                    {
                        let mut s = tally.lock().unwrap_or_else(PoisonError::into_inner);
                        match &r {
                            Ok(_) => s.ok += 1,
                            Err(_) => s.failed += 1,
                        }
                    }
                    sink.line(&line);
                }
            });
        }
    });
    let mut summary = *tally.lock().unwrap_or_else(PoisonError::into_inner);
    summary.not_started = queue.lock().unwrap_or_else(PoisonError::into_inner).len();
    let secs = started.elapsed().as_secs_f64();
    let ran = summary.ok + summary.failed;
    if !out.quiet {
        eprintln!(
            "vmcrypt: {operation} of {total} VM(s): {} ok, {} failed, {} skipped{}, in {secs:.2} s ({:.1} VMs/s){}",
            summary.ok,
            summary.failed,
            summary.skipped,
            if summary.not_started > 0 {
                format!(", {} not started (interrupted)", summary.not_started)
            } else {
                String::new()
            },
            if secs > 0.0 { ran as f64 / secs } else { 0.0 },
            match (&args.results, summary.failed + summary.not_started) {
                (_, 0) => String::new(),
                (Some(f), _) => format!(
                    "; run the same command again to do only what is left ({} records what is done)",
                    f.display()
                ),
                (None, _) => "; rerun with --results FILE to skip what is done".into(),
            }
        );
    }
    if summary.not_started > 0 {
        ExitCode::from(130)
    } else if summary.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn fail(out: &Out, e: &Error) -> ExitCode {
    out.error(e);
    ExitCode::from(output::exit_code(e))
}

/// One VM's line: what, how it ended, how long it took; the report's key facts or the error.
fn line_for(operation: &str, vmx: &Path, r: &Result<Report>, took: Duration) -> Value {
    let mut v = json!({
        "vmx": vmx,
        "operation": operation,
        "seconds": (took.as_secs_f64() * 1e3).round() / 1e3,
    });
    match r {
        Ok(rep) => {
            v["result"] = "ok".into();
            v["vm_uuid"] = json!(rep.vm_uuid);
            v["provider"] = json!(rep.provider);
            v["key_id"] = json!(rep.key_id);
            v["generation"] = json!(rep.generation);
            v["disks"] = json!(rep.disks.as_ref().map_or(0, Vec::len));
            v["bytes"] = json!(rep.bytes);
        }
        Err(e) => {
            v["result"] = "error".into();
            v["error"] = json!({
                "kind": e.kind().as_str(),
                "message": e.to_string(),
                "exit_code": output::exit_code(e),
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_skips_comments_blank_lines_and_repeats() {
        let d = tempfile::tempdir().expect("tempdir");
        let list = d.path().join("list");
        std::fs::write(&list, "# fleet\n/vms/a.vmx\n\n  /vms/b.vmx  \n/vms/a.vmx\n")
            .expect("write");
        let v = vms(&[PathBuf::from("/vms/c.vmx")], Some(&list)).expect("list");
        let names: Vec<_> = v.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["/vms/c.vmx", "/vms/a.vmx", "/vms/b.vmx"]);
        assert!(vms(&[], None).is_err());
    }

    #[test]
    fn what_is_done_is_the_last_word_of_the_results_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("results.jsonl");
        std::fs::write(
            &f,
            concat!(
                "{\"vmx\":\"/a.vmx\",\"operation\":\"rekey-shallow\",\"result\":\"ok\"}\n",
                "{\"vmx\":\"/b.vmx\",\"operation\":\"rekey-shallow\",\"result\":\"error\"}\n",
                "{\"vmx\":\"/c.vmx\",\"operation\":\"encrypt\",\"result\":\"ok\"}\n",
                "{\"vmx\":\"/d.vmx\",\"operation\":\"rekey-shallow\",\"result\":\"ok\"}\n",
                "{\"vmx\":\"/d.vmx\",\"operation\":\"rekey-shallow\",\"result\":\"error\"}\n",
                "{\"vmx\":\"/e.vmx\",\"operation\":\"rekey-sh",
            ),
        )
        .expect("write");
        let done = done_in(&f, "rekey-shallow").expect("read");
        assert_eq!(
            done.into_iter().collect::<Vec<_>>(),
            [PathBuf::from("/a.vmx")]
        );
        assert!(
            done_in(&d.path().join("none"), "encrypt")
                .expect("missing")
                .is_empty()
        );
    }
}
