//! The VAES kernel and the portable kernel produce the same bytes for any key, tweak and unit
//! of whole blocks (lengths that are not whole 16-block groups exercise the hand-back to the
//! portable path), and decrypting undoes encrypting.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmcrypt_xts::{Backend, Xts};

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 + 16 + 16 {
        return;
    }
    let key: [u8; 64] = data[..64].try_into().expect("64 bytes");
    let tweak: [u8; 16] = data[64..80].try_into().expect("16 bytes");
    let body = &data[80..];
    let unit = &body[..body.len() / 16 * 16];
    let (Ok(fast), Ok(portable)) = (
        Xts::with_backend(&key, Backend::Vaes),
        Xts::with_backend(&key, Backend::Portable),
    ) else {
        return; // equal key halves are refused by both
    };
    let mut a = unit.to_vec();
    let mut b = unit.to_vec();
    fast.encrypt_unit(&mut a, &tweak).expect("whole blocks");
    portable.encrypt_unit(&mut b, &tweak).expect("whole blocks");
    assert_eq!(a, b, "encrypt differs");
    fast.decrypt_unit(&mut a, &tweak).expect("whole blocks");
    assert_eq!(a, unit, "round trip");
});
