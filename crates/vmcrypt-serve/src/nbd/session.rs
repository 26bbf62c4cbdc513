//! One client's transmission phase: its reader (on the connection's own thread) decodes
//! requests and hands them to the shared workers, which do the disk I/O and send the replies
//! in whatever order they finish, each reply whole under the connection's writer lock.
//!
//! Bounds: a connection has at most [`MAX_IN_FLIGHT`] requests in flight (its reader waits
//! for replies to go out before reading more), and write data in flight comes from the
//! server-wide budget ([`crate::buffers`]). A client that stops reading its replies is cut
//! off when a reply cannot be sent within the stall deadline.

use std::io::{self, IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use vmcrypt_core::{EncryptedDisk, Error, Scratch};

use super::wire::{self, Command, Errno, Export, FLAG_FAST_ZERO, FLAG_NO_HOLE, Refusal, Request};
use crate::buffers::{Buffers, Payload};
use crate::deadline::{Got, read_within, skip_within};
use crate::endpoint::Stream;

/// Requests of one connection in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 128;

/// Bytes a worker reads and decrypts at a time for a read reply.
pub(crate) const READ_PIECE: usize = 1 << 20;

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// A connection as the workers see it.
#[derive(Debug)]
pub(crate) struct Conn {
    writer: Mutex<Stream>,
    /// A handle to end the connection with, without the writer lock.
    control: Stream,
    structured: bool,
    pub(crate) peer: String,
    in_flight: Mutex<usize>,
    changed: Condvar,
    broken: AtomicBool,
}

impl Conn {
    pub(crate) fn new(
        stream: &Stream,
        structured: bool,
        peer: String,
        stall: Duration,
    ) -> io::Result<Conn> {
        let writer = stream.try_clone()?;
        writer.set_write_timeout(Some(stall))?;
        Ok(Conn {
            writer: Mutex::new(writer),
            control: stream.try_clone()?,
            structured,
            peer,
            in_flight: Mutex::new(0),
            changed: Condvar::new(),
            broken: AtomicBool::new(false),
        })
    }

    /// Sends one whole reply (nothing of another reply in between).
    fn send(&self, reply: &[u8]) {
        self.with_writer(|w| write_reply(w, reply, &[]));
    }

    /// Runs `f` with the writer locked; a failure ends the connection.
    fn with_writer(&self, f: impl FnOnce(&mut Stream) -> io::Result<()>) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = f(&mut w) {
            drop(w);
            self.break_off(&format!("cannot send a reply: {e}"));
        }
    }

    /// Ends the connection: its reader wakes up and stops, its queued requests are dropped.
    pub(crate) fn break_off(&self, why: &str) {
        if !self.broken.swap(true, Ordering::Relaxed) {
            tracing::warn!(client = %self.peer, "connection closed: {why}");
        }
        self.control.shutdown();
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Waits for room under [`MAX_IN_FLIGHT`] and takes it.
    fn begin(&self) {
        let mut n = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *n >= MAX_IN_FLIGHT {
            n = self.changed.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n += 1;
    }

    /// A request is done (replied to, or dropped).
    pub(crate) fn end(&self) {
        let mut n = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        drop(n);
        self.changed.notify_all();
    }

    /// Waits until every request of this connection is done.
    fn drain(&self) {
        let mut n = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *n > 0 {
            n = self.changed.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The reply to a request that failed, in the form the client negotiated.
    fn send_error(&self, cookie: u64, errno: Errno, message: &str) {
        if self.structured {
            self.send(&wire::error_chunk(cookie, errno, message));
        } else {
            self.send(&wire::simple_reply(cookie, Some(errno)));
        }
    }
}

/// Writes a reply's header and data, in one system call when the socket takes it all.
fn write_reply(w: &mut Stream, mut head: &[u8], mut data: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !data.is_empty() {
        let n = if head.is_empty() {
            w.write(data)?
        } else {
            w.write_vectored(&[IoSlice::new(head), IoSlice::new(data)])?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n >= head.len() {
            data = &data[n - head.len()..];
            head = &[];
        } else {
            head = &head[n..];
        }
    }
    Ok(())
}

/// A decoded request on its way to a worker.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) conn: Arc<Conn>,
    req: Request,
    payload: Option<Payload>,
}

/// What a session needs of the server.
pub(crate) struct Ctx<'a> {
    pub(crate) export: Export,
    pub(crate) stall: Duration,
    pub(crate) stop: &'a AtomicBool,
    pub(crate) buffers: &'a Arc<Buffers>,
    pub(crate) submit: &'a (dyn Fn(Task) + Sync),
}

/// Reads requests until the client disconnects, breaks the protocol or stalls, or the server
/// stops; then waits for the replies of what it read.
pub(crate) fn read_requests(mut stream: Stream, conn: &Arc<Conn>, ctx: &Ctx<'_>) {
    let why = loop {
        let mut h = [0u8; wire::REQUEST_LEN];
        match read_within(&mut stream, &mut h, true, ctx.stall, ctx.stop) {
            Ok(Got::All) => {}
            Ok(Got::Closed) => break None,
            Ok(Got::Stopping) => break None,
            Err(e) => break Some(e.to_string()),
        }
        if conn.is_broken() {
            break None;
        }
        let req = match wire::decode_request(&h, &ctx.export) {
            Ok(r) => r,
            Err(Refusal::Close(why)) => break Some(why.to_string()),
            Err(Refusal::Reply {
                cookie,
                errno,
                discard,
            }) => {
                if let Err(e) = skip_within(&mut stream, u64::from(discard), ctx.stall, ctx.stop) {
                    break Some(e.to_string());
                }
                conn.send_error(cookie, errno, "request refused: see the NBD error number");
                continue;
            }
        };
        if req.command == Command::Disconnect {
            break None;
        }
        conn.begin();
        let payload = if req.command == Command::Write {
            let mut p = ctx.buffers.take(req.length as usize);
            let got = p.pieces_mut().try_for_each(|piece| {
                read_within(&mut stream, piece, false, ctx.stall, ctx.stop).map(drop)
            });
            if let Err(e) = got {
                conn.end();
                break Some(e.to_string());
            }
            Some(p)
        } else {
            None
        };
        (ctx.submit)(Task {
            conn: Arc::clone(conn),
            req,
            payload,
        });
    };
    if let Some(why) = why {
        conn.break_off(&why);
    }
    conn.drain();
    conn.control.shutdown();
}

/// A worker's own memory: the write scratch and the read buffer.
pub(crate) struct WorkerBufs {
    scratch: Scratch,
    read: zeroize::Zeroizing<Vec<u8>>,
}

impl WorkerBufs {
    pub(crate) fn new() -> WorkerBufs {
        WorkerBufs {
            scratch: Scratch::default(),
            read: zeroize::Zeroizing::new(vec![0u8; READ_PIECE]),
        }
    }
}

/// Carries out one request and replies to it.
pub(crate) fn execute(
    task: Task,
    disk: &EncryptedDisk,
    bufs: &mut WorkerBufs,
    counters: &Counters,
) {
    let Task { conn, req, payload } = task;
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if !conn.is_broken() {
        let (offset, len) = (req.offset, u64::from(req.length));
        let done = match req.command {
            Command::Read => {
                read(&conn, &req, disk, &mut bufs.read, counters);
                None
            }
            Command::Write => Some(
                payload
                    .as_ref()
                    .map_or(Ok(()), |p| {
                        p.pieces().try_for_each(|(at, piece)| {
                            disk.write_at(piece, offset + at as u64, &mut bufs.scratch)
                        })
                    })
                    .inspect(|()| {
                        counters.bytes_written.fetch_add(len, Ordering::Relaxed);
                    }),
            ),
            Command::Flush => Some(disk.flush()),
            Command::Trim => Some(disk.discard(offset, len)),
            Command::WriteZeroes => {
                let allocate = req.flags & FLAG_NO_HOLE != 0;
                if allocate && req.flags & FLAG_FAST_ZERO != 0 {
                    conn.send_error(
                        req.cookie,
                        Errno::NotSup,
                        "zeroes without a hole are not fast",
                    );
                    None
                } else {
                    Some(disk.write_zeroes(offset, len, allocate, &mut bufs.scratch))
                }
            }
            Command::Cache | Command::Disconnect => Some(Ok(())),
        };
        if let Some(done) = done {
            let done = match done {
                Ok(()) if req.fua() && req.command != Command::Flush => disk.flush(),
                other => other,
            };
            match done {
                Ok(()) => conn.send(&wire::simple_reply(req.cookie, None)),
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = %conn.peer, "{:?} failed: {e}", req.command);
                    conn.send_error(req.cookie, errno_of(&e), &e.to_string());
                }
            }
        }
    }
    drop(payload);
    conn.end();
}

/// A read: the first piece is read before anything is sent, so that an early failure is an
/// error reply; the rest follows piece by piece in the same reply (one data chunk), and a
/// failure there can only end the connection.
fn read(conn: &Conn, req: &Request, disk: &EncryptedDisk, buf: &mut [u8], counters: &Counters) {
    let len = req.length as usize;
    let first = len.min(buf.len());
    if let Err(e) = disk.read_at(&mut buf[..first], req.offset) {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(client = %conn.peer, "read failed: {e}");
        conn.send_error(req.cookie, errno_of(&e), &e.to_string());
        return;
    }
    conn.with_writer(|w| {
        let head_simple;
        let head_chunk;
        let head: &[u8] = if conn.structured {
            head_chunk = wire::read_chunk_header(req.cookie, req.offset, req.length);
            &head_chunk
        } else {
            head_simple = wire::simple_reply(req.cookie, None);
            &head_simple
        };
        write_reply(w, head, &buf[..first])?;
        let mut done = first;
        while done < len {
            let n = (len - done).min(buf.len());
            disk.read_at(&mut buf[..n], req.offset + done as u64)
                .map_err(|e| {
                    io::Error::other(format!("read failed in the middle of a reply: {e}"))
                })?;
            w.write_all(&buf[..n])?;
            done += n;
        }
        counters.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    });
}

/// The protocol's error number for a failure of the disk.
fn errno_of(e: &Error) -> Errno {
    match e {
        Error::Io { source, .. }
            if source.kind() == io::ErrorKind::StorageFull
                || source.kind() == io::ErrorKind::QuotaExceeded =>
        {
            Errno::NoSpc
        }
        Error::InvalidInput { .. } => Errno::Inval,
        _ => Errno::Io,
    }
}
