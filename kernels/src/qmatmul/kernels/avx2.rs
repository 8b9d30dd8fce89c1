//! AVX2 micro-kernels: `R` weight rows × `C` activation rows per call, the
//! weight bytes decoded once per block and reused for every activation row.
//!
//! Integer products use `maddubs` (u8 × i8 → pairs of i16) and `madd`
//! (i16 pairs → i32); per block the i32 lanes are exact. Weight bytes and
//! activation bytes are read with unaligned loads.

use std::arch::x86_64::*;

use super::{f16le, q4k_scales};

/// Unaligned 32-byte load from `b[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load32<const N: usize>(b: &[u8; N], at: usize) -> __m256i {
    let s = &b[at..at + 32];
    // SAFETY: `s` holds 32 readable bytes; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Unaligned 16-byte load from `b[at..at + 16]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load16<const N: usize>(b: &[u8; N], at: usize) -> __m128i {
    let s = &b[at..at + 16];
    // SAFETY: `s` holds 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sums the four i32 lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_epi32_128(v: __m128i) -> i32 {
    let s = _mm_add_epi32(v, _mm_shuffle_epi32::<0b01_00_11_10>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_epi32(v: __m256i) -> i32 {
    hsum_epi32_128(_mm_add_epi32(
        _mm256_castsi256_si128(v),
        _mm256_extracti128_si256::<1>(v),
    ))
}

/// 16 bytes of nibbles → 32 values: low nibbles in bytes 0..16, high
/// nibbles in bytes 16..32 (the ggml order of Q4_0/Q4_1/Q5_0).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nibbles(x: __m128i) -> __m256i {
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(x), x);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// 0xFF in byte `e` where bit `e` of `bits` is set.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bit_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    // Byte e takes byte e / 8 of the word (each 128-bit lane has the word).
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask)
}

/// Writes the horizontal sums of the float accumulators.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn store<const R: usize, const C: usize>(acc: &[[__m256; R]; C], out: &mut [[f32; R]; C]) {
    for (o, a) in out.iter_mut().zip(acc) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = hsum_ps(*a);
        }
    }
}

pub(crate) fn q8_0<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    // SAFETY: this module is compiled only with AVX2 and FMA enabled
    // (x86-64-v3), so the CPU running the code has them.
    unsafe { q8_0_impl(w, a, out, nb) }
}

#[target_feature(enable = "avx2,fma")]
fn q8_0_impl<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    let wb = w.map(|w| w.as_chunks::<34>().0);
    let ab = a.map(|a| a.as_chunks::<34>().0);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); R]; C];
    for b in 0..nb {
        let mut wq = [_mm256_setzero_si256(); R];
        let mut wabs = [_mm256_setzero_si256(); R];
        let mut wd = [0f32; R];
        for r in 0..R {
            let x = &wb[r][b];
            wq[r] = load32(x, 2);
            // |−128| = 128 as u8: exact. The activations (Q8_0) are in
            // −127..=127, so the sign transfer below cannot overflow.
            wabs[r] = _mm256_abs_epi8(wq[r]);
            wd[r] = f16le(x[0], x[1]);
        }
        for c in 0..C {
            let y = &ab[c][b];
            let yq = load32(y, 2);
            let yd = f16le(y[0], y[1]);
            for r in 0..R {
                let p16 = _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(yq, wq[r]));
                let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[c][r] = _mm256_fmadd_ps(p, _mm256_set1_ps(wd[r] * yd), acc[c][r]);
            }
        }
    }
    store(&acc, out);
}

/// Q4_0 (`WB` 18, no `HIGH`) and Q5_0 (`WB` 22, `HIGH`) × Q8_0: the
/// unsigned codes `q` against `y`, minus `bias · Σy`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn q4_5_0<const WB: usize, const HIGH: bool, const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    let wb = w.map(|w| w.as_chunks::<WB>().0);
    let ab = a.map(|a| a.as_chunks::<34>().0);
    let ones = _mm256_set1_epi16(1);
    let bias = _mm256_set1_epi8(if HIGH { 16 } else { 8 });
    let mut acc = [[_mm256_setzero_ps(); R]; C];
    for b in 0..nb {
        let mut wq = [_mm256_setzero_si256(); R];
        let mut wd = [0f32; R];
        for r in 0..R {
            let x = &wb[r][b];
            wd[r] = f16le(x[0], x[1]);
            wq[r] = if HIGH {
                let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
                let high = _mm256_and_si256(bit_bytes(qh), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(load16(x, 6)), high)
            } else {
                nibbles(load16(x, 2))
            };
        }
        for c in 0..C {
            let y = &ab[c][b];
            let yq = load32(y, 2);
            let yd = f16le(y[0], y[1]);
            // bias · Σy per i32 lane, shared by the R weight rows.
            let ybias = _mm256_madd_epi16(_mm256_maddubs_epi16(bias, yq), ones);
            for r in 0..R {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], yq), ones);
                let p = _mm256_cvtepi32_ps(_mm256_sub_epi32(p, ybias));
                acc[c][r] = _mm256_fmadd_ps(p, _mm256_set1_ps(wd[r] * yd), acc[c][r]);
            }
        }
    }
    store(&acc, out);
}

pub(crate) fn q4_0<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    // SAFETY: this module is compiled only with AVX2 and FMA enabled
    // (x86-64-v3), so the CPU running the code has them.
    unsafe { q4_5_0::<18, false, R, C>(w, a, out, nb) };
}

pub(crate) fn q5_0<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    // SAFETY: this module is compiled only with AVX2 and FMA enabled
    // (x86-64-v3), so the CPU running the code has them.
    unsafe { q4_5_0::<22, true, R, C>(w, a, out, nb) };
}

pub(crate) fn q4_1<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    // SAFETY: this module is compiled only with AVX2 and FMA enabled
    // (x86-64-v3), so the CPU running the code has them.
    unsafe { q4_1_impl(w, a, out, nb) }
}

#[target_feature(enable = "avx2,fma")]
fn q4_1_impl<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    let wb = w.map(|w| w.as_chunks::<20>().0);
    let ab = a.map(|a| a.as_chunks::<36>().0);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); R]; C];
    // Σ m · s over the blocks (the min term of Q4_1 × Q8_1).
    let mut mins = [[0f32; R]; C];
    for b in 0..nb {
        let mut wq = [_mm256_setzero_si256(); R];
        let mut wd = [0f32; R];
        let mut wm = [0f32; R];
        for r in 0..R {
            let x = &wb[r][b];
            wd[r] = f16le(x[0], x[1]);
            wm[r] = f16le(x[2], x[3]);
            wq[r] = nibbles(load16(x, 4));
        }
        for c in 0..C {
            let y = &ab[c][b];
            let yq = load32(y, 4);
            let yd = f16le(y[0], y[1]);
            let ys = f16le(y[2], y[3]);
            for r in 0..R {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], yq), ones);
                let p = _mm256_cvtepi32_ps(p);
                acc[c][r] = _mm256_fmadd_ps(p, _mm256_set1_ps(wd[r] * yd), acc[c][r]);
                mins[c][r] += wm[r] * ys;
            }
        }
    }
    store(&acc, out);
    for (o, m) in out.iter_mut().zip(&mins) {
        for (o, m) in o.iter_mut().zip(m) {
            *o += m;
        }
    }
}

pub(crate) fn q4_k<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    // SAFETY: this module is compiled only with AVX2 and FMA enabled
    // (x86-64-v3), so the CPU running the code has them.
    unsafe { q4_k_impl(w, a, out, nb) }
}

#[target_feature(enable = "avx2,fma")]
fn q4_k_impl<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    let wb = w.map(|w| w.as_chunks::<144>().0);
    let ab = a.map(|a| a.as_chunks::<292>().0);
    let m4 = _mm256_set1_epi8(0x0F);
    let mut sums = [[0f32; R]; C];
    for b in 0..nb {
        let mut sc = [[0u8; 8]; R];
        let mut mn = [_mm256_setzero_si256(); R];
        let mut wd = [0f32; R];
        let mut wdmin = [0f32; R];
        for r in 0..R {
            let x = &wb[r][b];
            wd[r] = f16le(x[0], x[1]);
            wdmin[r] = f16le(x[2], x[3]);
            let mut packed = [0u8; 12];
            packed.copy_from_slice(&x[4..16]);
            let (s, m) = q4k_scales(&packed);
            sc[r] = s;
            // Each min twice: it weighs the two bsums (of 16) of its sub-block.
            let m = m.map(i16::from);
            mn[r] = _mm256_setr_epi16(
                m[0], m[0], m[1], m[1], m[2], m[2], m[3], m[3], m[4], m[4], m[5], m[5], m[6], m[6],
                m[7], m[7],
            );
        }
        let mut iacc = [[_mm256_setzero_si256(); R]; C];
        for chunk in 0..4 {
            let mut ylo = [_mm256_setzero_si256(); C];
            let mut yhi = [_mm256_setzero_si256(); C];
            for c in 0..C {
                ylo[c] = load32(&ab[c][b], 4 + 64 * chunk);
                yhi[c] = load32(&ab[c][b], 4 + 64 * chunk + 32);
            }
            for r in 0..R {
                let q = load32(&wb[r][b], 16 + 32 * chunk);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                let slo = _mm256_set1_epi16(i16::from(sc[r][2 * chunk]));
                let shi = _mm256_set1_epi16(i16::from(sc[r][2 * chunk + 1]));
                for c in 0..C {
                    // ≤ 15 · 128 · 2 per i16, × 63 × 2 per i32: no overflow.
                    let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo[c]), slo);
                    let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yhi[c]), shi);
                    iacc[c][r] = _mm256_add_epi32(iacc[c][r], _mm256_add_epi32(plo, phi));
                }
            }
        }
        for c in 0..C {
            let y = &ab[c][b];
            let yd = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
            let bsums = load32(y, 260);
            for r in 0..R {
                let isum = hsum_epi32(iacc[c][r]);
                let msum = hsum_epi32(_mm256_madd_epi16(mn[r], bsums));
                sums[c][r] += wd[r] * yd * isum as f32 - wdmin[r] * yd * msum as f32;
            }
        }
    }
    *out = sums;
}
