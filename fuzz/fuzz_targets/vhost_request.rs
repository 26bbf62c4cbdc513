//! The virtio-blk request decoder of the vhost-user backend: no descriptor chain or header
//! makes it panic, and what it accepts lies inside its descriptors and inside the disk
//! (vmcrypt_vhost::fuzzing::check).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vmcrypt_vhost::fuzzing::check(data));
