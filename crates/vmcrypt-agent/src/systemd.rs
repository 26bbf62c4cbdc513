//! What a systemd service does for its manager: take the socket systemd listens on for it
//! (socket activation, so clients can connect before the agent has started and while it
//! restarts) and say when it is ready and when it stops (sd_notify(3), `Type=notify`).
//! Outside systemd both are no-ops: the variables are not set.

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;

use vmcrypt_core::{Error, Result};

/// The listening socket systemd passed for `path`, if it passed one; None when the process
/// was not socket-activated (then the caller binds `path` itself).
///
/// # Errors
/// [`Error::InvalidInput`] when systemd passed something other than one listening Unix stream
/// socket bound at `path`: a unit's `ListenStream=` and the command's `--socket` disagree.
pub fn activated_listener(path: &Path) -> Result<Option<UnixListener>> {
    let fds = vmcrypt_secmem::take_listen_fds().map_err(|e| Error::input(e.to_string()))?;
    let mut fds = fds.into_iter();
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.next().is_some() {
        return Err(Error::input(
            "systemd passed more than one socket; the agent listens on one (ListenStream= once)",
        ));
    }
    use rustix::net::sockopt;
    let stream = sockopt::socket_type(&fd).is_ok_and(|t| t == rustix::net::SocketType::STREAM);
    let listening = sockopt::socket_acceptconn(&fd).unwrap_or(false);
    if !stream || !listening {
        return Err(Error::input(
            "the socket systemd passed is not a listening stream socket (ListenStream= with Accept=no)",
        ));
    }
    let listener = UnixListener::from(fd);
    let bound = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    let want = std::path::absolute(path).map_err(Error::io("resolve", path))?;
    if bound.as_deref() != Some(want.as_path()) {
        return Err(Error::input(format!(
            "systemd passed a socket bound at {}, but --socket says {}: make the unit's ListenStream= and --socket the same path",
            bound
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "no path".into()),
            path.display()
        )));
    }
    Ok(Some(listener))
}

/// Tells the service manager `state` (`READY=1`, `STOPPING=1`, `STATUS=...`), when one
/// listens (`$NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace). A manager that
/// is gone is not an error of the service: it is logged.
pub fn notify(state: &str) {
    let Some(at) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = at.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            s.send_to_addr(state.as_bytes(), &addr)
        } else {
            s.send_to(state.as_bytes(), Path::new(&at))
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot notify the service manager ({state}): {e}");
    }
}
