//! The properties the NBD decoders must keep on any input, shared by the fuzz target
//! (`fuzz/fuzz_targets/nbd_request.rs`) and the replay of its corpus under `cargo test`.

use crate::nbd::handshake::{self, MAX_OPTION};
use crate::nbd::wire::{self, Command, Export, MAX_PAYLOAD, REQUEST_LEN, Refusal};

/// Feeds `data` to every decoder and panics if a property fails: the first byte picks an
/// export (size, block, read-only), the rest is cut into request headers; the same bytes go
/// to the handshake parsers.
pub fn check(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let export = Export {
        size: [0u64, 512, 1 << 20, u64::MAX - 511][usize::from(pick & 3)],
        block: [512u32, 4096][usize::from(pick >> 2 & 1)],
        read_only: pick & 8 != 0,
    };
    for h in rest.chunks_exact(REQUEST_LEN) {
        let h: &[u8; REQUEST_LEN] = h.try_into().unwrap_or(&[0; REQUEST_LEN]);
        match wire::decode_request(h, &export) {
            Ok(r) => {
                let block = u64::from(export.block);
                if !matches!(r.command, Command::Disconnect | Command::Flush) {
                    let end = r.offset.checked_add(u64::from(r.length));
                    assert!(
                        end.is_some_and(|e| e <= export.size),
                        "a range outside the export"
                    );
                    assert!(r.offset % block == 0 && u64::from(r.length) % block == 0);
                }
                if matches!(r.command, Command::Read | Command::Write) {
                    assert!(r.length <= MAX_PAYLOAD, "a payload over the bound");
                }
                if export.read_only {
                    assert!(!matches!(
                        r.command,
                        Command::Write | Command::Trim | Command::WriteZeroes
                    ));
                }
            }
            Err(Refusal::Reply { discard, .. }) => {
                assert!(discard <= MAX_PAYLOAD, "a skip over the bound");
            }
            Err(Refusal::Close(_)) => {}
        }
    }
    if let Some(h) = rest.get(..16) {
        let h: &[u8; 16] = h.try_into().unwrap_or(&[0; 16]);
        if let Ok((_, len)) = handshake::option_header(h) {
            assert!(len <= MAX_OPTION);
        }
    }
    if let Some(go) = handshake::parse_go(rest) {
        assert!(go.name.len() + 2 * go.requests.len() + 6 == rest.len());
    }
    let _ = handshake::client_flags(u32::from_be_bytes(
        rest.get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_default(),
    ));
}
