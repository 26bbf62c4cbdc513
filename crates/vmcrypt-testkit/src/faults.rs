//! Misbehaving peers on 127.0.0.1 for failover and robustness tests. Each runs on its own
//! threads until dropped; connections it holds are closed when the process exits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// An address where nothing listens: connections are refused.
pub fn refused() -> String {
    format!("127.0.0.1:{}", crate::pykmip::free_port())
}

/// What a fake peer does with each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Accept and never send a byte (nor read one).
    Hang,
    /// Accept and close at once.
    Close,
    /// Complete TLS (with the certificate given), read the request, answer bytes that are not
    /// TTLV.
    Garbage,
    /// Complete TLS, read the request, send the start of a valid-looking message, then close.
    Truncated,
    /// Complete TLS, read the request, claim a response of about 4 GiB, then wait.
    HugeLength,
    /// Complete TLS, read the request, send a plausible response one byte per second.
    Trickle,
    /// Complete TLS and read the request, then never answer.
    TlsHang,
}

/// A running fake peer.
pub struct Peer {
    pub addr: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A peer without TLS (only `Hang` and `Close` make sense).
pub fn tcp(behavior: Behavior) -> Peer {
    spawn(behavior, None)
}

/// A TLS peer presenting `cert` / `key` (e.g. the rogue server certificate for an untrusted
/// server, or the real one for a bad-KMIP peer).
pub fn tls(behavior: Behavior, cert: &Path, key: &Path) -> Peer {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("server cert")
        .collect::<Result<_, _>>()
        .expect("server cert PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("server key PEM");
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
    spawn(behavior, Some(Arc::new(config)))
}

fn spawn(behavior: Behavior, tls: Option<Arc<ServerConfig>>) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flag = stop.clone();
    let count = accepted.clone();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((sock, _)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.set_nonblocking(false);
                    match (behavior, &tls) {
                        (Behavior::Hang, _) => held.push(sock),
                        (Behavior::Close, _) => drop(sock),
                        (_, Some(cfg)) => {
                            let cfg = cfg.clone();
                            let flag = flag.clone();
                            std::thread::spawn(move || serve_tls(sock, cfg, behavior, &flag));
                        }
                        (_, None) => drop(sock),
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Peer {
        addr,
        accepted,
        stop,
        thread: Some(thread),
    }
}

fn serve_tls(sock: TcpStream, cfg: Arc<ServerConfig>, behavior: Behavior, stop: &AtomicBool) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = ServerConnection::new(cfg) else {
        return;
    };
    let mut s = StreamOwned::new(conn, sock);
    // Read one framed request (header, then the body it announces).
    let mut header = [0u8; 8];
    if s.read_exact(&mut header).is_err() {
        return;
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut body = vec![0u8; len.min(1 << 20)];
    if s.read_exact(&mut body).is_err() {
        return;
    }
    let wait = |secs: u64| {
        for _ in 0..secs * 10 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    match behavior {
        Behavior::Garbage => {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            let _ = s.flush();
        }
        Behavior::Truncated => {
            // A Response Message header announcing 64 bytes, then only 16 of them.
            let _ = s.write_all(&[0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 64]);
            let _ = s.write_all(&[
                0x42, 0x00, 0x7A, 0x01, 0, 0, 0, 0x38, 0x42, 0x00, 0x69, 0x01, 0, 0, 0, 0x20,
            ]);
            let _ = s.flush();
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        Behavior::HugeLength => {
            let _ = s.write_all(&[0x42, 0x00, 0x7B, 0x01, 0xFF, 0xFF, 0xFF, 0xF8]);
            let _ = s.flush();
            wait(30);
        }
        Behavior::Trickle => {
            let mut msg = vec![0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 0x40];
            msg.resize(72, 0);
            for b in msg {
                if stop.load(Ordering::Relaxed)
                    || s.write_all(&[b]).and_then(|()| s.flush()).is_err()
                {
                    return;
                }
                wait(1);
            }
        }
        Behavior::TlsHang => wait(60),
        Behavior::Hang | Behavior::Close => {}
    }
}

/// A TCP proxy to `target` that counts the connections it accepts: for tests that must see
/// how many connections a client opens (connection reuse).
pub fn proxy(target: &str) -> Peer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (flag, count, target) = (stop.clone(), accepted.clone(), target.to_string());
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((client, _)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    for (mut from, mut to) in [
                        (
                            client.try_clone().expect("clone"),
                            server.try_clone().expect("clone"),
                        ),
                        (server, client),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        });
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Peer {
        addr,
        accepted,
        stop,
        thread: Some(thread),
    }
}
