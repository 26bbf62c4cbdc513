//! Key locator parser: never panics; what parses renders to a string that parses to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcrypt_core::locator::KeyLocator;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(kl) = KeyLocator::parse(s) {
            let again = KeyLocator::parse(&kl.render()).expect("own rendering parses");
            assert_eq!(again, kl);
        }
    }
});
