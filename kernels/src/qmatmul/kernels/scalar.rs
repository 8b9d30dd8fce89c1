//! Portable kernels: ggml's per-block integer sums, one output at a time.
//! The fallback off x86-64-v3, and the scalar dot of [`crate::qmatmul::reference`].

#![cfg_attr(all(target_feature = "avx2", target_feature = "fma"), allow(dead_code))]

use super::{f16le, q4k_scales};

/// Applies `dot` to every (weight row, activation row) pair of the tile.
#[inline(always)]
fn each<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    dot: impl Fn(&[u8], &[u8]) -> f32,
) {
    for (o, a) in out.iter_mut().zip(a) {
        for (o, w) in o.iter_mut().zip(w) {
            *o = dot(w, a);
        }
    }
}

/// Q4_0 × Q8_0 and Q5_0 × Q8_0 (`HIGH`: the 5th bit from `qh`).
fn dot_q4_5_0<const WB: usize, const HIGH: bool>(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let (wb, _) = w.as_chunks::<WB>();
    let (ab, _) = a.as_chunks::<34>();
    let mut sum = 0f32;
    for (x, y) in wb.iter().zip(ab).take(nb) {
        let d = f16le(x[0], x[1]) * f16le(y[0], y[1]);
        let (qh, qs, bias) = if HIGH {
            (u32::from_le_bytes([x[2], x[3], x[4], x[5]]), 6, 16)
        } else {
            (0, 2, 8)
        };
        let mut isum = 0i32;
        for j in 0..16 {
            let b = x[qs + j];
            let lo = i32::from(b & 0xF) | ((((qh >> j) & 1) as i32) << 4);
            let hi = i32::from(b >> 4) | ((((qh >> (j + 16)) & 1) as i32) << 4);
            isum += (lo - bias) * i32::from(y[2 + j] as i8);
            isum += (hi - bias) * i32::from(y[18 + j] as i8);
        }
        sum += isum as f32 * d;
    }
    sum
}

pub(crate) fn q4_0<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    each(w, a, out, |w, a| dot_q4_5_0::<18, false>(w, a, nb));
}

pub(crate) fn q5_0<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    each(w, a, out, |w, a| dot_q4_5_0::<22, true>(w, a, nb));
}

fn dot_q4_1(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let (wb, _) = w.as_chunks::<20>();
    let (ab, _) = a.as_chunks::<36>();
    let mut sum = 0f32;
    for (x, y) in wb.iter().zip(ab).take(nb) {
        let mut isum = 0i32;
        for j in 0..16 {
            let b = x[4 + j];
            isum += i32::from(b & 0xF) * i32::from(y[4 + j] as i8);
            isum += i32::from(b >> 4) * i32::from(y[20 + j] as i8);
        }
        sum += isum as f32 * f16le(x[0], x[1]) * f16le(y[0], y[1])
            + f16le(x[2], x[3]) * f16le(y[2], y[3]);
    }
    sum
}

pub(crate) fn q4_1<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    each(w, a, out, |w, a| dot_q4_1(w, a, nb));
}

fn dot_q8_0(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let (wb, _) = w.as_chunks::<34>();
    let (ab, _) = a.as_chunks::<34>();
    let mut sum = 0f32;
    for (x, y) in wb.iter().zip(ab).take(nb) {
        let mut isum = 0i32;
        for j in 2..34 {
            isum += i32::from(x[j] as i8) * i32::from(y[j] as i8);
        }
        sum += isum as f32 * f16le(x[0], x[1]) * f16le(y[0], y[1]);
    }
    sum
}

pub(crate) fn q8_0<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    each(w, a, out, |w, a| dot_q8_0(w, a, nb));
}

fn dot_q4_k(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let (wb, _) = w.as_chunks::<144>();
    let (ab, _) = a.as_chunks::<292>();
    let mut sum = 0f32;
    for (x, y) in wb.iter().zip(ab).take(nb) {
        let mut scales = [0u8; 12];
        scales.copy_from_slice(&x[4..16]);
        let (sc, mn) = q4k_scales(&scales);
        let mut isum = 0i32;
        for chunk in 0..4 {
            let mut lo = 0i32;
            let mut hi = 0i32;
            for l in 0..32 {
                let b = x[16 + 32 * chunk + l];
                lo += i32::from(b & 0xF) * i32::from(y[4 + 64 * chunk + l] as i8);
                hi += i32::from(b >> 4) * i32::from(y[4 + 64 * chunk + 32 + l] as i8);
            }
            isum += lo * i32::from(sc[2 * chunk]) + hi * i32::from(sc[2 * chunk + 1]);
        }
        let mut msum = 0i32;
        for (j, &m) in mn.iter().enumerate() {
            let bs = |t: usize| i32::from(i16::from_le_bytes([y[260 + 2 * t], y[261 + 2 * t]]));
            msum += i32::from(m) * (bs(2 * j) + bs(2 * j + 1));
        }
        let ad = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        sum += f16le(x[0], x[1]) * ad * isum as f32 - f16le(x[2], x[3]) * ad * msum as f32;
    }
    sum
}

pub(crate) fn q4_k<const R: usize, const C: usize>(
    w: [&[u8]; R],
    a: [&[u8]; C],
    out: &mut [[f32; R]; C],
    nb: usize,
) {
    each(w, a, out, |w, a| dot_q4_k(w, a, nb));
}

/// The scalar dot of one row pair for a type with a kernel (for the
/// reference module): `None` for other types.
pub(crate) fn dot(wtype: u32, w: &[u8], a: &[u8], nb: usize) -> Option<f32> {
    use crate::qmatmul::wtype as t;
    Some(match wtype {
        t::Q4_0 => dot_q4_5_0::<18, false>(w, a, nb),
        t::Q5_0 => dot_q4_5_0::<22, true>(w, a, nb),
        t::Q4_1 => dot_q4_1(w, a, nb),
        t::Q8_0 => dot_q8_0(w, a, nb),
        t::Q4_K => dot_q4_k(w, a, nb),
        _ => return None,
    })
}
