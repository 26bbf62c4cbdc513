//! The server's end of the control socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use vmcrypt_core::disk::JobKind;
use vmcrypt_core::provider::ProviderRegistry;
use vmcrypt_core::{EncryptedDisk, Error};

use super::runner::{Rate, Runner};
use super::{Failure, MAX_LINE, Reply, Request};
use crate::endpoint::{Listener, Stream};

/// How long a connection may sit between requests.
const IDLE: Duration = Duration::from_secs(60);
/// Connections served at once (each on a thread of its own); more are closed at once.
const MAX_CONNECTIONS: usize = 16;

/// Serves the control socket of a served disk and runs its online job.
pub struct ControlServer<'a> {
    disk: &'a EncryptedDisk,
    registry: &'a dyn ProviderRegistry,
    name: PathBuf,
    runner: Runner<'a>,
}

/// Whether the peer is this process's user or root.
fn peer_allowed(s: &UnixStream) -> Result<(), String> {
    let c = rustix::net::sockopt::socket_peercred(s).map_err(|e| format!("SO_PEERCRED: {e}"))?;
    let me = rustix::process::geteuid().as_raw();
    match c.uid.as_raw() {
        uid if uid == me || uid == 0 => Ok(()),
        uid => Err(format!("uid {uid}, pid {}", c.pid.as_raw_nonzero())),
    }
}

impl<'a> ControlServer<'a> {
    /// A control server for `disk` (named `name` in replies), starting jobs with the KEKs of
    /// `registry`. A job the disk took up from its journal when it was opened goes on as soon
    /// as [`ControlServer::serve`] runs.
    pub fn new(
        disk: &'a EncryptedDisk,
        registry: &'a dyn ProviderRegistry,
        name: PathBuf,
    ) -> ControlServer<'a> {
        ControlServer {
            disk,
            registry,
            name,
            runner: Runner::new(disk),
        }
    }

    /// Runs the job thread and answers control requests on `listener` until `stop`. The job
    /// pauses then (its journal keeps it for the next start).
    ///
    /// # Errors
    /// When accepting fails for good.
    pub fn serve(&self, listener: &Listener, stop: &AtomicBool) -> std::io::Result<()> {
        listener.set_nonblocking()?;
        let active = AtomicUsize::new(0);
        std::thread::scope(|s| -> std::io::Result<()> {
            std::thread::Builder::new()
                .name("vmcrypt-job".into())
                .spawn_scoped(s, || self.runner.run(stop))?;
            while !stop.load(Ordering::Relaxed) {
                let stream = match listener.accept()? {
                    Some((Stream::Unix(u), _)) => u,
                    Some(_) => continue,
                    None => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if let Err(who) = peer_allowed(&stream) {
                    tracing::warn!("control: refused a peer of another user ({who})");
                    self.refuse(
                        stream,
                        "permission denied: this server serves its own user and root",
                    );
                    continue;
                }
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    self.refuse(stream, "too many control connections");
                    continue;
                }
                let active = &active;
                let spawned = std::thread::Builder::new()
                    .name("vmcrypt-control".into())
                    .spawn_scoped(s, move || {
                        self.connection(stream, stop);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    active.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!("control: cannot start a connection thread: {e}");
                }
            }
            Ok(())
        })
    }

    fn refuse(&self, mut stream: UnixStream, why: &str) {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let reply = self.failed(&Error::input(why));
        let _ = write_reply(&mut stream, &reply);
    }

    fn reply(&self) -> Reply {
        let (job, last) = self.runner.views();
        Reply {
            pid: std::process::id(),
            disk: self.name.clone(),
            job,
            last,
            error: None,
        }
    }

    fn failed(&self, e: &Error) -> Reply {
        Reply {
            error: Some(Failure {
                kind: e.kind().as_str().into(),
                message: vmcrypt_core::error_line(e),
            }),
            ..self.reply()
        }
    }

    /// Answers requests on one connection until it closes, idles, sends garbage, or `stop`.
    fn connection(&self, stream: UnixStream, stop: &AtomicBool) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let mut input = BufReader::new(stream.take(u64::MAX));
        let mut line = Vec::new();
        let mut idle = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) && idle < IDLE {
            // Read one line, at most MAX_LINE bytes, across read timeouts.
            input
                .get_mut()
                .set_limit((MAX_LINE + 1 - line.len()) as u64);
            match input.read_until(b'\n', &mut line) {
                Ok(0) if line.is_empty() => return,
                Ok(_) if line.last() == Some(&b'\n') => {}
                Ok(_) if line.len() > MAX_LINE => {
                    let _ = write_reply(&mut out, &self.failed(&Error::input("request too long")));
                    return;
                }
                Ok(0) => return,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    idle += Duration::from_millis(200);
                    continue;
                }
                Err(_) => return,
            }
            idle = Duration::ZERO;
            let reply = match serde_json::from_slice::<Request>(&line) {
                Ok(req) => self.handle(&req),
                Err(e) => {
                    let bad = Error::input(format!("not a control request: {e}"));
                    let _ = write_reply(&mut out, &self.failed(&bad));
                    return;
                }
            };
            line.clear();
            if write_reply(&mut out, &reply).is_err() {
                return;
            }
        }
    }

    fn handle(&self, req: &Request) -> Reply {
        match req {
            Request::Status => self.reply(),
            Request::DeepRekey { rate, vm } => self.start(JobKind::DeepRekey, *rate, || match vm {
                Some(vmx) => self.disk.start_deep_rekey_of_vm(self.registry, vmx),
                None => self.disk.start_deep_rekey(self.registry),
            }),
            Request::Encrypt { provider, rate } => self.start(JobKind::Encrypt, *rate, || {
                self.disk.start_encrypt(self.registry, provider)
            }),
            Request::Decrypt { rate } => self.start(JobKind::Decrypt, *rate, || {
                self.disk.start_decrypt(self.registry)
            }),
            Request::ShallowRekey { provider } => {
                match self.disk.rekey_shallow(self.registry, provider) {
                    Ok(r) => {
                        tracing::info!(disk = %self.name.display(), provider = %r.provider, generation = r.generation, "shallow rekey done");
                        self.reply()
                    }
                    Err(e) => {
                        tracing::warn!(disk = %self.name.display(), "shallow rekey failed: {}", vmcrypt_core::error_line(&e));
                        self.failed(&e)
                    }
                }
            }
        }
    }
}

impl ControlServer<'_> {
    /// Starts an online job of `kind` with `start` and has the job thread run it at `rate`;
    /// a job of that kind under way already (taken up from its journal, or stopped by an
    /// error) goes on at the rate asked for; one of another kind is left alone and refused.
    fn start(
        &self,
        kind: JobKind,
        rate: Option<u64>,
        start: impl FnOnce() -> vmcrypt_core::Result<()>,
    ) -> Reply {
        let started = match self.disk.job() {
            Some(j) if j.kind == kind => Ok(()),
            Some(j) => Err(Error::input(format!(
                "an online {} is under way: it must end before an online {} can start (`vmcrypt jobs {}` shows it)",
                j.kind.as_str(),
                kind.as_str(),
                self.name.display()
            ))),
            None => start(),
        };
        match started {
            Ok(()) => {
                self.runner.go(Rate::from_request(rate));
                self.reply()
            }
            Err(e) => {
                tracing::warn!(disk = %self.name.display(), "online {} not started: {}", kind.as_str(), vmcrypt_core::error_line(&e));
                self.failed(&e)
            }
        }
    }
}

fn write_reply(out: &mut impl Write, reply: &Reply) -> std::io::Result<()> {
    let mut b = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    b.push(b'\n');
    out.write_all(&b)
}
