//! `serve`: an encrypted disk exported live over NBD and/or vhost-user-blk until SIGTERM or
//! Ctrl-C. One process, one disk, one lock and one key, whatever the protocols.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use vmcrypt_core::{EncryptedDisk, Error, Result};
use vmcrypt_serve::control::ControlServer;
use vmcrypt_serve::{Endpoint, Listener, NbdServer, ServeStats};
use vmcrypt_vhost::{VhostOptions, VhostStats, VhostUserBlk};

use super::load_config;
use crate::cli::{Cli, ServeArgs};
use crate::output::{Out, human_bytes};
use crate::progress::cancel_on_signal;

pub fn run(cli: &Cli, a: &ServeArgs, out: &Out) -> Result<()> {
    if a.status {
        return super::online::jobs(&a.disk, false, out);
    }
    let nbd_at = a
        .nbd
        .as_deref()
        .map(|s| Endpoint::parse(s).map_err(|e| Error::input(format!("--nbd: {e}"))))
        .transpose()?;
    let vhost_at = a.vhost_user.as_ref().map(|p| Endpoint::Unix(p.clone()));
    // SIGTERM or Ctrl-C: drain and exit 0; a second signal ends the process at once. Installed
    // before any socket exists, so a supervisor that signals as soon as it can connect never
    // meets the default action (death without draining).
    let stop = cancel_on_signal();
    let cfg = load_config(cli)?;
    let registry = cfg.registry();
    // The lock first, then the key: once open, a KMS outage changes nothing. An online job
    // that a stopped server left is taken up here (its window written back) and goes on.
    let disk = Arc::new(if a.plaintext {
        EncryptedDisk::open_plaintext(&a.disk)?
    } else {
        EncryptedDisk::open(&a.disk, &registry).map_err(|e| match e {
            Error::NotEncrypted { path } => Error::input(format!(
                "{} is not encrypted: serve it as it is with --plaintext",
                path.display()
            )),
            e => e,
        })?
    });
    // The control socket: online jobs (`vmcrypt rekey --deep`) and `vmcrypt jobs`. Serving
    // goes on without it (a path too long for a socket, a folder that refuses it).
    let control_at = disk.control_path();
    let control = match Listener::bind(&Endpoint::Unix(control_at.clone())) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(
                "no control socket at {}: {e}; online jobs cannot be started on this disk while it is served",
                control_at.display()
            );
            None
        }
    };
    let controller = ControlServer::new(&disk, &registry, a.disk.clone());
    let bind = |at: &Endpoint| Listener::bind(at).map_err(Error::io("listen on", at.to_string()));
    let metrics_at = a
        .metrics
        .as_deref()
        .map(vmcrypt_agent::metrics::parse_addr)
        .transpose()?;
    let nbd = match &nbd_at {
        Some(at) => Some((
            bind(at)?,
            Arc::new(
                NbdServer::new(Arc::clone(&disk), a.name.clone(), a.read_only)
                    .stall_deadline(Duration::from_secs(a.stall_timeout)),
            ),
        )),
        None => None,
    };
    let vhost = match &vhost_at {
        Some(at) => {
            let mut opts = VhostOptions {
                queue_size: a.queue_size,
                read_only: a.read_only,
                serial: a.serial.clone(),
                ..VhostOptions::default()
            };
            if let Some(q) = a.queues {
                opts.queues = q;
            }
            if let Some(n) = a.io_threads {
                opts.io_threads = Some(usize::from(n));
            }
            let device = VhostUserBlk::new(Arc::clone(&disk), &opts)
                .map_err(|e| Error::input(format!("--vhost-user: {e}")))?;
            Some((bind(at)?, Arc::new(device), opts))
        }
        None => None,
    };
    let what = format!(
        "{} ({}, {}-byte blocks{})",
        a.disk.display(),
        human_bytes(disk.len()),
        disk.unit_size(),
        if a.read_only { ", read-only" } else { "" }
    );
    if let Some((l, s)) = &nbd {
        out.note(&format!(
            "vmcrypt: serving {what} as NBD export \"{}\" on {}; SIGTERM or Ctrl-C stops",
            s.offer().name,
            l.endpoint()
        ));
    }
    if let Some((l, _, o)) = &vhost {
        out.note(&format!(
            "vmcrypt: serving {what} as vhost-user-blk ({} queues of {}) on {}; SIGTERM or Ctrl-C stops",
            o.queues,
            o.queue_size,
            l.endpoint()
        ));
    }
    if let Some(j) = disk.job() {
        out.note(&format!(
            "vmcrypt: the online {} of {} goes on from {} of {}",
            j.kind.as_str(),
            a.disk.display(),
            human_bytes(j.done),
            human_bytes(j.len)
        ));
    }
    let exporter = match metrics_at {
        Some(at) => {
            let page = metrics_page(
                Arc::clone(&disk),
                nbd.as_ref().map(|(_, s)| Arc::clone(s)),
                vhost.as_ref().map(|(_, d, _)| Arc::clone(d)),
            );
            let ex = vmcrypt_agent::metrics::Exporter::start(at, page)?;
            out.note(&format!("vmcrypt: metrics on http://{}/metrics", ex.addr()));
            Some(ex)
        }
        None => None,
    };
    // Under systemd (vmcrypt-serve@.service, Type=notify): the VM may start now.
    vmcrypt_agent::systemd::notify(&format!("READY=1\nSTATUS=serving {what}"));
    // Each protocol on a thread of its own; when one fails, the other is stopped too.
    let (nbd_stats, vhost_stats) = std::thread::scope(|s| {
        let c = control.as_ref().map(|l| {
            let (controller, stop) = (&controller, &stop);
            s.spawn(move || {
                if let Err(e) = controller.serve(l, stop) {
                    tracing::warn!("control socket: {e}");
                }
            })
        });
        let n = nbd
            .as_ref()
            .map(|(l, srv)| s.spawn(|| stop_on_error(&stop, srv.serve(l, &stop))));
        let v = vhost
            .as_ref()
            .map(|(l, dev, _)| s.spawn(|| stop_on_error(&stop, dev.serve(l, &stop))));
        let served = (join(n), join(v));
        // The servers are done: stop the control socket and pause the job too.
        stop.store(true, Ordering::Relaxed);
        if let Some(c) = c {
            let _ = c.join();
        }
        served
    });
    vmcrypt_agent::systemd::notify("STOPPING=1");
    let nbd_stats: Option<ServeStats> = nbd_stats.map_err(Error::io("serve", &a.disk))?;
    let vhost_stats: Option<VhostStats> = vhost_stats.map_err(Error::io("serve", &a.disk))?;
    // Closing the listeners removes the sockets; the last holder of the disk releases its lock
    // (the exporter holds the servers: it goes first).
    drop(exporter);
    drop(nbd);
    drop(vhost);
    drop(control);
    drop(controller);
    drop(disk);
    let mut lines = Vec::new();
    if let Some(st) = &nbd_stats {
        lines.push(format!(
            "NBD: served {} client(s): {} requests, {} read, {} written, {} failed",
            st.clients,
            st.requests,
            human_bytes(st.bytes_read),
            human_bytes(st.bytes_written),
            st.errors
        ));
    }
    if let Some(st) = &vhost_stats {
        lines.push(format!(
            "vhost-user: served {} connection(s): {} requests, {} read, {} written, {} failed, {} unanswerable",
            st.connections,
            st.requests,
            human_bytes(st.bytes_read),
            human_bytes(st.bytes_written),
            st.errors,
            st.broken
        ));
    }
    out.result(
        &lines.join("\n"),
        json!({
            "disk": a.disk,
            "endpoint": nbd_at.as_ref().map(ToString::to_string),
            "stats": nbd_stats,
            "vhost_user": vhost_at.as_ref().map(ToString::to_string),
            "vhost_stats": vhost_stats,
        }),
    );
    Ok(())
}

/// A server's result; a failure stops the other server too.
fn stop_on_error<T>(stop: &AtomicBool, r: std::io::Result<T>) -> std::io::Result<T> {
    if r.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    r
}

/// The result of a server thread, if there is one.
fn join<T>(
    h: Option<std::thread::ScopedJoinHandle<'_, std::io::Result<T>>>,
) -> std::io::Result<Option<T>> {
    h.map(|h| {
        h.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked")))
    })
    .transpose()
}

/// The serving process's metrics page: each protocol's I/O counters, the disk's size and its
/// online job's progress.
fn metrics_page(
    disk: Arc<EncryptedDisk>,
    nbd: Option<Arc<NbdServer>>,
    vhost: Option<Arc<VhostUserBlk>>,
) -> impl Fn() -> String + Send + 'static {
    use vmcrypt_agent::metrics::Page;
    move || {
        let path = disk.path().display().to_string();
        let mut rows: Vec<(&str, [u64; 4])> = Vec::new();
        let nbd_stats = nbd.as_ref().map(|s| s.stats());
        if let Some(st) = &nbd_stats {
            rows.push((
                "nbd",
                [st.requests, st.bytes_read, st.bytes_written, st.errors],
            ));
        }
        if let Some(d) = &vhost {
            let st = d.stats();
            rows.push((
                "vhost-user",
                [st.requests, st.bytes_read, st.bytes_written, st.errors],
            ));
        }
        let mut p = Page::default();
        for (i, (name, help)) in [
            ("vmcrypt_serve_requests_total", "Requests carried out."),
            (
                "vmcrypt_serve_read_bytes_total",
                "Bytes read by clients and guests.",
            ),
            (
                "vmcrypt_serve_written_bytes_total",
                "Bytes written by clients and guests.",
            ),
            (
                "vmcrypt_serve_errors_total",
                "Requests that failed (an I/O error to the client).",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = p.family(name, "counter", help);
            for (proto, v) in &rows {
                f.sample(&[("disk", &path), ("protocol", proto)], v[i]);
            }
        }
        if let Some(st) = &nbd_stats {
            p.family(
                "vmcrypt_serve_nbd_clients_total",
                "counter",
                "NBD clients that reached transmission.",
            )
            .sample(&[("disk", &path)], st.clients);
        }
        p.family(
            "vmcrypt_serve_disk_bytes",
            "gauge",
            "The served disk's size.",
        )
        .sample(&[("disk", &path)], disk.len());
        let job = disk.job();
        p.family(
            "vmcrypt_serve_job_done_bytes",
            "gauge",
            "Bytes the online job (rekey, encrypt, decrypt) has done; job=\"none\" and 0 without one.",
        )
        .sample(
            &[("disk", &path), ("job", job.as_ref().map(|j| j.kind.as_str()).unwrap_or("none"))],
            job.as_ref().map(|j| j.done).unwrap_or(0),
        );
        p.finish()
    }
}
