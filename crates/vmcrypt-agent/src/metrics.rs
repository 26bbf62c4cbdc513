//! Metrics for Prometheus: the agent's key cache and key servers, and (through the same
//! exporter) a serving process's I/O counters, in the text exposition format (version 0.0.4)
//! on `GET /metrics` of a small HTTP/1.x listener, as the exporters operators already scrape.
//!
//! The exporter answers one request per connection and closes it: a request line and headers
//! of at most 8 KiB, read within 5 s; anything else gets 400, 404 or 405. Metrics hold names and
//! counts only, never key ids or keys: a metrics port may be reachable by more people than the
//! agent's socket.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use vmcrypt_core::{Error, Result};

/// Upper bounds of the fetch latency histogram, in seconds: from a local KMS (ms) to a chain
/// of hung servers (minutes).
pub const FETCH_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// A histogram of fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; FETCH_BUCKETS.len()],
    count: AtomicU64,
    /// The sum, in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in FETCH_BUCKETS.iter().enumerate() {
            if s <= *le {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// The agent's counters, shared by every request.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Fetches the cache answered.
    pub hits: AtomicU64,
    /// Fetches that went to the provider (successful or not).
    pub misses: AtomicU64,
    /// Fetches from the provider that failed.
    pub fetch_errors: AtomicU64,
    /// Keys created.
    pub creates: AtomicU64,
    /// Creates that failed.
    pub create_errors: AtomicU64,
    /// Provider requests under way now (fetches on a miss, creates).
    pub in_flight: AtomicI64,
    /// Latency of fetches from a provider.
    pub fetch_seconds: Histogram,
}

/// Builds a page of the text format.
#[derive(Debug, Default)]
pub struct Page {
    text: String,
}

/// The samples of one family.
#[derive(Debug)]
pub struct Series<'a> {
    page: &'a mut Page,
    name: String,
}

impl Series<'_> {
    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, l: &[(&str, &str)], v: impl std::fmt::Display) -> &mut Self {
        let _ = writeln!(self.page.text, "{}{} {v}", self.name, labels(l));
        self
    }
}

/// A label value, escaped as the format says (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &[(&str, &str)]) -> String {
    if l.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Page {
    /// A metric family: its HELP and TYPE lines, then [`Series::sample`] for each label set.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> Series<'_> {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        Series {
            page: self,
            name: name.to_string(),
        }
    }

    /// A counter (its name ends in `_total`) of one sample without labels.
    pub fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.family(name, "counter", help).sample(&[], v);
    }

    /// A gauge of one sample without labels.
    pub fn gauge(&mut self, name: &str, help: &str, v: i64) {
        self.family(name, "gauge", help).sample(&[], v);
    }

    /// A histogram: cumulative buckets, `+Inf`, sum and count.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        for (i, le) in FETCH_BUCKETS.iter().enumerate() {
            let n = h.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(self.text, "{name}_sum {sum}");
        let _ = writeln!(self.text, "{name}_count {count}");
    }

    /// The page.
    pub fn finish(self) -> String {
        self.text
    }
}

/// Where `--metrics` listens: `PORT` (127.0.0.1) or `HOST:PORT`.
///
/// # Errors
/// [`Error::InvalidInput`] for anything else.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        Error::input(format!(
            "--metrics {s:?}: give PORT (on 127.0.0.1) or HOST:PORT, such as 127.0.0.1:9477"
        ))
    })
}

/// A running exporter; stops (and closes its port) on drop.
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Listens on `addr` and answers `GET /metrics` with `render()`, on a thread of its own.
    ///
    /// # Errors
    /// [`Error::Io`] when the port cannot be bound.
    pub fn start(
        addr: SocketAddr,
        render: impl Fn() -> String + Send + 'static,
    ) -> Result<Exporter> {
        let listener = TcpListener::bind(addr).map_err(Error::io("listen on", addr.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("listen on", addr.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("listen on", addr.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vmcrypt-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => answer(s, &render),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => {
                            tracing::warn!("metrics: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
            .map_err(|e| Error::Unsupported {
                what: format!("starting the metrics thread: {e}"),
            })?;
        Ok(Exporter {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen, for `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The largest request head read.
const MAX_HEAD: usize = 8192;

fn answer(mut s: TcpStream, render: &dyn Fn() -> String) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let first = line.lines().next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (status, kind, body) = match (method, target, version) {
        _ if head.len() > MAX_HEAD => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "too large\n".to_string(),
        ),
        (Some(m), Some(t), Some(v)) if v.starts_with("HTTP/1.") => {
            let path = t.split('?').next().unwrap_or(t);
            match (m, path) {
                ("GET" | "HEAD", "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(),
                ),
                ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "see /metrics\n".into()),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET /metrics\n".into(),
                ),
            }
        }
        _ => ("400 Bad Request", "text/plain", "GET /metrics\n".into()),
    };
    let body = if method == Some("HEAD") {
        String::new()
    } else {
        body
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(request.as_bytes()).expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    }

    #[test]
    fn the_page_is_the_text_format_and_the_exporter_serves_only_it() {
        let h = Arc::new(AgentMetrics::default());
        h.fetch_seconds.observe(Duration::from_millis(3));
        h.fetch_seconds.observe(Duration::from_secs(70));
        let m = h.clone();
        let ex = Exporter::start("127.0.0.1:0".parse().expect("addr"), move || {
            let mut p = Page::default();
            p.family("t_total", "counter", "a test")
                .sample(&[("server", "a\"b")], 3);
            p.histogram("t_seconds", "latency", &m.fetch_seconds);
            p.finish()
        })
        .expect("start");
        let ok = get(ex.addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).expect("body");
        assert!(
            body.contains("# TYPE t_total counter\nt_total{server=\"a\\\"b\"} 3\n"),
            "{body}"
        );
        assert!(
            body.contains("t_seconds_bucket{le=\"0.005\"} 1\n"),
            "{body}"
        );
        assert!(body.contains("t_seconds_bucket{le=\"60\"} 1\n"), "{body}");
        assert!(body.contains("t_seconds_bucket{le=\"300\"} 2\n"), "{body}");
        assert!(body.contains("t_seconds_bucket{le=\"+Inf\"} 2\n"), "{body}");
        assert!(body.contains("t_seconds_count 2\n"), "{body}");
        assert!(get(ex.addr(), "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(ex.addr(), "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(ex.addr(), "garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(8500));
        assert!(get(ex.addr(), &huge).starts_with("HTTP/1.1 431"));
        let head = get(ex.addr(), "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
        let addr = ex.addr();
        drop(ex);
        assert!(
            TcpStream::connect(addr).is_err(),
            "the port is closed after drop"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("9477").expect("port").to_string(),
            "127.0.0.1:9477"
        );
        assert_eq!(
            parse_addr("0.0.0.0:9").expect("addr").to_string(),
            "0.0.0.0:9"
        );
        assert!(parse_addr("localhost").is_err());
    }
}
