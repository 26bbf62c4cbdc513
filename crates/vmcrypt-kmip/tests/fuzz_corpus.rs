//! Replays the cargo-fuzz corpus of the TTLV decoder (fuzz/corpus/ttlv_decode) with the same
//! checks as the fuzz target: no panic, and whatever decodes re-encodes to the same bytes.

use std::path::PathBuf;

use vmcrypt_kmip::ttlv::{Item, Limits, message_len};

#[test]
fn ttlv_corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/ttlv_decode");
    let mut n = 0;
    let mut decoded = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/ttlv_decode") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        if let Ok(item) = Item::decode(&data, Limits::default()) {
            assert_eq!(item.encode(), data);
            decoded += 1;
        }
        if data.len() >= 8 {
            let mut h = [0u8; 8];
            h.copy_from_slice(&data[..8]);
            let _ = message_len(&h, Limits::default());
        }
        n += 1;
    }
    assert!(n >= 24, "corpus has only {n} inputs");
    assert!(
        decoded >= 24,
        "only {decoded} inputs decode (the PyKMIP seeds must)"
    );
}
