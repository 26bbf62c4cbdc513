//! Transport: KMIP over mutually authenticated TLS (rustls with the ring provider), with a
//! deadline on every phase: TCP connect, TLS handshake, and each whole response (a peer that
//! trickles one byte a second is cut off when the response deadline passes, not per read).
//!
//! The [`Transport`] trait keeps the TLS stack replaceable: rustls has no CBC suites, so a KMS
//! that only allows the KMIP 1.x profile's RSA-CBC suites would need another backend.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::ttlv::{Limits, message_len};

/// Sends one KMIP request and returns the raw response message.
pub trait Transport: Send {
    /// One request, one response, within the transport's response deadline.
    ///
    /// # Errors
    /// Timeouts, I/O and TLS failures, and invalid framing.
    fn round_trip(&mut self, request: &[u8]) -> Result<Zeroizing<Vec<u8>>>;

    /// host:port of the peer, for messages.
    fn server(&self) -> &str;
}

/// Deadlines for one server.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake, and each whole response.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            response: Duration::from_secs(60),
        }
    }
}

/// Builds the TLS client configuration: trust only `ca`, authenticate with `cert` + `key`
/// (PEM; ECDSA or RSA; PKCS#8, SEC1 or PKCS#1), TLS 1.2 and 1.3.
///
/// # Errors
/// [`Error::Config`] naming the file that cannot be used.
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ClientConfig>> {
    let cfg_err = |what: String| Error::Config(what);
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca, "CA file")? {
        roots
            .add(c)
            .map_err(|e| cfg_err(format!("CA file {}: {e}", ca.display())))?;
    }
    let chain = load_certs(cert, "client certificate file")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| cfg_err(format!("client key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| cfg_err(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            cfg_err(format!(
                "client certificate and key do not fit together: {e}"
            ))
        })?;
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let err = |e: &dyn std::fmt::Display| Error::Config(format!("{what} {}: {e}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| err(&e))?;
    if certs.is_empty() {
        return Err(err(&"holds no certificate"));
    }
    Ok(certs)
}

/// A TLS connection to one KMIP server.
pub struct TlsTransport {
    server: String,
    tls: ClientConnection,
    sock: TcpStream,
    timeouts: Timeouts,
    limits: Limits,
}

impl TlsTransport {
    /// Connects to `server` (host:port) and completes the TLS handshake. The certificate must
    /// be valid for `server_name` (a DNS name or an IP address).
    ///
    /// # Errors
    /// [`Error::Connect`], [`Error::Timeout`], [`Error::Tls`], [`Error::Io`], [`Error::Config`].
    pub fn connect(
        server: &str,
        server_name: &str,
        config: Arc<ClientConfig>,
        timeouts: Timeouts,
    ) -> Result<Self> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| Error::Config(format!("invalid TLS server name {server_name:?}")))?;
        let addrs: Vec<SocketAddr> = server
            .to_socket_addrs()
            .map_err(|e| Error::Connect {
                server: server.to_string(),
                source: e,
            })?
            .collect();
        let mut last = None;
        let mut sock = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeouts.connect) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = Some(Error::Timeout {
                        server: server.to_string(),
                        phase: "connect",
                        timeout: timeouts.connect,
                    })
                }
                Err(e) => {
                    last = Some(Error::Connect {
                        server: server.to_string(),
                        source: e,
                    })
                }
            }
        }
        let Some(sock) = sock else {
            return Err(last.unwrap_or_else(|| Error::Connect {
                server: server.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            }));
        };
        let _ = sock.set_nodelay(true);
        let tls = ClientConnection::new(config, name).map_err(|e| Error::Tls {
            server: server.to_string(),
            source: e,
        })?;
        let mut t = TlsTransport {
            server: server.to_string(),
            tls,
            sock,
            timeouts,
            limits: Limits::default(),
        };
        t.handshake()?;
        Ok(t)
    }

    fn handshake(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeouts.response;
        while self.tls.is_handshaking() {
            self.arm(deadline, "TLS handshake")?;
            if let Err(e) = self.tls.complete_io(&mut self.sock) {
                return Err(self.map_io(e, "TLS handshake", self.timeouts.response));
            }
        }
        Ok(())
    }

    /// Sets the socket timeouts to what is left before `deadline`.
    fn arm(&self, deadline: Instant, phase: &'static str) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                server: self.server.clone(),
                phase,
                timeout: self.timeouts.response,
            });
        }
        let io = |e| Error::Io {
            server: self.server.clone(),
            phase,
            source: e,
        };
        self.sock.set_read_timeout(Some(left)).map_err(io)?;
        self.sock.set_write_timeout(Some(left)).map_err(io)?;
        Ok(())
    }

    fn map_io(&self, e: std::io::Error, phase: &'static str, timeout: Duration) -> Error {
        use std::io::ErrorKind as K;
        if matches!(e.kind(), K::WouldBlock | K::TimedOut) {
            return Error::Timeout {
                server: self.server.clone(),
                phase,
                timeout,
            };
        }
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Error::Tls {
                server: self.server.clone(),
                source: tls.clone(),
            };
        }
        Error::Io {
            server: self.server.clone(),
            phase,
            source: e,
        }
    }

    /// Reads exactly `buf.len()` plaintext bytes before `deadline`.
    fn read_exact_by(&mut self, buf: &mut [u8], deadline: Instant) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            self.arm(deadline, "response")?;
            let mut stream = rustls::Stream::new(&mut self.tls, &mut self.sock);
            match stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(Error::Io {
                        server: self.server.clone(),
                        phase: "response",
                        source: std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "the server closed the connection",
                        ),
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.map_io(e, "response", self.timeouts.response)),
            }
        }
        Ok(())
    }
}

impl Transport for TlsTransport {
    fn round_trip(&mut self, request: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let deadline = Instant::now() + self.timeouts.response;
        self.arm(deadline, "request")?;
        {
            let mut stream = rustls::Stream::new(&mut self.tls, &mut self.sock);
            if let Err(e) = stream.write_all(request).and_then(|()| stream.flush()) {
                return Err(self.map_io(e, "request", self.timeouts.response));
            }
        }
        let mut header = [0u8; 8];
        self.read_exact_by(&mut header, deadline)?;
        let total = message_len(&header, self.limits).map_err(|e| Error::Ttlv {
            server: self.server.clone(),
            source: e,
        })?;
        // `total` is bounded by the message limit, checked before this allocation.
        let mut msg = Zeroizing::new(vec![0u8; total]);
        msg[..8].copy_from_slice(&header);
        self.read_exact_by(&mut msg[8..], deadline)?;
        Ok(msg)
    }

    fn server(&self) -> &str {
        &self.server
    }
}

impl Drop for TlsTransport {
    fn drop(&mut self) {
        // Best effort close_notify; never block on a dead peer.
        self.tls.send_close_notify();
        let _ = self
            .sock
            .set_write_timeout(Some(Duration::from_millis(100)));
        let _ = self.tls.write_tls(&mut self.sock);
    }
}
