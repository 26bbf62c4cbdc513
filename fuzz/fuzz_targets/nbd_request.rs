//! The NBD decoders (request headers, option headers, INFO/GO data, client flags): no input
//! makes them panic, and what they accept is inside the export, aligned and bounded
//! (vmcrypt_serve::fuzzing::check).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmcrypt_serve::fuzzing::check(data));
