//! The batched engine against the xts-mode crate's block-at-a-time reference, over random keys,
//! sector numbers, lengths and thread counts.

use aes08::Aes256;
use aes08::cipher::KeyInit;
use proptest::prelude::*;
use vmcrypt_xts::{Direction, SectorSize, Xts};
use xts_mode::{Xts128, get_tweak_default};

fn reference(key: &[u8; 64]) -> Xts128<Aes256> {
    Xts128::new(
        Aes256::new_from_slice(&key[..32]).expect("32-byte key"),
        Aes256::new_from_slice(&key[32..]).expect("32-byte key"),
    )
}

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

fn unit_size() -> impl Strategy<Value = SectorSize> {
    prop_oneof![Just(SectorSize::S512), Just(SectorSize::S4096)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sectors_match_reference(key in distinct_key(), unit in unit_size(), first in 0u64..(1 << 40),
                               units in 1usize..24, seed in any::<u8>()) {
        let u = unit.bytes();
        let plain: Vec<u8> = (0..units * u).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let offset = first * u as u64;
        let mut ours = plain.clone();
        Xts::new(&key).expect("key").encrypt_sectors(&mut ours, offset, unit).expect("encrypt");
        let mut theirs = plain.clone();
        let per_unit = (u / 512) as u128;
        reference(&key).encrypt_area(&mut theirs, u, (offset / 512) as u128 / per_unit, |n| get_tweak_default(n * per_unit));
        prop_assert_eq!(&ours, &theirs);
        Xts::new(&key).expect("key").decrypt_sectors(&mut ours, offset, unit).expect("decrypt");
        prop_assert_eq!(ours, plain);
    }

    #[test]
    fn units_of_any_block_count_match_reference(key in distinct_key(), blocks in 1usize..1200,
                                                tweak in any::<[u8; 16]>()) {
        let plain: Vec<u8> = (0..blocks * 16).map(|i| (i * 7) as u8).collect();
        let mut ours = plain.clone();
        Xts::new(&key).expect("key").encrypt_unit(&mut ours, &tweak).expect("encrypt");
        let mut theirs = plain.clone();
        reference(&key).encrypt_sector(&mut theirs, tweak);
        prop_assert_eq!(&ours, &theirs);
        Xts::new(&key).expect("key").decrypt_unit(&mut ours, &tweak).expect("decrypt");
        prop_assert_eq!(ours, plain);
    }

    #[test]
    fn output_independent_of_threads_and_chunking(key in distinct_key(), unit in unit_size(),
                                                  units in 1usize..700, split in 0usize..700) {
        let u = unit.bytes();
        let plain: Vec<u8> = (0..units * u).map(|i| (i % 251) as u8).collect();
        let xts = Xts::new(&key).expect("key");
        let mut one = plain.clone();
        xts.encrypt_sectors(&mut one, 0, unit).expect("sequential");
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            let mut par = plain.clone();
            pool.install(|| xts.par_sectors(&mut par, 0, unit, Direction::Encrypt)).expect("parallel");
            prop_assert_eq!(&par, &one);
        }
        // Two calls at a unit boundary give the same bytes as one call.
        let cut = (split % units) * u;
        let mut two = plain.clone();
        let (a, b) = two.split_at_mut(cut);
        xts.encrypt_sectors(a, 0, unit).expect("first part");
        xts.encrypt_sectors(b, cut as u64, unit).expect("second part");
        prop_assert_eq!(two, one);
    }
}
