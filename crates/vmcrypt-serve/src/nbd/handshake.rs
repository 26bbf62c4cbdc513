//! The NBD handshake on the wire (fixed newstyle only): the server's greeting, the client's
//! options, and the option replies, including the export information `NBD_OPT_INFO` and
//! `NBD_OPT_GO` return (size, transmission flags, block sizes).
//!
//! Option data is bounded ([`MAX_OPTION`]) and every length inside it is checked against what
//! was sent, so a hostile client gets `NBD_REP_ERR_INVALID` or a closed connection, never a
//! read past its data.

/// `NBDMAGIC`.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, and the magic of every option.
pub const OPTION_MAGIC: u64 = 0x4948_4156_454f_5054;
/// The magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The most option data a client may send in one option: 4 KiB is the protocol's string
/// bound (export names), plus room for the information requests.
pub const MAX_OPTION: u32 = 8 * 1024;

/// Handshake flag `NBD_FLAG_FIXED_NEWSTYLE`.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag `NBD_FLAG_NO_ZEROES`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag `NBD_FLAG_C_FIXED_NEWSTYLE`.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag `NBD_FLAG_C_NO_ZEROES`.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags (`NBD_FLAG_*` of an export).
pub mod tflags {
    /// `NBD_FLAG_HAS_FLAGS`: always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// `NBD_FLAG_READ_ONLY`.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_FLAG_SEND_FLUSH`.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_FLAG_SEND_FUA`.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_FLAG_SEND_TRIM`.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_FLAG_SEND_WRITE_ZEROES`.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_FLAG_SEND_DF`.
    pub const SEND_DF: u16 = 1 << 7;
    /// `NBD_FLAG_CAN_MULTI_CONN`: several connections see one consistent disk (a flush on
    /// one covers writes acknowledged on all).
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_FLAG_SEND_CACHE`.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_FLAG_SEND_FAST_ZERO`.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Option numbers (`NBD_OPT_*`).
pub mod opt {
    /// `NBD_OPT_EXPORT_NAME`: the old way to pick an export (no reply header, no errors).
    pub const EXPORT_NAME: u32 = 1;
    /// `NBD_OPT_ABORT`.
    pub const ABORT: u32 = 2;
    /// `NBD_OPT_LIST`.
    pub const LIST: u32 = 3;
    /// `NBD_OPT_STARTTLS` (refused: no TLS yet).
    pub const STARTTLS: u32 = 5;
    /// `NBD_OPT_INFO`.
    pub const INFO: u32 = 6;
    /// `NBD_OPT_GO`.
    pub const GO: u32 = 7;
    /// `NBD_OPT_STRUCTURED_REPLY`.
    pub const STRUCTURED_REPLY: u32 = 8;
}

/// Option reply types (`NBD_REP_*`).
pub mod rep {
    /// `NBD_REP_ACK`.
    pub const ACK: u32 = 1;
    /// `NBD_REP_SERVER`: one export of a list.
    pub const SERVER: u32 = 2;
    /// `NBD_REP_INFO`.
    pub const INFO: u32 = 3;
    /// `NBD_REP_ERR_UNSUP`.
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// `NBD_REP_ERR_POLICY`.
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    /// `NBD_REP_ERR_INVALID`.
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    /// `NBD_REP_ERR_UNKNOWN`: no such export.
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
    /// `NBD_REP_ERR_SHUTDOWN`.
    pub const ERR_SHUTDOWN: u32 = (1 << 31) + 7;
}

/// Information types (`NBD_INFO_*`).
pub mod info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// `NBD_INFO_NAME`.
    pub const NAME: u16 = 1;
    /// `NBD_INFO_DESCRIPTION`.
    pub const DESCRIPTION: u16 = 2;
    /// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// The server's greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags (fixed newstyle, no zeroes).
pub fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&OPTION_MAGIC.to_be_bytes());
    b[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// The client's flags, checked: a flag this server does not know ends the connection (the
/// protocol's rule), and so does a client that is not fixed newstyle. Returns whether the
/// client asked for no zeroes after `NBD_OPT_EXPORT_NAME`.
///
/// # Errors
/// What is wrong, for the log; the connection is then closed.
pub fn client_flags(flags: u32) -> Result<bool, &'static str> {
    if flags & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0 {
        return Err("unknown client flags");
    }
    if flags & CLIENT_FIXED_NEWSTYLE == 0 {
        return Err("the client does not speak fixed newstyle");
    }
    Ok(flags & CLIENT_NO_ZEROES != 0)
}

/// An option header: (option, length of its data).
///
/// # Errors
/// A wrong magic or data over [`MAX_OPTION`]: close the connection.
pub fn option_header(h: &[u8; 16]) -> Result<(u32, u32), &'static str> {
    let magic = u64::from_be_bytes(h[..8].try_into().unwrap_or_default());
    if magic != OPTION_MAGIC {
        return Err("option magic is wrong");
    }
    let option = u32::from_be_bytes(h[8..12].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(h[12..16].try_into().unwrap_or_default());
    if len > MAX_OPTION {
        return Err("option data longer than the server accepts");
    }
    Ok((option, len))
}

/// What `NBD_OPT_INFO` and `NBD_OPT_GO` carry: the export's name and the information asked
/// for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRequest {
    /// The export name (empty: the default export).
    pub name: Vec<u8>,
    /// The `NBD_INFO_*` types asked for.
    pub requests: Vec<u16>,
}

/// Parses the data of `NBD_OPT_INFO` / `NBD_OPT_GO`.
///
/// # Errors
/// `None` for data whose lengths do not add up: reply `NBD_REP_ERR_INVALID`.
pub fn parse_go(data: &[u8]) -> Option<GoRequest> {
    let name_len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let name = data.get(4..4usize.checked_add(name_len)?)?.to_vec();
    let rest = &data[4 + name_len..];
    let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let list = rest.get(2..)?;
    if list.len() != count * 2 {
        return None;
    }
    let requests = list
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some(GoRequest { name, requests })
}

/// An option reply: header and data.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// `NBD_REP_INFO` with `NBD_INFO_EXPORT`.
pub fn info_export(option: u32, size: u64, transmission: u16) -> Vec<u8> {
    let mut d = info::EXPORT.to_be_bytes().to_vec();
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(&transmission.to_be_bytes());
    option_reply(option, rep::INFO, &d)
}

/// `NBD_REP_INFO` with `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(option: u32, minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut d = info::BLOCK_SIZE.to_be_bytes().to_vec();
    for v in [minimum, preferred, maximum] {
        d.extend_from_slice(&v.to_be_bytes());
    }
    option_reply(option, rep::INFO, &d)
}

/// `NBD_REP_INFO` with `NBD_INFO_NAME`.
pub fn info_name(option: u32, name: &[u8]) -> Vec<u8> {
    let mut d = info::NAME.to_be_bytes().to_vec();
    d.extend_from_slice(name);
    option_reply(option, rep::INFO, &d)
}

/// `NBD_REP_SERVER` naming one export (for `NBD_OPT_LIST`).
pub fn server_entry(name: &[u8]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name);
    option_reply(opt::LIST, rep::SERVER, &d)
}

/// What the server sends after `NBD_OPT_EXPORT_NAME`: size, transmission flags, and 124 zero
/// bytes unless the client asked for none.
pub fn export_name_reply(size: u64, transmission: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = size.to_be_bytes().to_vec();
    b.extend_from_slice(&transmission.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0u8; 124]);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_data(name: &[u8], infos: &[u16]) -> Vec<u8> {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            d.extend_from_slice(&i.to_be_bytes());
        }
        d
    }

    #[test]
    fn greeting_and_client_flags() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
        assert_eq!(client_flags(1), Ok(false));
        assert_eq!(client_flags(3), Ok(true));
        assert!(client_flags(0).is_err(), "not fixed newstyle");
        assert!(client_flags(1 | 4).is_err(), "an unknown flag");
    }

    #[test]
    fn option_headers_and_go_data_are_bounded() {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&OPTION_MAGIC.to_be_bytes());
        h[8..12].copy_from_slice(&opt::GO.to_be_bytes());
        h[12..].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(option_header(&h), Ok((opt::GO, 10)));
        h[12..].copy_from_slice(&(MAX_OPTION + 1).to_be_bytes());
        assert!(option_header(&h).is_err());
        h[0] ^= 1;
        assert!(option_header(&h).is_err());

        let d = go_data(b"disk.img", &[info::BLOCK_SIZE, info::NAME]);
        assert_eq!(
            parse_go(&d),
            Some(GoRequest {
                name: b"disk.img".to_vec(),
                requests: vec![info::BLOCK_SIZE, info::NAME],
            })
        );
        assert_eq!(parse_go(&go_data(b"", &[])).map(|g| g.name.len()), Some(0));
        // Every truncation, and a name length past the data, is invalid.
        for cut in 0..d.len() {
            assert_eq!(parse_go(&d[..cut]), None, "cut at {cut}");
        }
        let mut lying = d.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_go(&lying), None);
        let mut extra = d;
        extra.push(0);
        assert_eq!(parse_go(&extra), None);
    }

    #[test]
    fn replies_have_the_protocols_layout() {
        let r = info_export(opt::GO, 1 << 30, tflags::HAS_FLAGS | tflags::SEND_FLUSH);
        assert_eq!(
            u64::from_be_bytes(r[..8].try_into().expect("8")),
            REPLY_MAGIC
        );
        assert_eq!(u32::from_be_bytes(r[8..12].try_into().expect("4")), opt::GO);
        assert_eq!(
            u32::from_be_bytes(r[12..16].try_into().expect("4")),
            rep::INFO
        );
        assert_eq!(u32::from_be_bytes(r[16..20].try_into().expect("4")), 12);
        assert_eq!(&r[20..22], &[0, 0]);
        assert_eq!(
            u64::from_be_bytes(r[22..30].try_into().expect("8")),
            1 << 30
        );
        assert_eq!(u16::from_be_bytes([r[30], r[31]]), 5);
        let b = info_block_size(opt::GO, 4096, 4096, 32 << 20);
        assert_eq!(b.len(), 20 + 14);
        assert_eq!(&b[20..22], &[0, 3]);
        assert_eq!(export_name_reply(7, 1, false).len(), 8 + 2 + 124);
        assert_eq!(export_name_reply(7, 1, true).len(), 10);
        let s = server_entry(b"d");
        assert_eq!(&s[20..], &[0, 0, 0, 1, b'd']);
    }
}
