//! Where a server listens: a Unix socket (the default for a host's own QEMU) or TCP (storage
//! migration, remote tools), and the connected streams of either.
//!
//! A Unix socket is created mode 0600 before anyone can reach it: it is bound inside a fresh
//! private directory beside the target, its mode set, then renamed into place. Whoever can
//! connect reads and writes the disk in plaintext, so the owner decides who else may (chown
//! or chmod the socket). TCP listens on loopback unless an address is given, and has no TLS
//! yet: any local user can connect to a loopback port, so a Unix socket is the safe choice.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An address to listen on, parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path (anything with a `/`, or ending in `.sock`).
    Unix(PathBuf),
    /// A TCP address: `PORT` alone means loopback (127.0.0.1).
    Tcp(SocketAddr),
}

impl Endpoint {
    /// Parses `SOCKET_PATH`, `PORT` or `HOST:PORT`.
    ///
    /// # Errors
    /// A message for a port that is not a number or a host that does not resolve.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if s.contains('/') || s.ends_with(".sock") {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        if !s.contains(':') {
            return Err(format!(
                "{s:?} is neither a socket path (it has no '/') nor PORT nor HOST:PORT"
            ));
        }
        let mut addrs = s
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {s:?}: {e}"))?;
        addrs
            .next()
            .map(Endpoint::Tcp)
            .ok_or_else(|| format!("{s:?} resolves to no address"))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// A bound listener. A Unix socket's path is removed when it is dropped.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket and its path.
    Unix(UnixListener, PathBuf),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `at`. A stale Unix socket (nobody answers on it) is replaced; a live one, or any
    /// other file, is an error.
    ///
    /// # Errors
    /// The bind's I/O error, or `AddrInUse` for a socket that is being served.
    pub fn bind(at: &Endpoint) -> io::Result<Listener> {
        match at {
            Endpoint::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a)?)),
            Endpoint::Unix(p) => bind_private(p).map(|l| Listener::Unix(l, p.clone())),
        }
    }

    /// The address actually bound (a TCP port 0 becomes the port chosen).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(_, p) => Endpoint::Unix(p.clone()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => Endpoint::Tcp(a),
                Err(_) => Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
            },
        }
    }

    /// Polling accept: `Ok(None)` when nobody is waiting (the listener is non-blocking, so
    /// the accept loop can watch for a stop request).
    pub(crate) fn accept(&self) -> io::Result<Option<(Stream, String)>> {
        let got = match self {
            Listener::Unix(l, p) => l
                .accept()
                .map(|(s, _)| (Stream::Unix(s), format!("unix:{}", p.display()))),
            Listener::Tcp(l) => l.accept().map(|(s, a)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), a.to_string())
            }),
        };
        match got {
            Ok((s, peer)) => {
                s.set_nonblocking(false)?;
                Ok(Some((s, peer)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Unix(l, _) => l.set_nonblocking(true),
            Listener::Tcp(l) => l.set_nonblocking(true),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds a Unix socket at `path` with mode 0600 from its first instant.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is being served by another process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let private = tempfile::Builder::new()
        .prefix(".vmcrypt-sock-")
        .tempdir_in(&parent)?;
    let staged = private.path().join("s");
    let listener = UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

/// A connected client, over either transport.
#[derive(Debug)]
pub enum Stream {
    /// Over a Unix socket.
    Unix(UnixStream),
    /// Over TCP.
    Tcp(TcpStream),
}

impl Stream {
    /// A second handle on the same connection (one reads, the other writes).
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(on),
            Stream::Tcp(s) => s.set_nonblocking(on),
        }
    }

    /// Ends the connection both ways (a blocked reader or writer on it returns at once).
    pub(crate) fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write_vectored(bufs),
            Stream::Tcp(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("/run/x.sock"),
            Ok(Endpoint::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("nbd.sock"),
            Ok(Endpoint::Unix("nbd.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("10809"),
            Ok(Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 10809))))
        );
        assert_eq!(
            Endpoint::parse("0.0.0.0:10809"),
            Ok(Endpoint::Tcp(SocketAddr::from(([0, 0, 0, 0], 10809))))
        );
        assert!(Endpoint::parse("disk").is_err());
        assert!(Endpoint::parse("host:port").is_err());
    }

    #[test]
    fn a_unix_socket_is_private_and_a_live_one_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nbd.sock");
        let first = Listener::bind(&Endpoint::Unix(path.clone())).expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Listener::bind(&Endpoint::Unix(path.clone()));
        assert_eq!(
            second.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse)
        );
        // No private directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("nbd.sock")]);
        drop(first);
        assert!(!path.exists(), "the socket goes with its listener");
        // A stale socket file (its server gone without cleaning up) is replaced.
        let stale = UnixListener::bind(&path).expect("stale");
        drop(stale);
        Listener::bind(&Endpoint::Unix(path.clone())).expect("rebind over a stale socket");
        std::fs::write(dir.path().join("plain"), b"x").expect("write");
        assert!(Listener::bind(&Endpoint::Unix(dir.path().join("plain"))).is_err());
    }
}
