//! The handshake over a connection: the fixed-newstyle option haggling that ends in the
//! transmission phase (`NBD_OPT_GO`, or the old `NBD_OPT_EXPORT_NAME`) or in a closed
//! connection. The bytes are built and checked by [`super::handshake`]; this is the order.

use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::handshake::{self as hs, info, opt, rep, tflags};
use super::wire::MAX_PAYLOAD;
use crate::deadline::{Got, read_within};

/// Options one client may send before it must pick an export (a bound on a client that
/// haggles forever).
const MAX_OPTIONS: usize = 256;

/// What the server offers.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The export's name (a client may also ask for the default export, "").
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The minimum block size (the disk's data unit).
    pub block: u32,
    /// Whether writes are refused.
    pub read_only: bool,
}

impl Offer {
    /// The transmission flags: flush, FUA, trim, write-zeroes, DF, and multi-connection
    /// (every connection writes through the same file, so a flush on one covers all).
    pub fn transmission_flags(&self) -> u16 {
        let mut f = tflags::HAS_FLAGS
            | tflags::SEND_FLUSH
            | tflags::SEND_FUA
            | tflags::SEND_DF
            | tflags::CAN_MULTI_CONN
            | tflags::SEND_CACHE;
        if self.read_only {
            f |= tflags::READ_ONLY;
        } else {
            f |= tflags::SEND_TRIM | tflags::SEND_WRITE_ZEROES;
        }
        f
    }

    fn names(&self, asked: &[u8]) -> bool {
        asked.is_empty() || asked == self.name.as_bytes()
    }
}

/// How the handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Into the transmission phase; with or without structured replies.
    Transmission {
        /// Whether the client negotiated structured replies.
        structured: bool,
    },
    /// The client left (NBD_OPT_ABORT, or it closed the connection), or the server is
    /// stopping.
    Left,
}

/// Runs the server's side of the handshake on `stream`.
///
/// # Errors
/// A protocol violation (wrong magic, unknown client flags, an oversized option, an unknown
/// export name asked with `NBD_OPT_EXPORT_NAME`), a stall, or an I/O error: close the
/// connection.
pub(crate) fn negotiate<S: io::Read + Write>(
    stream: &mut S,
    offer: &Offer,
    stall: Duration,
    stop: &AtomicBool,
) -> io::Result<Outcome> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    stream.write_all(&hs::greeting())?;
    let mut flags = [0u8; 4];
    if read_within(stream, &mut flags, true, stall, stop)? != Got::All {
        return Ok(Outcome::Left);
    }
    let no_zeroes = hs::client_flags(u32::from_be_bytes(flags)).map_err(invalid)?;
    let mut structured = false;
    for _ in 0..MAX_OPTIONS {
        let mut h = [0u8; 16];
        if read_within(stream, &mut h, true, stall, stop)? != Got::All {
            return Ok(Outcome::Left);
        }
        let (option, len) = hs::option_header(&h).map_err(invalid)?;
        let mut data = vec![0u8; len as usize];
        read_within(stream, &mut data, false, stall, stop)?;
        let error = |kind: u32, msg: &str| hs::option_reply(option, kind, msg.as_bytes());
        let reply = match option {
            opt::EXPORT_NAME => {
                if !offer.names(&data) {
                    return Err(invalid("a client asked for an export that is not served"));
                }
                let tf = offer.transmission_flags();
                stream.write_all(&hs::export_name_reply(offer.size, tf, no_zeroes))?;
                return Ok(Outcome::Transmission { structured });
            }
            opt::ABORT => {
                let _ = stream.write_all(&hs::option_reply(option, rep::ACK, &[]));
                return Ok(Outcome::Left);
            }
            opt::LIST if !data.is_empty() => error(rep::ERR_INVALID, "LIST takes no data"),
            opt::LIST => {
                let mut r = hs::server_entry(offer.name.as_bytes());
                r.extend(hs::option_reply(option, rep::ACK, &[]));
                r
            }
            opt::STRUCTURED_REPLY if !data.is_empty() => {
                error(rep::ERR_INVALID, "STRUCTURED_REPLY takes no data")
            }
            opt::STRUCTURED_REPLY => {
                structured = true;
                hs::option_reply(option, rep::ACK, &[])
            }
            opt::INFO | opt::GO => match hs::parse_go(&data) {
                None => error(rep::ERR_INVALID, "malformed INFO/GO data"),
                Some(go) if !offer.names(&go.name) => {
                    error(rep::ERR_UNKNOWN, "no export of that name")
                }
                Some(go) => {
                    let mut r = hs::info_export(option, offer.size, offer.transmission_flags());
                    // Always sent: the minimum block is the data unit, so that clients align
                    // and no write needs a read-modify-write.
                    let preferred = offer.block.max(4096);
                    r.extend(hs::info_block_size(
                        option,
                        offer.block,
                        preferred,
                        MAX_PAYLOAD,
                    ));
                    if go.requests.contains(&info::NAME) {
                        r.extend(hs::info_name(option, offer.name.as_bytes()));
                    }
                    r.extend(hs::option_reply(option, rep::ACK, &[]));
                    if option == opt::GO {
                        stream.write_all(&r)?;
                        return Ok(Outcome::Transmission { structured });
                    }
                    r
                }
            },
            opt::STARTTLS => error(rep::ERR_UNSUP, "this server has no TLS (use a Unix socket)"),
            _ => error(rep::ERR_UNSUP, "option not supported"),
        };
        stream.write_all(&reply)?;
    }
    Err(invalid("too many options without choosing an export"))
}
