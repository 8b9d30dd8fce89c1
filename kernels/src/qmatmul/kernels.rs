//! Micro-kernels on raw ggml blocks: AVX2 on x86-64-v3, scalar elsewhere.
//!
//! Every kernel computes, per block, the same exact integer sum as ggml's
//! `vec_dot` and then scales it in f32; only the order of the f32 additions
//! differs from candle's.
//!
//! Layouts (little endian, `repr(C)` without padding):
//! * Q8_0 (34 B): `d: f16, qs: [i8; 32]`.
//! * Q8_1 (36 B): `d: f16, s: f16 (= d · Σqs), qs: [i8; 32]`.
//! * Q8_K (292 B): `d: f32, qs: [i8; 256], bsums: [i16; 16]` (sums of 16).
//! * Q4_0 (18 B): `d: f16, qs: [u8; 16]`; value `j` is the low nibble of
//!   `qs[j]`, value `j + 16` the high nibble; `x = d · (q − 8)`.
//! * Q4_1 (20 B): `d, m: f16, qs: [u8; 16]` as Q4_0; `x = d · q + m`.
//! * Q5_0 (22 B): `d: f16, qh: u32, qs: [u8; 16]`; bit `e` of `qh` is bit 4
//!   of value `e`; `x = d · (q − 16)`.
//! * Q4_K (144 B): `d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`; eight
//!   sub-blocks of 32 with 6-bit scale `sc` and min `mn` packed in `scales`;
//!   64 values per 32 bytes of `qs` (low nibbles the first 32, high nibbles
//!   the next 32); `x = d · sc · q − dmin · mn`.

#[cfg(all(target_feature = "avx2", target_feature = "fma"))]
mod avx2;
pub(crate) mod scalar;

use super::{wtype, Tile};

/// A weight type with a micro-kernel and its blocks per row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kernel {
    Q4_0(usize),
    Q4_1(usize),
    Q5_0(usize),
    Q8_0(usize),
    Q4K(usize),
}

impl Kernel {
    /// The kernel of `wtype` for rows of `nb` blocks, if there is one.
    pub(crate) fn for_type(wtype: u32, nb: usize) -> Option<Self> {
        Some(match wtype {
            wtype::Q4_0 => Self::Q4_0(nb),
            wtype::Q4_1 => Self::Q4_1(nb),
            wtype::Q5_0 => Self::Q5_0(nb),
            wtype::Q8_0 => Self::Q8_0(nb),
            wtype::Q4_K => Self::Q4K(nb),
            _ => return None,
        })
    }
}

#[cfg(all(target_feature = "avx2", target_feature = "fma"))]
use avx2 as isa;
#[cfg(not(all(target_feature = "avx2", target_feature = "fma")))]
use scalar as isa;

impl Tile for Kernel {
    fn tile<const R: usize, const C: usize>(
        &self,
        w: [&[u8]; R],
        a: [&[u8]; C],
        out: &mut [[f32; R]; C],
    ) {
        match *self {
            Self::Q4_0(nb) => isa::q4_0(w, a, out, nb),
            Self::Q4_1(nb) => isa::q4_1(w, a, out, nb),
            Self::Q5_0(nb) => isa::q5_0(w, a, out, nb),
            Self::Q8_0(nb) => isa::q8_0(w, a, out, nb),
            Self::Q4K(nb) => isa::q4_k(w, a, out, nb),
        }
    }

    fn rows(&self, w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
        match *self {
            #[cfg(all(
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "f16c"
            ))]
            Self::Q4K(nb) => avx2::q4_k_rows(w, a, out, nb),
            _ => super::rows_by_tile(self, w, row_bytes, a, out),
        }
    }
}

/// One dot product through the 1 × 1 micro-kernel of `wtype` (the weight
/// row and the activation row in candle's VecDotType); `None` for a type
/// without a micro-kernel or rows of mismatched lengths.
pub fn kernel_dot(wtype: u32, w: &[u8], a: &[u8]) -> Option<f32> {
    let g = super::geometry(wtype)?;
    if !w.len().is_multiple_of(g.wbytes) {
        return None;
    }
    let nb = w.len() / g.wbytes;
    if a.len() != nb * g.abytes {
        return None;
    }
    let k = Kernel::for_type(wtype, nb)?;
    let mut out = [[0f32; 1]; 1];
    k.tile([w], [a], &mut out);
    Some(out[0][0])
}

/// The little-endian f16 `[lo, hi]` as f32.
#[inline(always)]
pub(crate) fn f16le(lo: u8, hi: u8) -> f32 {
    half::f16::from_le_bytes([lo, hi]).to_f32()
}

/// Q4_K's eight 6-bit scales and eight 6-bit mins from its 12 packed bytes.
#[inline(always)]
pub(crate) fn q4k_scales(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = q[j] & 63;
        mn[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0xF) | ((q[j] >> 6) << 4);
        mn[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (sc, mn)
}
