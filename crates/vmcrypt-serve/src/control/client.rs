//! The client's end of the control socket: the CLI asking the server of a disk.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vmcrypt_core::{Error, ErrorKind, Result};

use super::{MAX_LINE, Reply, Request};

/// A connection to the server of a disk.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<UnixStream>,
    socket: PathBuf,
}

impl Client {
    /// Connects to the server of the disk whose control socket is `socket`: `Ok(None)` when
    /// nobody serves it (no socket, or a stale one left by a server that was killed).
    ///
    /// # Errors
    /// [`Error::InUse`] for a socket served by a process of another user (whose replies
    /// could not be trusted); other I/O errors.
    pub fn connect(socket: &Path) -> Result<Option<Client>> {
        let stream = match UnixStream::connect(socket) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(Error::io("connect to", socket)(e)),
        };
        let cred = rustix::net::sockopt::socket_peercred(&stream)
            .map_err(|e| Error::io("check the server on", socket)(e.into()))?;
        let me = rustix::process::geteuid().as_raw();
        if cred.uid.as_raw() != me && cred.uid.as_raw() != 0 {
            return Err(Error::InUse {
                path: socket.to_path_buf(),
                holder: format!(
                    "a process of uid {} (pid {}), which this user does not trust",
                    cred.uid.as_raw(),
                    cred.pid.as_raw_nonzero()
                ),
            });
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
            .map_err(Error::io("connect to", socket))?;
        Ok(Some(Client {
            stream: BufReader::new(stream),
            socket: socket.to_path_buf(),
        }))
    }

    /// Sends `req` and reads the reply. A reply that reports an error is returned as
    /// [`Error::Served`], with the server's kind (so exit codes are the same as offline).
    ///
    /// # Errors
    /// [`Error::Served`]; I/O errors; [`Error::InvalidInput`] for a reply that does not parse.
    pub fn request(&mut self, req: &Request) -> Result<Reply> {
        let io = |op| Error::io(op, self.socket.clone());
        let mut b = serde_json::to_vec(req).map_err(|e| Error::input(e.to_string()))?;
        b.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&b)
            .map_err(io("write to"))?;
        let mut line = Vec::new();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io("read from"))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(Error::input(format!(
                "{}: the server closed the connection without a reply",
                self.socket.display()
            )));
        }
        let reply: Reply = serde_json::from_slice(&line).map_err(|e| {
            Error::input(format!(
                "{}: not a control reply: {e}",
                self.socket.display()
            ))
        })?;
        if let Some(f) = &reply.error {
            return Err(Error::Served {
                disk: reply.disk.clone(),
                pid: reply.pid,
                kind: ErrorKind::parse(&f.kind).unwrap_or(ErrorKind::Io),
                message: f.message.clone(),
            });
        }
        Ok(reply)
    }
}
