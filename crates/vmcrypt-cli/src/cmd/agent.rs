//! `vmcrypt agent serve` and `vmcrypt agent status`: the host agent (docs/agent.md).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use vmcrypt_agent::{Agent, AgentClient, KeyCache, Shutdown, cache::check_capacity, systemd};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::{Error, Result};

use crate::cli::{AgentCmd, Cli};
use crate::output::Out;
use vmcrypt_agent::config::Config;

pub fn run(cli: &Cli, a: &AgentCmd, out: &Out) -> Result<()> {
    match a {
        AgentCmd::Serve {
            socket,
            cache_size,
            max_in_flight,
            metrics,
        } => serve(
            cli,
            socket,
            *cache_size,
            *max_in_flight as usize,
            metrics.as_deref(),
            out,
        ),
        AgentCmd::Status { socket } => status(which(cli, socket.as_deref())?, out),
        AgentCmd::Forget {
            socket,
            provider,
            key_id,
            all: _,
        } => {
            let socket = which(cli, socket.as_deref())?;
            let n = AgentClient::new(socket).forget(provider.as_deref(), key_id.as_deref())?;
            out.result(
                &format!("the agent forgot {n} cached key(s)"),
                json!({"forgotten": n}),
            );
            Ok(())
        }
    }
}

/// The agent's socket: `--socket`, else the global `--agent`.
fn which<'a>(cli: &'a Cli, socket: Option<&'a Path>) -> Result<&'a Path> {
    socket
        .or(cli.agent.as_deref())
        .ok_or_else(|| Error::InvalidInput {
            reason: "which agent? pass --socket PATH (or --agent PATH)".into(),
        })
}

fn serve(
    cli: &Cli,
    socket: &Path,
    cache_size: usize,
    max_in_flight: usize,
    metrics: Option<&str>,
    out: &Out,
) -> Result<()> {
    let metrics_at = metrics
        .map(vmcrypt_agent::metrics::parse_addr)
        .transpose()?;
    // No core dumps, no ptrace by other processes of this user: the agent holds keys for as
    // long as the host runs.
    vmcrypt_agent::harden_process()?;
    let cache = KeyCache::new(check_capacity(cache_size)?)?;
    // Providers come from the configuration file, read again for each provider not yet
    // opened: a provider added while the agent runs (the rescue target) is found.
    let cfg_path = Config::locate(cli.config.as_deref())?;
    // The audit log: --audit-log, $VMCRYPT_AUDIT_LOG, or the file's audit_log, opened now.
    let audit = super::audit_log(cli, Some(&Config::load(&cfg_path)?))?;
    let open = move |name: &str| -> Result<Arc<dyn KeyProvider>> {
        Ok(Arc::from(Config::load(&cfg_path)?.open_local(name)?))
    };
    let mut agent = Agent::new(cache, open).in_flight(max_in_flight);
    if let Some(log) = audit {
        agent = agent.audit(log);
    }
    let agent = Arc::new(agent);
    let _exporter = match metrics_at {
        Some(at) => {
            let a = agent.clone();
            let ex = vmcrypt_agent::metrics::Exporter::start(at, move || a.metrics_page())?;
            out.note(&format!(
                "vmcrypt agent: metrics on http://{}/metrics",
                ex.addr()
            ));
            Some(ex)
        }
        None => None,
    };
    // The handlers before the socket: a supervisor may signal as soon as it can connect, and
    // a signal that met the default action would kill the agent without zeroing its cache.
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, signalled.clone()).map_err(|e| Error::Unsupported {
            what: format!("installing the signal handler: {e}"),
        })?;
    }
    // Socket-activated (vmcrypt-agent.socket): systemd's socket, left as it is when the agent
    // stops; else one bound here, removed at the end.
    let (listener, shutdown) = match systemd::activated_listener(socket)? {
        Some(l) => {
            let s = Shutdown::new(&l, socket)?.keep_socket();
            (l, s)
        }
        None => {
            let l = vmcrypt_agent::bind(socket)?;
            let s = Shutdown::new(&l, socket)?;
            (l, s)
        }
    };
    {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            while !signalled.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            systemd::notify("STOPPING=1");
            shutdown.stop();
        });
    }
    out.note(&format!(
        "vmcrypt agent: serving on {} (pid {}, room for {} keys in locked memory)",
        socket.display(),
        std::process::id(),
        agent.cache().capacity()
    ));
    systemd::notify(&format!(
        "READY=1\nSTATUS=serving on {}, room for {} keys\nMAINPID={}",
        socket.display(),
        agent.cache().capacity(),
        std::process::id()
    ));
    vmcrypt_agent::serve(listener, agent, &shutdown)?;
    out.note("vmcrypt agent: stopped; the key cache was zeroed");
    Ok(())
}

fn status(socket: &Path, out: &Out) -> Result<()> {
    let s = AgentClient::new(socket).status()?;
    let mut human = format!(
        "agent on {} (pid {}): {} of {} keys cached; process dumpable: {}",
        socket.display(),
        s.pid,
        s.cached.len(),
        s.capacity,
        if s.dumpable {
            "YES (keys could reach a core dump)"
        } else {
            "no"
        }
    );
    for (p, k) in &s.cached {
        human.push_str(&format!("\n  {p}  {k}"));
    }
    let cached: Vec<_> = s
        .cached
        .iter()
        .map(|(p, k)| json!({"provider": p, "key_id": k}))
        .collect();
    out.result(
        &human,
        json!({"agent": {"socket": socket, "pid": s.pid, "capacity": s.capacity, "dumpable": s.dumpable, "cached": cached}}),
    );
    Ok(())
}
