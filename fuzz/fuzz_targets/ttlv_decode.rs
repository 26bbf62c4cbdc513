//! TTLV decoder: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcrypt_kmip::ttlv::{Item, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = Item::decode(data, Limits::default()) {
        assert_eq!(item.encode(), data);
    }
    if data.len() >= 8 {
        let mut h = [0u8; 8];
        h.copy_from_slice(&data[..8]);
        let _ = vmcrypt_kmip::ttlv::message_len(&h, Limits::default());
    }
});
