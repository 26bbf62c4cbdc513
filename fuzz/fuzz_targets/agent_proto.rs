//! The agent's wire format: no input makes the decoders panic, and whatever decodes
//! re-encodes to the same bytes (requests, and responses to each kind of request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcrypt_agent::proto::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode().as_slice(), data);
    }
    let kinds = [
        Request::Fetch {
            provider: "p".into(),
            key_id: "k".into(),
        },
        Request::Create {
            provider: "p".into(),
            purpose: vmcrypt_core::provider::KeyPurpose::Vm("u".into()),
        },
        Request::Status,
        Request::Forget {
            provider: String::new(),
            key_id: String::new(),
        },
    ];
    for req in &kinds {
        if let Ok(resp) = Response::decode(req, data) {
            // Messages longer than a frame string are cut when encoded; decoded ones never are.
            let again = resp.encode();
            assert_eq!(again.as_slice(), data);
            let _ = Response::decode(req, &again).expect("own encoding decodes");
        }
    }
});
