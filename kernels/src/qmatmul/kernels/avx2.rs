//! AVX2 micro-kernels: `R` weight rows × `C` activation rows per call, the
//! weight bytes decoded once per block and reused for every activation row.
//!
//! Integer products use `maddubs` (u8 × i8 → pairs of i16) and `madd`
//! (i16 pairs → i32); per block the i32 lanes are exact. Weight bytes and
//! activation bytes are read with unaligned loads.

use std::arch::x86_64::*;

use super::f16le;

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

/// Q4_K's eight 6-bit scales (low u64) and eight 6-bit mins (high u64), one
/// per byte, from its 12 packed bytes (word-wise: the same split as
/// `kernels::q4k_scales`, which the tests compare it with).
#[inline(always)]
pub(crate) fn q4k_scales_words(q: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([q[i], q[i + 1], q[i + 2], q[i + 3]]);
    let (a, b, c) = (word(0), word(4), word(8));
    let sc_lo = a & 0x3f3f_3f3f;
    let mn_lo = b & 0x3f3f_3f3f;
    let sc_hi = (c & 0x0f0f_0f0f) | (((a >> 6) & 0x0303_0303) << 4);
    let mn_hi = ((c >> 4) & 0x0f0f_0f0f) | (((b >> 6) & 0x0303_0303) << 4);
    (
        u64::from(sc_lo) | (u64::from(sc_hi) << 32),
        u64::from(mn_lo) | (u64::from(mn_hi) << 32),
    )
}

/// Blocks ahead a weight row is prefetched (decode reads several rows at
/// once, which the hardware prefetcher follows badly).
const PREFETCH_BLOCKS: usize = 4;

/// Prefetches the cache lines of one block into L1.
#[inline(always)]
fn prefetch<const N: usize>(block: &[u8; N]) {
    let p = block.as_ptr();
    let mut off = 0;
    while off < N {
        // SAFETY: `off < N`, so the address is inside `block`; a prefetch
        // never faults and has no architectural effect.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off).cast::<i8>()) };
        off += 64;
    }
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
    // Float accumulators across blocks: one horizontal sum per output at the end.
    let mut acc = [[_mm256_setzero_ps(); R]; C];
    // The mins' term, 4 lanes per output (summed into `acc` at the end).
    let mut macc = [[_mm_setzero_ps(); R]; C];
    for b in 0..nb {
        let mut sc = [0u64; R];
        let mut mn = [_mm_setzero_si128(); R];
        let mut wd = [0f32; R];
        let mut wdmin = [0f32; R];
        for r in 0..R {
            let x = &wb[r][b];
            if b + PREFETCH_BLOCKS < nb {
                prefetch(&wb[r][b + PREFETCH_BLOCKS]);
            }
            wd[r] = f16le(x[0], x[1]);
            wdmin[r] = f16le(x[2], x[3]);
            let (s, m) = q4k_scales_words(&x[4..16]);
            sc[r] = s;
            // The eight mins as i16 lanes.
            mn[r] = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(m as i64));
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
                let slo = _mm256_set1_epi16(((sc[r] >> (16 * chunk)) & 0xff) as i16);
                let shi = _mm256_set1_epi16(((sc[r] >> (16 * chunk + 8)) & 0xff) as i16);
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
            // bsums: 16 sums of 16 values; pairwise → the 8 sub-block sums.
            let bs = load32(y, 260);
            let bsub = _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            );
            for r in 0..R {
                let d = _mm256_set1_ps(wd[r] * yd);
                acc[c][r] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(iacc[c][r]), acc[c][r]);
                let msum = _mm_cvtepi32_ps(_mm_madd_epi16(mn[r], bsub));
                macc[c][r] = _mm_fmadd_ps(_mm_set1_ps(-wdmin[r] * yd), msum, macc[c][r]);
            }
        }
    }
    for c in 0..C {
        for r in 0..R {
            // Both halves of `acc` plus the four lanes of the mins' term.
            let v = _mm_add_ps(
                _mm_add_ps(
                    _mm256_castps256_ps128(acc[c][r]),
                    _mm256_extractf128_ps::<1>(acc[c][r]),
                ),
                macc[c][r],
            );
            let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
            out[c][r] = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
        }
    }
}

/// Decode: `out.len()` consecutive Q4_K weight rows of `nb` blocks (`w`)
/// against one Q8_K activation row `a`, in one pass through the weights.
pub(crate) fn q4_k_rows(w: &[u8], a: &[u8], out: &mut [f32], nb: usize) {
    // SAFETY: this module is compiled only with AVX2, FMA and F16C enabled
    // (x86-64-v3), so the CPU running the code has them.
    unsafe { q4_k_rows_impl(w, a, out, nb) }
}

/// `_mm256_shuffle_epi8` masks that broadcast i16 lane `j` (of the eight
/// scales, repeated in both 128-bit halves) to every i16 lane.
const fn scale_shuffle(j: usize) -> [u8; 32] {
    let mut m = [0u8; 32];
    let mut e = 0;
    while e < 32 {
        m[e] = (2 * j + (e & 1)) as u8;
        e += 1;
    }
    m
}

const SCALE_SHUFFLE: [[u8; 32]; 8] = [
    scale_shuffle(0),
    scale_shuffle(1),
    scale_shuffle(2),
    scale_shuffle(3),
    scale_shuffle(4),
    scale_shuffle(5),
    scale_shuffle(6),
    scale_shuffle(7),
];

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k_rows_impl(w: &[u8], a: &[u8], out: &mut [f32], nb: usize) {
    let ab = a.as_chunks::<292>().0;
    let blocks = w.as_chunks::<144>().0;
    if ab.len() < nb || blocks.len() < out.len() * nb {
        // The driver sizes both from the same geometry; nothing to do else.
        return;
    }
    let m4 = _mm256_set1_epi8(0x0F);
    let shuf = SCALE_SHUFFLE.map(|m| load32(&m, 0));
    let base = w.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        let xs = &blocks[r * nb..(r + 1) * nb];
        let mut acc = _mm256_setzero_ps();
        let mut macc = _mm_setzero_ps();
        for (b, (x, y)) in xs.iter().zip(ab).enumerate() {
            // A few blocks ahead in the weight stream (the next row's when
            // this one ends; beyond the last row the address is only
            // computed, a prefetch never faults).
            let ahead = (r * nb + b + PREFETCH_BLOCKS) * 144;
            if ahead < w.len() {
                let p = base.wrapping_add(ahead);
                _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64).cast::<i8>());
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(128).cast::<i8>());
            }
            // d and dmin together: [d, dmin, 0, 0].
            let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
                x[0], x[1], x[2], x[3],
            ])));
            let (s, m) = q4k_scales_words(&x[4..16]);
            let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(s as i64)));
            let mn = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(m as i64));
            let mut iacc = _mm256_setzero_si256();
            for chunk in 0..4 {
                let q = load32(x, 16 + 32 * chunk);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                let slo = _mm256_shuffle_epi8(sc, shuf[2 * chunk]);
                let shi = _mm256_shuffle_epi8(sc, shuf[2 * chunk + 1]);
                let ylo = load32(y, 4 + 64 * chunk);
                let yhi = load32(y, 4 + 64 * chunk + 32);
                // ≤ 15 · 128 · 2 per i16, × 63 × 2 per i32: no overflow.
                let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, ylo), slo);
                let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yhi), shi);
                iacc = _mm256_add_epi32(iacc, _mm256_add_epi32(plo, phi));
            }
            let yd = _mm_set1_ps(f32::from_le_bytes([y[0], y[1], y[2], y[3]]));
            let dy = _mm_mul_ps(dd, yd);
            // bsums: 16 sums of 16 values; pairwise → the 8 sub-block sums.
            let bs = load32(y, 260);
            let bsub = _mm_hadd_epi16(
                _mm256_castsi256_si128(bs),
                _mm256_extracti128_si256::<1>(bs),
            );
            let d = _mm256_broadcastss_ps(dy);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(iacc), acc);
            let msum = _mm_cvtepi32_ps(_mm_madd_epi16(mn, bsub));
            let dmin = _mm_permute_ps::<0b01_01_01_01>(dy);
            macc = _mm_fnmadd_ps(dmin, msum, macc);
        }
        let v = _mm_add_ps(
            _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc)),
            macc,
        );
        let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
        *o = _mm_cvtss_f32(_mm_add_ss(v, _mm_movehdup_ps(v)));
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4k_scales;
    use super::q4k_scales_words;

    #[test]
    fn word_scales_equal_byte_scales() {
        // Every value of each byte position (others varied by a simple LCG).
        let mut x = 0x1234_5678u32;
        for pos in 0..12 {
            for v in 0..=255u8 {
                let mut q = [0u8; 12];
                for b in q.iter_mut() {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *b = (x >> 24) as u8;
                }
                q[pos] = v;
                let (sc, mn) = q4k_scales(&q);
                let (ws, wm) = q4k_scales_words(&q);
                assert_eq!(ws.to_le_bytes(), sc, "scales of {q:?}");
                assert_eq!(wm.to_le_bytes(), mn, "mins of {q:?}");
            }
        }
    }
}
