//! Every backend produces the same bytes: the VAES kernel against the portable one over random
//! keys, tweaks, unit sizes (including sizes the fast path hands back to the portable one) and
//! counts, in both directions. On a CPU without VAES both sides run the portable kernel, and
//! `fast_path_is_used_where_the_cpu_has_it` says which case this machine is.

use proptest::prelude::*;
use vmcrypt_xts::{Backend, Direction, SectorSize, Xts};

fn distinct_key() -> impl Strategy<Value = [u8; 64]> {
    proptest::array::uniform32(any::<u8>())
        .prop_flat_map(|a| (Just(a), proptest::array::uniform32(any::<u8>())))
        .prop_filter("halves must differ", |(a, b)| a != b)
        .prop_map(|(a, b)| {
            let mut k = [0u8; 64];
            k[..32].copy_from_slice(&a);
            k[32..].copy_from_slice(&b);
            k
        })
}

fn pair(key: &[u8; 64]) -> (Xts, Xts) {
    (
        Xts::with_backend(key, Backend::Vaes).expect("key"),
        Xts::with_backend(key, Backend::Portable).expect("key"),
    )
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_vaes() -> bool {
    std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_vaes() -> bool {
    false
}

#[test]
fn fast_path_is_used_where_the_cpu_has_it() {
    let mut key = [1u8; 64];
    key[40] = 2;
    let want = if cpu_has_vaes() {
        Backend::Vaes
    } else {
        Backend::Portable
    };
    assert_eq!(
        Xts::with_backend(&key, Backend::Vaes)
            .expect("key")
            .backend(),
        want
    );
    assert_eq!(
        Xts::with_backend(&key, Backend::Portable)
            .expect("key")
            .backend(),
        Backend::Portable
    );
    let forced = std::env::var("VMCRYPT_XTS_BACKEND").is_ok_and(|v| v == "portable");
    let best = if forced { Backend::Portable } else { want };
    assert_eq!(Backend::best(), best);
    assert_eq!(Xts::new(&key).expect("key").backend(), best);
    println!("backend on this machine: {}", best.as_str());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn sectors_agree(key in distinct_key(), four_k in any::<bool>(), first in any::<u64>(),
                     units in 1usize..40, seed in any::<u64>()) {
        let unit = if four_k { SectorSize::S4096 } else { SectorSize::S512 };
        let u = unit.bytes();
        // Any sector number, including ones whose tweaks carry into the top bits.
        let offset = (first >> 12) * u as u64;
        let plain: Vec<u8> = (0..units * u)
            .map(|i| (seed.rotate_left(i as u32 % 64) as u8) ^ (i as u8))
            .collect();
        let (fast, portable) = pair(&key);
        let mut a = plain.clone();
        let mut b = plain.clone();
        fast.encrypt_sectors(&mut a, offset, unit).expect("fast");
        portable.encrypt_sectors(&mut b, offset, unit).expect("portable");
        prop_assert!(a == b, "encrypt differs");
        fast.decrypt_sectors(&mut a, offset, unit).expect("fast");
        prop_assert!(a == plain, "round trip");
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        pool.install(|| fast.par_sectors(&mut b, offset, unit, Direction::Decrypt)).expect("par");
        prop_assert!(b == plain, "parallel decrypt");
    }

    #[test]
    fn units_of_any_block_count_agree(key in distinct_key(), blocks in 1usize..600,
                                      tweak in any::<[u8; 16]>(), seed in any::<u8>()) {
        // Whole groups of 16 blocks take the fast path, other lengths the portable one.
        let plain: Vec<u8> = (0..blocks * 16).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        let (fast, portable) = pair(&key);
        let mut a = plain.clone();
        let mut b = plain.clone();
        fast.encrypt_unit(&mut a, &tweak).expect("fast");
        portable.encrypt_unit(&mut b, &tweak).expect("portable");
        prop_assert!(a == b, "encrypt differs at {} blocks", blocks);
        fast.decrypt_unit(&mut a, &tweak).expect("fast");
        portable.decrypt_unit(&mut b, &tweak).expect("portable");
        prop_assert!(a == plain && b == plain);
    }
}

#[test]
fn tweaks_with_every_top_bit_pattern_agree() {
    // Encrypted tweaks are random, so the reductions are exercised; this also walks raw
    // tweaks across 2^64 and 2^128 - 1 explicitly.
    let mut key = [0u8; 64];
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    let (fast, portable) = pair(&key);
    for raw in [
        0u128,
        1,
        u64::MAX as u128,
        1 << 64,
        u128::MAX,
        u128::MAX - 7,
    ] {
        let mut a = vec![0xa5u8; 4096];
        let mut b = a.clone();
        fast.encrypt_unit(&mut a, &raw.to_le_bytes()).expect("fast");
        portable
            .encrypt_unit(&mut b, &raw.to_le_bytes())
            .expect("portable");
        assert!(a == b, "raw tweak {raw:#x}");
    }
}

#[test]
fn fuzz_corpus_replays() {
    // fuzz/corpus/xts_backends, grown by `cargo fuzz run xts_backends`: the same check as the
    // fuzz target, on every input it kept.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/xts_backends");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus is committed") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        if data.len() < 96 {
            continue;
        }
        let key: [u8; 64] = data[..64].try_into().expect("64 bytes");
        let tweak: [u8; 16] = data[64..80].try_into().expect("16 bytes");
        let body = &data[80..];
        let unit = &body[..body.len() / 16 * 16];
        let (Ok(fast), Ok(portable)) = (
            Xts::with_backend(&key, Backend::Vaes),
            Xts::with_backend(&key, Backend::Portable),
        ) else {
            continue;
        };
        let mut a = unit.to_vec();
        let mut b = unit.to_vec();
        fast.encrypt_unit(&mut a, &tweak).expect("whole blocks");
        portable.encrypt_unit(&mut b, &tweak).expect("whole blocks");
        assert_eq!(a, b);
        n += 1;
    }
    assert!(n >= 10, "only {n} corpus inputs replayed");
}
