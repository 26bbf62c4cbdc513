//! The agent's wire format on its Unix socket: length-prefixed binary frames, one request and
//! one response at a time per connection. Binary and hand-written rather than JSON so that key
//! bytes go straight from locked memory into a zeroized buffer, and so that parsing a hostile
//! frame is a few bounds checks (fuzzed by the `agent_proto` target).
//!
//! ```text
//! frame    = length:u32be body            (length <= MAX_REQUEST for requests)
//! request  = version:u8(=1) op:u8 fields
//!   op 1 Fetch   provider:str key_id:str
//!   op 2 Create  provider:str purpose:u8 (1 disk, 2 VM) uuid:str
//!   op 3 Status
//!   op 4 Forget  provider:str key_id:str   ("" = any: every key of a provider, or everything)
//! response = 0 payload | 1 kind:u8 provider:str message:str
//!   Fetch   kek:[u8; 32]
//!   Create  key_id:str kek:[u8; 32]
//!   Status  pid:u32 capacity:u32 dumpable:u8 count:u32 (provider:str key_id:str)*count
//!   Forget  count:u32
//! str      = length:u16be utf-8
//! ```

use std::io::{Read, Write};

use zeroize::Zeroizing;

use vmcrypt_core::provider::KeyPurpose;
use vmcrypt_core::secret::Kek;
use vmcrypt_core::{Error, Result};

/// Protocol version carried by every request.
pub const VERSION: u8 = 1;
/// Largest request body the agent reads.
pub const MAX_REQUEST: usize = 4096;
/// Largest response body a client reads.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A request to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The KEK with this id from this provider (cached, or fetched and cached).
    Fetch {
        /// Provider name.
        provider: String,
        /// Key id.
        key_id: String,
    },
    /// A new KEK from this provider (cached).
    Create {
        /// Provider name.
        provider: String,
        /// What the key is for.
        purpose: KeyPurpose,
    },
    /// What the agent holds (names only).
    Status,
    /// Drop cached keys (e.g. after a key was revoked on purpose): one key, every key of a
    /// provider (`key_id` empty), or everything (both empty).
    Forget {
        /// Provider name, or "" for any.
        provider: String,
        /// Key id, or "" for any.
        key_id: String,
    },
}

/// What a failed request reports; mirrors the library's error kinds that matter to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// The provider could not be reached (exit 3 in the CLI).
    KeyService = 1,
    /// The provider refused.
    KeyRefused = 2,
    /// The request was malformed or named an unknown provider.
    InvalidInput = 3,
    /// Anything else.
    Other = 4,
}

/// The agent's state, for `agent status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The agent's process id.
    pub pid: u32,
    /// How many KEKs the cache holds at most.
    pub capacity: u32,
    /// Whether the agent process is dumpable (it should not be).
    pub dumpable: bool,
    /// (provider, key id) of every cached KEK.
    pub cached: Vec<(String, String)>,
}

/// A response from the agent.
pub enum Response {
    /// A KEK.
    Key(Kek),
    /// A new KEK and its id.
    Created(String, Kek),
    /// The agent's state.
    Status(Status),
    /// How many cached keys were forgotten.
    Forgotten(u32),
    /// The request failed.
    Failed {
        /// Which kind of failure.
        kind: FailKind,
        /// The provider concerned ("" if none).
        provider: String,
        /// What happened (no secrets).
        message: String,
    },
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Key(_) => f.write_str("Key(..)"),
            Response::Created(id, _) => write!(f, "Created({id:?}, ..)"),
            Response::Status(s) => write!(f, "Status({s:?})"),
            Response::Forgotten(n) => write!(f, "Forgotten({n})"),
            Response::Failed {
                kind,
                provider,
                message,
            } => write!(f, "Failed({kind:?}, {provider:?}, {message:?})"),
        }
    }
}

fn bad(what: &str) -> Error {
    Error::input(format!("malformed agent message: {what}"))
}

/// Appends to a zeroized buffer.
struct Out(Zeroizing<Vec<u8>>);

impl Out {
    fn new() -> Self {
        Out(Zeroizing::new(Vec::with_capacity(128)))
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn str(&mut self, s: &str) {
        // Longer strings are cut (at a char boundary): messages only; names are checked
        // shorter than this when they are made.
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.extend_from_slice(&(end as u16).to_be_bytes());
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

/// Reads from a body, refusing to read past its end.
struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad(&format!("{what} cut short")));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str(&mut self, what: &str) -> Result<String> {
        let l = self.take(2, what)?;
        let n = u16::from_be_bytes([l[0], l[1]]) as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(&format!("{what} is not UTF-8")))
    }
    fn end(&self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

impl Request {
    /// The body of this request.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut o = Out::new();
        o.u8(VERSION);
        match self {
            Request::Fetch { provider, key_id } => {
                o.u8(1);
                o.str(provider);
                o.str(key_id);
            }
            Request::Create { provider, purpose } => {
                o.u8(2);
                o.str(provider);
                let (kind, uuid) = match purpose {
                    KeyPurpose::Disk(u) => (1, u),
                    KeyPurpose::Vm(u) => (2, u),
                };
                o.u8(kind);
                o.str(uuid);
            }
            Request::Status => o.u8(3),
            Request::Forget { provider, key_id } => {
                o.u8(4);
                o.str(provider);
                o.str(key_id);
            }
        }
        o.0
    }

    /// Parses a request body.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for anything malformed.
    pub fn decode(body: &[u8]) -> Result<Request> {
        let mut i = In(body);
        let v = i.u8("version")?;
        if v != VERSION {
            return Err(bad(&format!(
                "protocol version {v}, this agent speaks {VERSION}"
            )));
        }
        let r = match i.u8("operation")? {
            1 => Request::Fetch {
                provider: i.str("provider")?,
                key_id: i.str("key id")?,
            },
            2 => {
                let provider = i.str("provider")?;
                let kind = i.u8("purpose")?;
                let uuid = i.str("uuid")?;
                let purpose = match kind {
                    1 => KeyPurpose::Disk(uuid),
                    2 => KeyPurpose::Vm(uuid),
                    k => return Err(bad(&format!("unknown key purpose {k}"))),
                };
                Request::Create { provider, purpose }
            }
            3 => Request::Status,
            4 => Request::Forget {
                provider: i.str("provider")?,
                key_id: i.str("key id")?,
            },
            op => return Err(bad(&format!("unknown operation {op}"))),
        };
        i.end()?;
        Ok(r)
    }
}

impl Response {
    /// The body of this response (zeroized on drop: it may hold a key).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut o = Out::new();
        match self {
            Response::Key(k) => {
                o.u8(0);
                o.bytes(k.expose_secret());
            }
            Response::Created(id, k) => {
                o.u8(0);
                o.str(id);
                o.bytes(k.expose_secret());
            }
            Response::Status(s) => {
                o.u8(0);
                o.u32(s.pid);
                o.u32(s.capacity);
                o.u8(u8::from(s.dumpable));
                o.u32(s.cached.len() as u32);
                for (p, k) in &s.cached {
                    o.str(p);
                    o.str(k);
                }
            }
            Response::Forgotten(n) => {
                o.u8(0);
                o.u32(*n);
            }
            Response::Failed {
                kind,
                provider,
                message,
            } => {
                o.u8(1);
                o.u8(*kind as u8);
                o.str(provider);
                o.str(message);
            }
        }
        o.0
    }

    /// Parses the response to `req`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for anything malformed.
    pub fn decode(req: &Request, body: &[u8]) -> Result<Response> {
        let mut i = In(body);
        let r = match i.u8("status")? {
            0 => match req {
                Request::Fetch { .. } => Response::Key(Kek::from_slice(i.take(32, "key")?)?),
                Request::Create { .. } => {
                    let id = i.str("key id")?;
                    Response::Created(id, Kek::from_slice(i.take(32, "key")?)?)
                }
                Request::Forget { .. } => Response::Forgotten(i.u32("count")?),
                Request::Status => {
                    let pid = i.u32("pid")?;
                    let capacity = i.u32("capacity")?;
                    let dumpable = match i.u8("dumpable")? {
                        0 => false,
                        1 => true,
                        d => return Err(bad(&format!("dumpable flag {d}"))),
                    };
                    let n = i.u32("count")? as usize;
                    let mut cached = Vec::with_capacity(n.min(4096));
                    for _ in 0..n {
                        cached.push((i.str("provider")?, i.str("key id")?));
                    }
                    Response::Status(Status {
                        pid,
                        capacity,
                        dumpable,
                        cached,
                    })
                }
            },
            1 => {
                let kind = match i.u8("kind")? {
                    1 => FailKind::KeyService,
                    2 => FailKind::KeyRefused,
                    3 => FailKind::InvalidInput,
                    4 => FailKind::Other,
                    k => return Err(bad(&format!("unknown failure kind {k}"))),
                };
                Response::Failed {
                    kind,
                    provider: i.str("provider")?,
                    message: i.str("message")?,
                }
            }
            s => return Err(bad(&format!("unknown status {s}"))),
        };
        i.end()?;
        Ok(r)
    }

    /// The failure for a library error.
    pub fn failed(e: &Error) -> Response {
        let (kind, provider) = match e {
            Error::KeyService { provider, .. } => (FailKind::KeyService, provider.clone()),
            Error::KeyRefused { provider, .. } => (FailKind::KeyRefused, provider.clone()),
            e if e.kind() == vmcrypt_core::ErrorKind::InvalidInput => {
                (FailKind::InvalidInput, String::new())
            }
            _ => (FailKind::Other, String::new()),
        };
        let message = match e {
            // The reason with its causes: the client has no other way to see them.
            Error::KeyService { reason, .. } | Error::KeyRefused { reason, .. } => {
                std::iter::once(reason.clone())
                    .chain(vmcrypt_core::error_causes(e))
                    .collect::<Vec<_>>()
                    .join(": ")
            }
            other => other.to_string(),
        };
        Response::Failed {
            kind,
            provider,
            message,
        }
    }
}

/// Writes one frame.
///
/// # Errors
/// I/O errors, as `std::io::Error`.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame)?;
    w.flush()
}

/// What reading a frame gave.
#[derive(Debug)]
pub enum Frame {
    /// A body.
    Body(Zeroizing<Vec<u8>>),
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// The peer announced more than `max` bytes (the body was not read).
    TooLarge(u64),
}

/// Reads one frame of at most `max` bytes.
///
/// # Errors
/// I/O errors (a timeout, a connection cut inside a frame).
pub fn read_frame(r: &mut impl Read, max: usize) -> std::io::Result<Frame> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(Frame::Closed),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Ok(Frame::TooLarge(n as u64));
    }
    let mut body = Zeroizing::new(vec![0u8; n]);
    r.read_exact(&mut body)?;
    Ok(Frame::Body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Fetch {
                provider: "kms".into(),
                key_id: "42".into(),
            },
            Request::Create {
                provider: "native".into(),
                purpose: KeyPurpose::Vm("u-1".into()),
            },
            Request::Create {
                provider: "native".into(),
                purpose: KeyPurpose::Disk("u-2".into()),
            },
            Request::Status,
            Request::Forget {
                provider: "kms".into(),
                key_id: String::new(),
            },
        ] {
            assert_eq!(Request::decode(&r.encode()).expect("decodes"), r);
        }
    }

    #[test]
    fn responses_round_trip() {
        let fetch = Request::Fetch {
            provider: "p".into(),
            key_id: "k".into(),
        };
        let k = Kek::init_with_mut(|b| b.fill(9));
        match Response::decode(&fetch, &Response::Key(k).encode()).expect("decodes") {
            Response::Key(k) => assert_eq!(k.expose_secret(), &[9u8; 32]),
            other => panic!("{other:?}"),
        }
        let s = Status {
            pid: 7,
            capacity: 128,
            dumpable: false,
            cached: vec![("p".into(), "k".into())],
        };
        match Response::decode(&Request::Status, &Response::Status(s.clone()).encode()) {
            Ok(Response::Status(got)) => assert_eq!(got, s),
            other => panic!("{other:?}"),
        }
        let f = Response::failed(&Error::key_service("p", "all servers down"));
        match Response::decode(&fetch, &f.encode()) {
            Ok(Response::Failed {
                kind: FailKind::KeyService,
                provider,
                message,
            }) => assert_eq!(
                (provider.as_str(), message.as_str()),
                ("p", "all servers down")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let r = Request::Create {
            provider: "native".into(),
            purpose: KeyPurpose::Vm("u".into()),
        }
        .encode();
        for cut in 0..r.len() {
            assert!(Request::decode(&r[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = r.to_vec();
        long.push(0);
        assert!(Request::decode(&long).is_err());
        for bad in [
            &[2u8, 1][..],
            &[1, 9],
            &[1, 2, 0, 0, 7, 0, 0],
            &[1, 1, 0, 2, 0xff, 0xfe, 0, 0],
        ] {
            assert!(Request::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_refuse_oversize_and_report_clean_close() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").expect("write");
        let got = read_frame(&mut buf.as_slice(), 16).expect("read");
        assert!(matches!(got, Frame::Body(b) if b.as_slice() == b"abc"));
        assert!(matches!(
            read_frame(&mut buf.as_slice(), 2).expect("read"),
            Frame::TooLarge(3)
        ));
        assert!(matches!(
            read_frame(&mut (&[] as &[u8]), 16).expect("read"),
            Frame::Closed
        ));
        assert!(read_frame(&mut (&[0u8, 0][..]), 16).is_err());
        assert!(read_frame(&mut (&[0u8, 0, 0, 5, 1][..]), 16).is_err());
    }
}
