//! Plain reference code for tests and benchmarks (and the hook's own
//! checks): ggml's activation quantisers (as candle-core 0.10.2 writes them),
//! dequantisers of the weight types with micro-kernels, a scalar dot, and
//! random valid weight blocks. Not used on the inference path.

use half::f16;

use super::{geometry, kernels, wtype};

fn put_f16(out: &mut [u8], at: usize, v: f32) {
    out[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn get_f16(b: &[u8], at: usize) -> f32 {
    kernels::f16le(b[at], b[at + 1])
}

/// Quantises `x` (a multiple of 256 values) to Q8_K blocks in `out`
/// (292 bytes each): `d = max / −128`, `q = min(round(x / d), 127)`, bsums.
pub fn quantize_row_q8_k(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            y.fill(0);
            continue;
        }
        let iscale = -128.0 / max;
        for (q, &v) in y[4..260].iter_mut().zip(x) {
            *q = (iscale * v).round().min(127.0) as i8 as u8;
        }
        for j in 0..16 {
            let s: i32 = y[4 + 16 * j..4 + 16 * j + 16]
                .iter()
                .map(|&q| i32::from(q as i8))
                .sum();
            y[260 + 2 * j..262 + 2 * j].copy_from_slice(&(s as i16).to_le_bytes());
        }
        y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// Quantises `x` (a multiple of 32 values) to Q8_0 blocks (34 bytes each):
/// `d = amax / 127`, `q = round(x / d)`.
pub fn quantize_row_q8_0(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        for (q, &v) in y[2..].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

/// Quantises `x` (a multiple of 32 values) to Q8_1 blocks (36 bytes each):
/// as Q8_0, plus `s = f16(Σq) · d` rounded to f16 (candle's order).
pub fn quantize_row_q8_1(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(36)) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        let mut sum = 0i32;
        for (q, &v) in y[4..].iter_mut().zip(x) {
            let v = (v * id).round() as i8;
            sum += i32::from(v);
            *q = v as u8;
        }
        let d16 = f16::from_f32(d);
        let s = f16::from_f32(sum as f32) * d16;
        y[2..4].copy_from_slice(&s.to_le_bytes());
    }
}

/// A row quantiser: f32 values → activation blocks.
pub type QuantizeRow = fn(&[f32], &mut [u8]);

/// The activation quantiser (candle's VecDotType) of a weight type with a
/// micro-kernel, with its block bytes and alignment.
pub fn act_quantizer(wt: u32) -> Option<(QuantizeRow, usize, usize)> {
    Some(match wt {
        wtype::Q4_0 | wtype::Q5_0 | wtype::Q8_0 => {
            (quantize_row_q8_0 as fn(&[f32], &mut [u8]), 34, 2)
        }
        wtype::Q4_1 => (quantize_row_q8_1, 36, 2),
        wtype::Q4_K => (quantize_row_q8_k, 292, 4),
        _ => return None,
    })
}

/// Dequantises one activation row (Q8_0, Q8_1 or Q8_K by `block_bytes`
/// 34/36/292) to f64. Q8_1's `s` is not needed: it is `d · Σq` up to f16.
pub fn dequantize_act(row: &[u8], block_bytes: usize) -> Vec<f64> {
    let mut v = Vec::new();
    for y in row.chunks_exact(block_bytes) {
        let (d, qs) = match block_bytes {
            34 => (f64::from(get_f16(y, 0)), &y[2..34]),
            36 => (f64::from(get_f16(y, 0)), &y[4..36]),
            _ => (
                f64::from(f32::from_le_bytes([y[0], y[1], y[2], y[3]])),
                &y[4..260],
            ),
        };
        v.extend(qs.iter().map(|&q| d * f64::from(q as i8)));
    }
    v
}

/// Dequantises one weight row of a type with a micro-kernel to f64.
pub fn dequantize_weights(wt: u32, row: &[u8]) -> Option<Vec<f64>> {
    let g = geometry(wt)?;
    let mut v = Vec::new();
    for x in row.chunks_exact(g.wbytes) {
        let d = f64::from(get_f16(x, 0));
        match wt {
            wtype::Q8_0 => v.extend(x[2..].iter().map(|&q| d * f64::from(q as i8))),
            wtype::Q4_0 | wtype::Q4_1 | wtype::Q5_0 => {
                let (qs, qh, off) = match wt {
                    wtype::Q4_0 => (&x[2..18], 0u32, 8.0),
                    wtype::Q4_1 => (&x[4..20], 0, 0.0),
                    _ => (
                        &x[6..22],
                        u32::from_le_bytes([x[2], x[3], x[4], x[5]]),
                        16.0,
                    ),
                };
                let m = if wt == wtype::Q4_1 {
                    f64::from(get_f16(x, 2))
                } else {
                    0.0
                };
                let code = |e: usize| {
                    let nib = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
                    f64::from(u32::from(nib) | (((qh >> e) & 1) << 4))
                };
                v.extend((0..32).map(|e| d * (code(e) - off) + m));
            }
            wtype::Q4_K => {
                let dmin = f64::from(get_f16(x, 2));
                let mut packed = [0u8; 12];
                packed.copy_from_slice(&x[4..16]);
                let (sc, mn) = kernels::q4k_scales(&packed);
                for j in 0..8 {
                    let chunk = &x[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
                    for &b in chunk {
                        let q = if j % 2 == 0 { b & 0xF } else { b >> 4 };
                        v.push(d * f64::from(sc[j]) * f64::from(q) - dmin * f64::from(mn[j]));
                    }
                }
            }
            _ => return None,
        }
    }
    Some(v)
}

/// Scalar dot (ggml's per-block integer sums) of one weight row and one
/// activation row, for a type with a micro-kernel.
pub fn dot_scalar(wt: u32, w: &[u8], a: &[u8]) -> Option<f32> {
    let g = geometry(wt)?;
    kernels::scalar::dot(wt, w, a, w.len() / g.wbytes)
}

/// SplitMix64: a tiny seeded generator (no dependency).
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `n` rows of `k` values of random valid blocks of `wt` (random bytes,
/// finite f16 scales around `scale`).
pub fn random_weights(
    wt: u32,
    k: usize,
    n: usize,
    scale: f32,
    rng: &mut SplitMix,
) -> Option<Vec<u8>> {
    let g = geometry(wt)?;
    if !k.is_multiple_of(g.block) {
        return None;
    }
    let mut out = vec![0u8; n * (k / g.block) * g.wbytes];
    for x in out.chunks_exact_mut(g.wbytes) {
        for b in x.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        // The f16 fields: d (and m / dmin) at 0 and 2; Q6_K's d at the end.
        let fields: &[usize] = match wt {
            wtype::Q4_1 | wtype::Q5_1 | wtype::Q4_K | wtype::Q5_K => &[0, 2],
            wtype::Q2_K => &[80, 82],
            wtype::Q3_K => &[108],
            wtype::Q6_K => &[208],
            _ => &[0],
        };
        for &at in fields {
            let v = scale * rng.uniform();
            put_f16(x, at, v);
        }
    }
    Some(out)
}
