//! Settings codec: never panics; a parsed file renders back to the same bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vmcrypt_core::settings::{Flavor, Settings};

fuzz_target!(|data: &[u8]| {
    for flavor in [Flavor::Vmx, Flavor::Descriptor] {
        if let Ok(s) = Settings::parse(data, flavor, Path::new("fuzz")) {
            assert_eq!(s.render().as_bytes(), data);
        }
    }
});
