//! The Q8_K activation quantiser (the dot type of every k-quant), bit for
//! bit as candle-core 0.10.2's `BlockQ8K::from_float`, in AVX2.
//!
//! Decode quantises each activation row on one thread before the matrix
//! product's parallel region starts; candle's scalar loop (a branch per
//! value to find the largest magnitude) was ~2 % of a decode step.
//!
//! Per block of 256: `max` is the first value of the largest magnitude,
//! `iscale = −128 / max`, `q = min(round(iscale · x), 127)` with rounding
//! half away from zero (`f32::round`), `bsums` the sums of 16 codes,
//! `d = 1 / iscale`. A block whose largest magnitude is zero, not finite or
//! so small that `iscale` overflows, or that holds a NaN, goes through the
//! scalar reference (the same code as candle's).

use super::reference;

/// Bytes of one Q8_K block: `d: f32, qs: [i8; 256], bsums: [i16; 16]`.
const BLOCK_BYTES: usize = 292;

/// Quantises `x` (a multiple of 256 values) into Q8_K blocks in `out`.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    #[cfg(all(target_feature = "avx2", target_feature = "fma"))]
    {
        // SAFETY: compiled only with AVX2 and FMA enabled (x86-64-v3), so
        // the CPU running the code has them.
        unsafe { avx2::quantize(x, out) }
    }
    #[cfg(not(all(target_feature = "avx2", target_feature = "fma")))]
    reference::quantize_row_q8_k(x, out);
}

#[cfg(all(target_feature = "avx2", target_feature = "fma"))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{reference, BLOCK_BYTES};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn load8(x: &[f32; 256], at: usize) -> __m256 {
        let s = &x[at..at + 8];
        // SAFETY: `s` holds 8 readable f32; loadu has no alignment requirement.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// `round(iscale · x)` (half away from zero), capped at 127, as i32.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn codes(iscale: __m256, x: __m256) -> __m256i {
        let v = _mm256_mul_ps(iscale, x);
        let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        // v − trunc(v) is exact; |frac| ≥ 0.5 rounds away from zero.
        let frac = _mm256_sub_ps(v, t);
        let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
        let one = _mm256_or_ps(_mm256_set1_ps(1.0), sign);
        let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), frac);
        let up = _mm256_cmp_ps::<_CMP_GE_OQ>(abs, _mm256_set1_ps(0.5));
        let r = _mm256_add_ps(t, _mm256_and_ps(up, one));
        _mm256_cvttps_epi32(_mm256_min_ps(r, _mm256_set1_ps(127.0)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn quantize(x: &[f32], out: &mut [u8]) {
        let xs = x.as_chunks::<256>().0;
        let ys = out.as_chunks_mut::<BLOCK_BYTES>().0;
        let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        for (x, y) in xs.iter().zip(ys) {
            // The largest magnitude; NaN lanes never win (maxps returns its
            // second operand when either is NaN), as `amax < x.abs()` skips them.
            let mut m = _mm256_setzero_ps();
            let mut nan = _mm256_setzero_ps();
            for i in 0..32 {
                let v = load8(x, 8 * i);
                m = _mm256_max_ps(_mm256_and_ps(v, absmask), m);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
            }
            let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            let amax = _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
            // candle's `round().min(127.) as i8` turns a NaN into 127 and
            // saturates infinities; the scalar loop does the same.
            if amax == 0.0 || !amax.is_finite() || _mm256_movemask_ps(nan) != 0 {
                reference::quantize_row_q8_k(x, y);
                continue;
            }
            // The first value of that magnitude (its sign decides iscale's).
            let want = _mm256_set1_ps(amax);
            let mut max = amax;
            for i in 0..32 {
                let v = load8(x, 8 * i);
                let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                    _mm256_and_ps(v, absmask),
                    want,
                ));
                if hit != 0 {
                    max = x[8 * i + hit.trailing_zeros() as usize];
                    break;
                }
            }
            let iscale = -128.0 / max;
            if !iscale.is_finite() {
                // A tiny largest magnitude: candle's casts saturate.
                reference::quantize_row_q8_k(x, y);
                continue;
            }
            let vs = _mm256_set1_ps(iscale);
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            let mut sums = [0i16; 16];
            for j in 0..8 {
                let q: [__m256i; 4] = std::array::from_fn(|c| codes(vs, load8(x, 32 * j + 8 * c)));
                // Both halves of 16 codes: |sum| ≤ 16 · 128 fits i16.
                sums[2 * j] = hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16;
                sums[2 * j + 1] = hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16;
                let p = _mm256_packs_epi16(
                    _mm256_packs_epi32(q[0], q[1]),
                    _mm256_packs_epi32(q[2], q[3]),
                );
                let p = _mm256_permutevar8x32_epi32(p, order);
                let dst = &mut y[4 + 32 * j..4 + 32 * j + 32];
                // SAFETY: `dst` holds 32 writable bytes; storeu has no
                // alignment requirement.
                unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), p) };
            }
            y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
            for (b, s) in y[260..].chunks_exact_mut(2).zip(sums) {
                b.copy_from_slice(&s.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::super::reference::{self as r, SplitMix};
    use super::quantize_row_q8_k;

    /// Bytes equal to the scalar quantiser's (candle's loop) on blocks that
    /// probe each rule: ties of the rounding, ± the same largest magnitude
    /// (the first decides), zero, NaN, infinity, subnormals, +128 codes.
    #[test]
    fn same_bytes_as_candle() {
        let mut rng = SplitMix(3);
        let noise = |rng: &mut SplitMix, s: f32| -> Vec<f32> {
            (0..256).map(|_| (rng.uniform() - 0.5) * s).collect()
        };
        let mut cases: Vec<(&str, Vec<f32>)> = vec![
            ("noise", noise(&mut rng, 2.0)),
            ("large", noise(&mut rng, 3e4)),
            ("zero", vec![0.0; 256]),
            ("tiny", noise(&mut rng, 1e-38)),
        ];
        // max −128 → iscale 1: every k + 0.5 is an exact tie.
        let ties: Vec<f32> = (0..256)
            .map(|i| if i == 0 { -128.0 } else { i as f32 - 128.5 })
            .collect();
        cases.push(("ties", ties));
        let mut pm = noise(&mut rng, 1.0);
        pm[10] = -4.0;
        pm[200] = 4.0;
        cases.push(("minus first", pm.clone()));
        pm[10] = 4.0;
        pm[200] = -4.0;
        cases.push(("plus first", pm));
        let mut nan = noise(&mut rng, 1.0);
        nan[7] = f32::NAN;
        cases.push(("nan", nan));
        let mut inf = noise(&mut rng, 1.0);
        inf[9] = f32::INFINITY;
        cases.push(("infinity", inf));
        let mut pos = noise(&mut rng, 1.0);
        pos[3] = 9.0;
        cases.push(("positive max (+128 capped)", pos));
        // Several blocks in one row.
        let row: Vec<f32> = cases.iter().flat_map(|(_, x)| x.clone()).collect();
        cases.push(("all in one row", row));
        for (what, x) in &cases {
            let n = x.len() / 256 * 292;
            let mut want = vec![0u8; n];
            let mut got = vec![0u8; n];
            r::quantize_row_q8_k(x, &mut want);
            quantize_row_q8_k(x, &mut got);
            assert_eq!(got, want, "{what}");
        }
    }
}
