//! Settings codec: never panics; a parsed file renders back to the same bytes (a descriptor:
//! the same text up to its first NUL, then NUL padding at least as long as the input's, as QEMU
//! reads and writes descriptors).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vmcrypt_core::settings::{Flavor, Settings};

fuzz_target!(|data: &[u8]| {
    for flavor in [Flavor::Vmx, Flavor::Descriptor] {
        if let Ok(s) = Settings::parse(data, flavor, Path::new("fuzz")) {
            let out = s.render();
            let out = out.as_bytes();
            match data.iter().position(|b| *b == 0) {
                Some(end) if flavor == Flavor::Descriptor => {
                    assert_eq!(&out[..end], &data[..end]);
                    assert!(out[end..].iter().all(|b| *b == 0) && out.len() >= data.len());
                }
                _ => assert_eq!(out, data),
            }
        }
    }
});
