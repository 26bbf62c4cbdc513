//! The NBD transmission phase on the wire: a request header decoded and checked before any
//! byte of the disk is touched, and the replies (simple, and structured chunks).
//!
//! Numbers are big-endian, as the protocol says. A request is 28 bytes (magic, command flags,
//! type, cookie, offset, length) followed, for a write, by *length* bytes of data. What a
//! decoded request can be is decided here, once: a header that cannot be trusted to frame the
//! stream (wrong magic, a write longer than [`MAX_PAYLOAD`]) ends the connection; a well-framed
//! request the export cannot serve (unknown command or flag, a range outside the export or not
//! aligned to its block size, a write to a read-only export) gets an error reply with the
//! protocol's error number, and the connection goes on.

/// `NBD_REQUEST_MAGIC`.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Bytes of a request header.
pub const REQUEST_LEN: usize = 28;
/// The longest read or write one request may ask for: 32 MiB, what QEMU's NBD client sends
/// at most, and the bound on the memory one request holds.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// `NBD_CMD_FLAG_FUA`: the reply waits until the request's writes are durable.
pub const FLAG_FUA: u16 = 1 << 0;
/// `NBD_CMD_FLAG_NO_HOLE`: write zeroes without making a hole.
pub const FLAG_NO_HOLE: u16 = 1 << 1;
/// `NBD_CMD_FLAG_DF`: a read in one content chunk.
pub const FLAG_DF: u16 = 1 << 2;
/// `NBD_CMD_FLAG_FAST_ZERO`: fail write-zeroes unless it is faster than writing.
pub const FLAG_FAST_ZERO: u16 = 1 << 4;

/// `NBD_REPLY_FLAG_DONE`: the last chunk of a structured reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// `NBD_REPLY_TYPE_NONE`.
pub const REPLY_TYPE_NONE: u16 = 0;
/// `NBD_REPLY_TYPE_OFFSET_DATA`.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// `NBD_REPLY_TYPE_OFFSET_HOLE`.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// `NBD_REPLY_TYPE_ERROR`.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// The protocol's error numbers (`NBD_E*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Errno {
    /// `NBD_EPERM`: a write to a read-only export.
    Perm = 1,
    /// `NBD_EIO`: the disk failed.
    Io = 5,
    /// `NBD_ENOMEM`.
    NoMem = 12,
    /// `NBD_EINVAL`: a request the export cannot serve as asked.
    Inval = 22,
    /// `NBD_ENOSPC`: no room on the host's file system.
    NoSpc = 28,
    /// `NBD_EOVERFLOW`: a read too long for one chunk (`NBD_CMD_FLAG_DF`).
    Overflow = 75,
    /// `NBD_ENOTSUP`: e.g. a fast zero that would not be fast.
    NotSup = 95,
    /// `NBD_ESHUTDOWN`: the server is stopping.
    Shutdown = 108,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ` (0).
    Read,
    /// `NBD_CMD_WRITE` (1): *length* bytes of data follow the header.
    Write,
    /// `NBD_CMD_DISC` (2): the client is done; no reply.
    Disconnect,
    /// `NBD_CMD_FLUSH` (3).
    Flush,
    /// `NBD_CMD_TRIM` (4).
    Trim,
    /// `NBD_CMD_CACHE` (5).
    Cache,
    /// `NBD_CMD_WRITE_ZEROES` (6).
    WriteZeroes,
}

impl Command {
    fn from_wire(t: u16) -> Option<Command> {
        Some(match t {
            0 => Command::Read,
            1 => Command::Write,
            2 => Command::Disconnect,
            3 => Command::Flush,
            4 => Command::Trim,
            5 => Command::Cache,
            6 => Command::WriteZeroes,
            _ => return None,
        })
    }

    /// The command flags valid with this command (any other is `NBD_EINVAL`). FUA is
    /// accepted on every command, as the protocol asks of a server that advertises it.
    fn allowed_flags(self) -> u16 {
        match self {
            Command::Read => FLAG_FUA | FLAG_DF,
            Command::WriteZeroes => FLAG_FUA | FLAG_NO_HOLE | FLAG_FAST_ZERO,
            _ => FLAG_FUA,
        }
    }

    fn writes(self) -> bool {
        matches!(self, Command::Write | Command::Trim | Command::WriteZeroes)
    }
}

/// The export a request is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// Bytes the client sees.
    pub size: u64,
    /// The minimum block size advertised (the disk's data unit): offsets and lengths of
    /// reads, writes, trims and zeroes must be multiples of it.
    pub block: u32,
    /// Whether writes are refused.
    pub read_only: bool,
}

/// A request that passed every check: its range lies inside the export, aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Its command flags.
    pub flags: u16,
    /// The client's handle, echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Bytes (for a write, the data that follows the header).
    pub length: u32,
}

impl Request {
    /// Whether the reply must wait until the request's writes are durable.
    pub fn fua(&self) -> bool {
        self.flags & FLAG_FUA != 0
    }
}

/// Why a request is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The header cannot be trusted to frame the stream: close the connection.
    Close(&'static str),
    /// A well-framed request the export cannot serve: reply with this error to `cookie`, after
    /// reading and discarding `discard` bytes of write data, and go on.
    Reply {
        /// The client's handle.
        cookie: u64,
        /// The error to send.
        errno: Errno,
        /// Bytes of write data that follow the header and must be read past.
        discard: u32,
    },
}

/// Decodes and checks one request header.
///
/// # Errors
/// A [`Refusal`]: close the connection, or reply with an error and go on.
pub fn decode_request(h: &[u8; REQUEST_LEN], export: &Export) -> Result<Request, Refusal> {
    let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        u64::from_be_bytes(b)
    };
    if u32_at(0) != REQUEST_MAGIC {
        return Err(Refusal::Close("request magic is wrong"));
    }
    let (flags, kind, cookie, offset, length) =
        (u16_at(4), u16_at(6), u64_at(8), u64_at(16), u32_at(24));
    let command = Command::from_wire(kind);
    // Only a write carries data; its length frames the stream, so an oversized one cannot be
    // skipped safely (the bound on memory is the point): close.
    let carries = if command == Some(Command::Write) {
        length
    } else {
        0
    };
    if carries > MAX_PAYLOAD {
        return Err(Refusal::Close("write longer than the server accepts"));
    }
    let refuse = |errno| {
        Err(Refusal::Reply {
            cookie,
            errno,
            discard: carries,
        })
    };
    let Some(command) = command else {
        return refuse(Errno::Inval);
    };
    if flags & !command.allowed_flags() != 0 {
        return refuse(Errno::Inval);
    }
    if command.writes() && export.read_only {
        return refuse(Errno::Perm);
    }
    let ranged = !matches!(command, Command::Disconnect | Command::Flush);
    if ranged {
        let block = u64::from(export.block.max(1));
        let inside = offset
            .checked_add(u64::from(length))
            .is_some_and(|end| end <= export.size);
        let aligned = offset.is_multiple_of(block) && u64::from(length).is_multiple_of(block);
        let sized = length <= MAX_PAYLOAD || !matches!(command, Command::Read);
        if !inside || !aligned || !sized {
            return refuse(Errno::Inval);
        }
    }
    Ok(Request {
        command,
        flags,
        cookie,
        offset,
        length,
    })
}

/// The header of a simple reply (data, for a successful read, follows it).
pub fn simple_reply(cookie: u64, error: Option<Errno>) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.map_or(0, |e| e as u32).to_be_bytes());
    b[8..].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// The 20-byte header of a structured reply chunk carrying `payload_len` bytes.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, payload_len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..].copy_from_slice(&payload_len.to_be_bytes());
    b
}

/// The header of a final `NBD_REPLY_TYPE_OFFSET_DATA` chunk for `data_len` bytes read at
/// `offset` (the data follows it): header, then the 64-bit offset.
pub fn read_chunk_header(cookie: u64, offset: u64, data_len: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..20].copy_from_slice(&chunk_header(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_OFFSET_DATA,
        data_len + 8,
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// A final `NBD_REPLY_TYPE_ERROR` chunk: the error and a message for a person (at most 4096
/// bytes, cut on a character boundary).
pub fn error_chunk(cookie: u64, errno: Errno, message: &str) -> Vec<u8> {
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &message.as_bytes()[..end];
    let mut b = chunk_header(
        cookie,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        6 + msg.len() as u32,
    )
    .to_vec();
    b.extend_from_slice(&(errno as u32).to_be_bytes());
    b.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    b.extend_from_slice(msg);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: Export = Export {
        size: 1 << 20,
        block: 4096,
        read_only: false,
    };

    fn header(flags: u16, kind: u16, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_LEN] {
        let mut h = [0u8; REQUEST_LEN];
        h[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&kind.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..24].copy_from_slice(&offset.to_be_bytes());
        h[24..].copy_from_slice(&length.to_be_bytes());
        h
    }

    #[test]
    fn good_requests_decode() {
        let r = decode_request(&header(FLAG_FUA, 1, 7, 8192, 4096), &EXPORT).expect("write");
        assert_eq!(
            (r.command, r.cookie, r.offset, r.length, r.fua()),
            (Command::Write, 7, 8192, 4096, true)
        );
        let r = decode_request(&header(0, 3, 8, 0, 0), &EXPORT).expect("flush");
        assert_eq!(r.command, Command::Flush);
        let r = decode_request(&header(FLAG_NO_HOLE, 6, 9, 0, 1 << 20), &EXPORT).expect("zeroes");
        assert_eq!(r.command, Command::WriteZeroes);
        assert_eq!(
            decode_request(&header(0, 2, 1, 0, 0), &EXPORT).map(|r| r.command),
            Ok(Command::Disconnect)
        );
    }

    #[test]
    fn bad_requests_are_refused_before_the_disk() {
        let reply = |cookie, errno, discard| {
            Err(Refusal::Reply {
                cookie,
                errno,
                discard,
            })
        };
        let cases = [
            // Past the end, overflowing, unaligned offset, unaligned length.
            (header(0, 0, 1, 1 << 20, 4096), reply(1, Errno::Inval, 0)),
            (
                header(0, 0, 2, u64::MAX - 100, 4096),
                reply(2, Errno::Inval, 0),
            ),
            (header(0, 1, 3, 512, 4096), reply(3, Errno::Inval, 4096)),
            (header(0, 4, 4, 0, 100), reply(4, Errno::Inval, 0)),
            // Unknown command, a flag the command does not take.
            (header(0, 99, 5, 0, 4096), reply(5, Errno::Inval, 0)),
            (
                header(FLAG_NO_HOLE, 0, 6, 0, 4096),
                reply(6, Errno::Inval, 0),
            ),
            // A read longer than one request may be.
            (
                header(0, 0, 7, 0, MAX_PAYLOAD + 4096),
                reply(7, Errno::Inval, 0),
            ),
        ];
        let big = Export {
            size: u64::MAX / 2,
            ..EXPORT
        };
        for (h, want) in cases {
            let export = if want == reply(7, Errno::Inval, 0) {
                big
            } else {
                EXPORT
            };
            assert_eq!(decode_request(&h, &export), want, "{h:?}");
        }
        let mut wrong = header(0, 0, 1, 0, 4096);
        wrong[0] ^= 1;
        assert!(matches!(
            decode_request(&wrong, &EXPORT),
            Err(Refusal::Close(_))
        ));
        assert!(matches!(
            decode_request(&header(0, 1, 1, 0, MAX_PAYLOAD + 4096), &big),
            Err(Refusal::Close(_))
        ));
        let ro = Export {
            read_only: true,
            ..EXPORT
        };
        assert_eq!(
            decode_request(&header(0, 1, 9, 0, 4096), &ro),
            reply(9, Errno::Perm, 4096)
        );
        assert!(decode_request(&header(0, 0, 9, 0, 4096), &ro).is_ok());
    }

    #[test]
    fn replies_have_the_protocols_layout() {
        let s = simple_reply(0x0102_0304_0506_0708, Some(Errno::Inval));
        assert_eq!(&s[..4], &[0x67, 0x44, 0x66, 0x98]);
        assert_eq!(&s[4..8], &[0, 0, 0, 22]);
        assert_eq!(&s[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let r = read_chunk_header(5, 4096, 8192);
        assert_eq!(&r[..4], &[0x66, 0x8e, 0x33, 0xef]);
        assert_eq!(u16::from_be_bytes([r[4], r[5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u32::from_be_bytes([r[16], r[17], r[18], r[19]]), 8192 + 8);
        assert_eq!(u64::from_be_bytes(r[20..28].try_into().expect("8")), 4096);
        let e = error_chunk(5, Errno::Io, &"é".repeat(3000));
        let len = u32::from_be_bytes([e[16], e[17], e[18], e[19]]) as usize;
        assert_eq!(e.len(), 20 + len);
        let msg_len = u16::from_be_bytes([e[24], e[25]]) as usize;
        assert!(msg_len <= 4096 && std::str::from_utf8(&e[26..]).is_ok());
        assert_eq!(len, 6 + msg_len);
    }
}
