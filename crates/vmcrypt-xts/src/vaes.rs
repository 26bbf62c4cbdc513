//! The x86-64 fast path: XTS with VAES (two AES blocks per 256-bit instruction), tweaks
//! computed in vector registers with VPCLMULQDQ, 16 blocks in flight per round.
//!
//! Only compiled for x86-64 and only used after run-time detection of AES-NI, AVX2, VAES and
//! VPCLMULQDQ ([`Vaes::detect`]). It must produce exactly the bytes of the portable path: the
//! differential tests and the `xts_backends` fuzz target compare the two.
//!
//! How a data unit is processed: its encrypted tweak `T` gives the first 16 tweaks `T·α^j`
//! (`j` = 0..16) in eight registers of two lanes each; every group of 16 blocks is XORed with
//! them, run through the 14 rounds with all eight registers interleaved (VAES has a latency of
//! several cycles and two units: 16 independent blocks keep both busy), XORed again and
//! stored; then each lane is multiplied by `α^16` (a 2-byte shift and one carry-less multiply
//! of the 16 bits shifted out by the XTS polynomial 0x87) for the next group.
//!
//! This is the only module of the crate with `unsafe` code: the intrinsics that load and store
//! through pointers, and the calls into `#[target_feature]` functions, which are sound only
//! on a CPU that has the features. Each `unsafe` block states why it is sound.
#![allow(unsafe_code)]

use core::arch::x86_64::*;

use zeroize::Zeroize;

/// Bytes per group: 16 AES blocks.
const GROUP: usize = 256;

/// Expanded AES-256 keys for XTS: the data key (encryption and decryption schedules) and the
/// tweak key (encryption only). Stored as bytes so that they can be zeroized on drop.
pub(crate) struct Vaes {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    tweak: [[u8; 16]; 15],
}

impl Drop for Vaes {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.dec.zeroize();
        self.tweak.zeroize();
    }
}

impl Vaes {
    /// Whether this CPU runs the fast path.
    pub(crate) fn detect() -> bool {
        is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("vpclmulqdq")
    }

    /// The key schedules, or None if the CPU lacks a feature.
    pub(crate) fn new(data_key: &[u8; 32], tweak_key: &[u8; 32]) -> Option<Vaes> {
        if !Vaes::detect() {
            return None;
        }
        let mut v = Vaes {
            enc: [[0; 16]; 15],
            dec: [[0; 16]; 15],
            tweak: [[0; 16]; 15],
        };
        // SAFETY: detect() confirmed AES-NI (and SSE2, part of x86-64).
        unsafe {
            expand(data_key, &mut v.enc);
            expand(tweak_key, &mut v.tweak);
            invert(&v.enc, &mut v.dec);
        }
        Some(v)
    }

    /// Whether units of `unit_len` bytes go through this path (whole groups of 16 blocks; the
    /// portable path takes the rest).
    pub(crate) fn handles(unit_len: usize) -> bool {
        unit_len.is_multiple_of(GROUP)
    }

    /// Encrypts or decrypts `data` in place, whole units of `unit_len` bytes (a multiple of
    /// 256), unit `i` under the raw tweak `tweak_of(i)`.
    pub(crate) fn crypt(
        &self,
        data: &mut [u8],
        unit_len: usize,
        tweak_of: impl Fn(usize) -> u128,
        encrypt: bool,
    ) {
        debug_assert!(Vaes::handles(unit_len) && data.len().is_multiple_of(unit_len));
        let p = data.as_mut_ptr();
        // SAFETY: a Vaes exists only after detect() succeeded (see new()); `p` is valid for
        // reads and writes of `data.len()` bytes, and source and destination are the same.
        unsafe { self.crypt_units(p, p, data.len(), unit_len, &tweak_of, encrypt) }
    }

    /// Like [`Vaes::crypt`], out of place: reads `len` bytes at `src`, writes them transformed
    /// at `dst`. Every byte of `src` is loaded once and every byte of `dst` stored once, and
    /// `dst` is never read: memory that another party (a guest) may change while this runs
    /// only gets (or gives) whatever bytes that party put there, the way a device's DMA does.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `len` bytes for the whole call;
    /// the two ranges are the same or do not overlap. `len` is whole units of `unit_len`.
    #[cfg(feature = "guest-memory")]
    pub(crate) unsafe fn crypt_raw(
        &self,
        src: *const u8,
        dst: *mut u8,
        len: usize,
        unit_len: usize,
        tweak_of: impl Fn(usize) -> u128,
        encrypt: bool,
    ) {
        debug_assert!(Vaes::handles(unit_len) && len.is_multiple_of(unit_len));
        // SAFETY: detect() succeeded (a Vaes exists); the caller vouches for the pointers.
        unsafe { self.crypt_units(src, dst, len, unit_len, &tweak_of, encrypt) }
    }

    /// # Safety
    /// As [`Vaes::crypt_raw`], and the CPU has the enabled features.
    #[target_feature(enable = "aes,avx2,vaes,vpclmulqdq")]
    unsafe fn crypt_units(
        &self,
        src: *const u8,
        dst: *mut u8,
        len: usize,
        unit_len: usize,
        tweak_of: &dyn Fn(usize) -> u128,
        encrypt: bool,
    ) {
        let keys = if encrypt { &self.enc } else { &self.dec };
        let rk: [__m256i; 15] = core::array::from_fn(|i| broadcast(&keys[i]));
        let tk: [__m256i; 15] = core::array::from_fn(|i| broadcast(&self.tweak[i]));
        let units = len / unit_len;
        // The tweaks of 16 units are encrypted together, as one group.
        let mut tweaks = [0u8; GROUP];
        let tp = tweaks.as_mut_ptr();
        for first in (0..units).step_by(16) {
            let n = (units - first).min(16);
            for (u, slot) in tweaks.chunks_exact_mut(16).enumerate().take(n) {
                slot.copy_from_slice(&tweak_of(first + u).to_le_bytes());
            }
            // SAFETY: `tweaks` is exactly 256 bytes, read and written in place.
            unsafe { crypt_group(tp, tp, &tk, &[_mm256_setzero_si256(); 8], true) };
            for (u, t) in tweaks.chunks_exact(16).enumerate().take(n) {
                let mut first_tweak = [0u8; 16];
                first_tweak.copy_from_slice(t);
                let mut tw = first_tweaks(load128(&first_tweak));
                first_tweak.zeroize();
                let unit_at = (first + u) * unit_len;
                for g in (0..unit_len).step_by(GROUP) {
                    // SAFETY: unit_at + g + 256 <= units * unit_len <= len, so the group lies
                    // within both ranges the caller vouched for.
                    unsafe {
                        crypt_group(
                            src.add(unit_at + g),
                            dst.add(unit_at + g),
                            &rk,
                            &tw,
                            encrypt,
                        )
                    };
                    for x in &mut tw {
                        *x = mul_alpha16(*x);
                    }
                }
            }
        }
        tweaks.zeroize();
    }
}

/// One group of 16 blocks: XOR the tweaks, 14 rounds, XOR the tweaks; 256 bytes loaded at
/// `src`, then stored at `dst` (which may be `src`).
///
/// # Safety
/// `src` must be valid for reading and `dst` for writing 256 bytes; the CPU must have the
/// enabled features.
#[target_feature(enable = "aes,avx2,vaes,vpclmulqdq")]
unsafe fn crypt_group(
    src: *const u8,
    dst: *mut u8,
    rk: &[__m256i; 15],
    tw: &[__m256i; 8],
    encrypt: bool,
) {
    let s = src.cast::<__m256i>();
    let p = dst.cast::<__m256i>();
    let mut b: [__m256i; 8] = [_mm256_setzero_si256(); 8];
    for i in 0..8 {
        // SAFETY: 8 × 32 bytes lie within the 256 bytes at `src`; unaligned loads are allowed.
        b[i] = _mm256_xor_si256(unsafe { _mm256_loadu_si256(s.add(i)) }, tw[i]);
        b[i] = _mm256_xor_si256(b[i], rk[0]);
    }
    if encrypt {
        for k in &rk[1..14] {
            for x in &mut b {
                *x = _mm256_aesenc_epi128(*x, *k);
            }
        }
        for x in &mut b {
            *x = _mm256_aesenclast_epi128(*x, rk[14]);
        }
    } else {
        for k in &rk[1..14] {
            for x in &mut b {
                *x = _mm256_aesdec_epi128(*x, *k);
            }
        }
        for x in &mut b {
            *x = _mm256_aesdeclast_epi128(*x, rk[14]);
        }
    }
    for i in 0..8 {
        // SAFETY: 8 × 32 bytes lie within the 256 bytes at `dst`; unaligned stores are
        // allowed, and all loads of `src` are done (the two may be the same bytes).
        unsafe { _mm256_storeu_si256(p.add(i), _mm256_xor_si256(b[i], tw[i])) };
    }
}

#[target_feature(enable = "avx2")]
fn broadcast(k: &[u8; 16]) -> __m256i {
    _mm256_broadcastsi128_si256(load128(k))
}

#[target_feature(enable = "sse2")]
fn load128(k: &[u8; 16]) -> __m128i {
    // SAFETY: reads 16 bytes from a 16-byte array; unaligned loads are allowed.
    unsafe { _mm_loadu_si128(k.as_ptr().cast()) }
}

#[target_feature(enable = "sse2")]
fn store128(x: __m128i) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: writes 16 bytes into a 16-byte array.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), x) };
    out
}

/// `x·α` for a 128-bit little-endian tweak (IEEE 1619 5.2), on a scalar copy.
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ (if t >> 127 == 1 { 0x87 } else { 0 })
}

/// The first 16 tweaks of a unit, two per register: `[T·α^2i, T·α^(2i+1)]`. Computed from
/// the first register with independent multiplications (depth two), not a chain of 16.
#[target_feature(enable = "avx2,vpclmulqdq")]
fn first_tweaks(t: __m128i) -> [__m256i; 8] {
    let a = u128::from_le_bytes(store128(t));
    let b = load128(&mul_alpha(a).to_le_bytes());
    let t0 = _mm256_inserti128_si256(_mm256_castsi128_si256(t), b, 1);
    let t1 = mul_alpha_bits(t0, 2);
    let t2 = mul_alpha_bits(t0, 4);
    let t3 = mul_alpha_bits(t0, 6);
    [
        t0,
        t1,
        t2,
        t3,
        mul_alpha_bits(t0, 8),
        mul_alpha_bits(t1, 8),
        mul_alpha_bits(t2, 8),
        mul_alpha_bits(t3, 8),
    ]
}

/// Each 128-bit lane times `α^k`, for `1 <= k <= 56`: a 128-bit shift left by `k`, then the
/// `k` bits shifted out folded back in, multiplied (carry-less) by the XTS polynomial 0x87.
#[target_feature(enable = "avx2,vpclmulqdq")]
fn mul_alpha_bits(x: __m256i, k: i64) -> __m256i {
    let left = _mm256_set1_epi64x(k);
    let right = _mm256_set1_epi64x(64 - k);
    // The low qword's top bits move into the high qword.
    let carry = _mm256_srlv_epi64(_mm256_bslli_epi128(x, 8), right);
    let shifted = _mm256_or_si256(_mm256_sllv_epi64(x, left), carry);
    // The high qword's top bits leave the lane: reduce them.
    let out = _mm256_srlv_epi64(_mm256_bsrli_epi128(x, 8), right);
    let poly = _mm256_set_epi64x(0, 0x87, 0, 0x87);
    _mm256_xor_si256(shifted, _mm256_clmulepi64_epi128(out, poly, 0x00))
}

/// Each 128-bit lane times `α^16`: shift left by 16 bits, then fold the 16 bits shifted out
/// back in, multiplied (carry-less) by the XTS polynomial 0x87.
#[target_feature(enable = "avx2,vpclmulqdq")]
fn mul_alpha16(x: __m256i) -> __m256i {
    let shifted = _mm256_bslli_epi128(x, 2);
    let out = _mm256_bsrli_epi128(x, 14);
    let poly = _mm256_set_epi64x(0, 0x87, 0, 0x87);
    _mm256_xor_si256(shifted, _mm256_clmulepi64_epi128(out, poly, 0x00))
}

/// AES-256 key expansion with AESKEYGENASSIST (FIPS 197, 5.2).
#[target_feature(enable = "aes")]
fn expand(key: &[u8; 32], out: &mut [[u8; 16]; 15]) {
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    lo.copy_from_slice(&key[..16]);
    hi.copy_from_slice(&key[16..]);
    let mut a = load128(&lo);
    let mut b = load128(&hi);
    lo.zeroize();
    hi.zeroize();
    out[0] = store128(a);
    out[1] = store128(b);
    macro_rules! round {
        ($i:expr, $rcon:expr) => {
            a = mix(
                a,
                _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, $rcon), 0xff),
            );
            out[$i] = store128(a);
            b = mix(b, _mm_shuffle_epi32(_mm_aeskeygenassist_si128(a, 0), 0xaa));
            out[$i + 1] = store128(b);
        };
    }
    round!(2, 0x01);
    round!(4, 0x02);
    round!(6, 0x04);
    round!(8, 0x08);
    round!(10, 0x10);
    round!(12, 0x20);
    a = mix(
        a,
        _mm_shuffle_epi32(_mm_aeskeygenassist_si128(b, 0x40), 0xff),
    );
    out[14] = store128(a);
}

/// `k ^ (k << 32) ^ (k << 64) ^ (k << 96) ^ t`: the word chaining of the key schedule.
#[target_feature(enable = "sse2")]
fn mix(k: __m128i, t: __m128i) -> __m128i {
    let mut k = k;
    k = _mm_xor_si128(k, _mm_bslli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_bslli_si128(k, 4));
    k = _mm_xor_si128(k, _mm_bslli_si128(k, 4));
    _mm_xor_si128(k, t)
}

/// The decryption schedule of the equivalent inverse cipher: the encryption round keys in
/// reverse order, the inner ones through InvMixColumns.
#[target_feature(enable = "aes")]
fn invert(enc: &[[u8; 16]; 15], dec: &mut [[u8; 16]; 15]) {
    dec[0] = enc[14];
    for i in 1..14 {
        dec[i] = store128(_mm_aesimc_si128(load128(&enc[14 - i])));
    }
    dec[14] = enc[0];
}
