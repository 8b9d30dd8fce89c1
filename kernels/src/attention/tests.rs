//! Attention kernels against a plain f64 reference:
//! `softmax(q·kᵀ·scale [softcap] + mask)·v` per (batch, head, query row).
//!
//! Tolerances (relative to `max|ref|` of the case):
//! * f32: `|out - ref| <= 1e-4 * max|ref|`;
//! * f16: the same plus one f16 ulp of the reference value
//!   (`2^-10 * |ref|`, floored at the smallest normal's ulp): the output is
//!   rounded to f16 once, inputs are exact f16 values in both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Storage order of one operand: which logical dim (0 batch, 1 position,
/// 2 head) is outermost / middle / inner, plus padding after each
/// `head_dim` row.
#[derive(Debug, Clone, Copy)]
struct Layout {
    order: [usize; 3],
    pad: usize,
}

const BPH: Layout = Layout {
    order: [0, 1, 2],
    pad: 0,
};
/// (batch, head, position): what mistral.rs gets from `transpose(1, 2)` of a
/// contiguous (b, h, s, d) tensor.
const BHP: Layout = Layout {
    order: [0, 2, 1],
    pad: 0,
};
/// Position outermost, padded rows.
const PBH_PAD: Layout = Layout {
    order: [1, 0, 2],
    pad: 5,
};

/// Strided operand of logical shape `dims` × `d`, filled with random values.
struct Operand3 {
    data: Vec<f64>,
    strides: [usize; 3],
}

fn make(rng: &mut ChaCha8Rng, dims: [usize; 3], d: usize, lay: Layout, amp: f64) -> Operand3 {
    let mut strides = [0usize; 3];
    let mut pitch = d + lay.pad;
    for &dim in lay.order.iter().rev() {
        strides[dim] = pitch;
        pitch *= dims[dim];
    }
    // A little slack at the end, never read.
    let mut data = vec![0.0f64; pitch + 3];
    for x in data.iter_mut() {
        *x = rng.random_range(-1.0..1.0) * amp;
    }
    Operand3 { data, strides }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    q_len: usize,
    kv_len: usize,
    h: usize,
    kvh: usize,
    d: usize,
}

const fn c(b: usize, q_len: usize, kv_len: usize, h: usize, kvh: usize, d: usize) -> Case {
    Case {
        b,
        q_len,
        kv_len,
        h,
        kvh,
        d,
    }
}

/// Shapes: prefill (kv == q), chunked prefill (kv > q), decode; head_dim
/// 64 / 128 / 80 / 72; GQA ratios 1, 3, 4.
const CASES: &[Case] = &[
    c(1, 2, 2, 4, 4, 64),
    c(1, 7, 7, 3, 1, 80),
    c(2, 65, 65, 4, 1, 64),
    c(1, 130, 130, 6, 2, 128),
    c(1, 7, 40, 4, 1, 64),
    c(1, 65, 200, 3, 1, 64),
    c(1, 130, 300, 8, 2, 80),
    c(1, 1, 1, 4, 1, 64),
    c(2, 1, 17, 6, 2, 128),
    c(1, 1, 1000, 12, 4, 64),
    c(1, 1, 1000, 3, 1, 80),
    c(1, 2, 17, 4, 4, 72),
    c(1, 3, 1000, 4, 1, 128),
    c(1, 9, 70, 12, 4, 64),
];

struct Inputs {
    q: Operand3,
    k: Operand3,
    v: Operand3,
}

fn inputs(cs: &Case, seed: u64, lays: [Layout; 3], round_f16: bool) -> Inputs {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut q = make(&mut rng, [cs.b, cs.q_len, cs.h], cs.d, lays[0], 3.0);
    let mut k = make(&mut rng, [cs.b, cs.kv_len, cs.kvh], cs.d, lays[1], 1.0);
    let mut v = make(&mut rng, [cs.b, cs.kv_len, cs.kvh], cs.d, lays[2], 1.0);
    for op in [&mut q, &mut k, &mut v] {
        for x in op.data.iter_mut() {
            *x = if round_f16 {
                f16::from_f64(*x).to_f64()
            } else {
                *x as f32 as f64
            };
        }
    }
    Inputs { q, k, v }
}

/// f64 reference, output (b, h, q_len, d).
fn reference(cs: &Case, inp: &Inputs, scale: f64, softcap: Option<f64>, mask: Mask) -> Vec<f64> {
    let g = cs.h / cs.kvh;
    let mut out = vec![0.0f64; cs.b * cs.h * cs.q_len * cs.d];
    let mut s = vec![0.0f64; cs.kv_len];
    for b in 0..cs.b {
        for h in 0..cs.h {
            let kh = h / g;
            for i in 0..cs.q_len {
                let end = match mask {
                    Mask::None => cs.kv_len,
                    Mask::Causal => cs.kv_len - cs.q_len + i + 1,
                };
                let qo = b * inp.q.strides[0] + i * inp.q.strides[1] + h * inp.q.strides[2];
                for (j, sj) in s.iter_mut().enumerate().take(end) {
                    let ko = b * inp.k.strides[0] + j * inp.k.strides[1] + kh * inp.k.strides[2];
                    let dot: f64 = (0..cs.d)
                        .map(|e| inp.q.data[qo + e] * inp.k.data[ko + e])
                        .sum();
                    let x = dot * scale;
                    *sj = match softcap {
                        Some(c) => c * (x / c).tanh(),
                        None => x,
                    };
                }
                let m = s[..end].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let o = &mut out[((b * cs.h + h) * cs.q_len + i) * cs.d..][..cs.d];
                let mut sum = 0.0;
                for (j, sj) in s.iter().enumerate().take(end) {
                    let p = (sj - m).exp();
                    sum += p;
                    let vo = b * inp.v.strides[0] + j * inp.v.strides[1] + kh * inp.v.strides[2];
                    for (e, oe) in o.iter_mut().enumerate() {
                        *oe += p * inp.v.data[vo + e];
                    }
                }
                for oe in o.iter_mut() {
                    *oe /= sum;
                }
            }
        }
    }
    out
}

/// One kernel variant under test.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// The public entry point (production kernels and tuning).
    Public,
    /// Portable kernels, production tuning.
    Portable,
    /// Production kernels with tuning that forces the other paths on small
    /// shapes: prefill for every q_len, tiny KV parts, always parallel, the
    /// given `Q·Kᵀ` form, small query blocks.
    Stress { gemm_qk: bool, decode: bool },
}

fn run_variant<T: Elem>(var: Variant, a: &Attn<'_, T>, out: &mut [T]) -> Result<(), AttnError> {
    match var {
        Variant::Public => attention(a, out),
        Variant::Portable => run::<T, kern::Portable>(a, out, &Tuning::DEFAULT),
        Variant::Stress { gemm_qk, decode } => {
            let t = Tuning {
                decode_max_q: if decode { usize::MAX } else { 0 },
                rows_target: 8,
                gemm_min_rows: if gemm_qk { 1 } else { usize::MAX },
                part_min: 1,
                serial_work: 0,
            };
            run_native(a, out, &t)
        }
    }
}

/// Runs one case in element type `T`; returns the worst error / tolerance.
#[allow(clippy::too_many_arguments)]
fn check<T: Elem + Default>(
    cs: &Case,
    seed: u64,
    lays: [Layout; 3],
    softcap: Option<f32>,
    mask: Mask,
    var: Variant,
    to_t: fn(f64) -> T,
    from_t: fn(T) -> f64,
    is_f16: bool,
) -> f64 {
    let inp = inputs(cs, seed, lays, is_f16);
    let scale = 1.0 / (cs.d as f64).sqrt();
    let scale32 = scale as f32;
    let want = reference(cs, &inp, scale32 as f64, softcap.map(|c| c as f64), mask);
    let q: Vec<T> = inp.q.data.iter().map(|x| to_t(*x)).collect();
    let k: Vec<T> = inp.k.data.iter().map(|x| to_t(*x)).collect();
    let v: Vec<T> = inp.v.data.iter().map(|x| to_t(*x)).collect();
    let a = Attn {
        q: &q,
        q_strides: inp.q.strides,
        k: &k,
        k_strides: inp.k.strides,
        v: &v,
        v_strides: inp.v.strides,
        batch: cs.b,
        q_len: cs.q_len,
        kv_len: cs.kv_len,
        n_heads: cs.h,
        n_kv_heads: cs.kvh,
        head_dim: cs.d,
        scale: scale32,
        softcap,
        mask,
    };
    let mut out = vec![T::default(); want.len()];
    run_variant(var, &a, &mut out).unwrap();
    let maxref = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let mut worst = 0.0f64;
    for (idx, (o, w)) in out.iter().zip(&want).enumerate() {
        let got = from_t(*o);
        let mut tol = 1e-4 * maxref;
        if is_f16 {
            tol += (w.abs() * 2f64.powi(-10)).max(2f64.powi(-24));
        }
        let ratio = (got - w).abs() / tol;
        assert!(
            ratio <= 1.0,
            "{cs:?} {mask:?} softcap {softcap:?} {var:?} f16={is_f16} idx {idx}: got {got}, want {w}, tol {tol}"
        );
        worst = worst.max(ratio);
    }
    worst
}

fn layouts(i: usize) -> [Layout; 3] {
    match i % 3 {
        0 => [BPH, BPH, BPH],
        1 => [BHP, BHP, BHP],
        _ => [PBH_PAD, BHP, PBH_PAD],
    }
}

fn sweep(var: Variant) {
    let mut worst = 0.0f64;
    for (i, cs) in CASES.iter().enumerate() {
        for (mi, mask) in [Mask::None, Mask::Causal].into_iter().enumerate() {
            let softcap = if (i + mi) % 2 == 1 { Some(5.0) } else { None };
            let lays = layouts(i + mi);
            let seed = (i * 4 + mi) as u64;
            worst = worst.max(check::<f32>(
                cs,
                seed,
                lays,
                softcap,
                mask,
                var,
                |x| x as f32,
                |x| x as f64,
                false,
            ));
            worst = worst.max(check::<f16>(
                cs,
                seed + 1000,
                lays,
                softcap,
                mask,
                var,
                f16::from_f64,
                f16::to_f64,
                true,
            ));
        }
    }
    eprintln!("{var:?}: worst error / tolerance {worst:.3}");
}

#[test]
fn public_matches_reference() {
    sweep(Variant::Public);
}

#[test]
fn portable_matches_reference() {
    sweep(Variant::Portable);
}

#[test]
fn forced_paths_match_reference() {
    for gemm_qk in [false, true] {
        for decode in [false, true] {
            sweep(Variant::Stress { gemm_qk, decode });
        }
    }
}

/// Softcap on and off for the same shapes (the sweep alternates it).
#[test]
fn softcap_both_ways() {
    let cs = c(1, 65, 130, 4, 1, 64);
    for softcap in [None, Some(2.0), Some(50.0)] {
        for mask in [Mask::None, Mask::Causal] {
            check::<f32>(
                &cs,
                7,
                layouts(1),
                softcap,
                mask,
                Variant::Public,
                |x| x as f32,
                |x| x as f64,
                false,
            );
        }
    }
}

/// Large logits: the online softmax's running max must keep `exp` in range.
#[test]
fn peaked_scores_stay_finite() {
    let cs = c(1, 70, 200, 2, 1, 64);
    let inp = inputs(&cs, 3, layouts(0), false);
    let q: Vec<f32> = inp.q.data.iter().map(|x| (*x * 40.0) as f32).collect();
    let k: Vec<f32> = inp.k.data.iter().map(|x| *x as f32).collect();
    let v: Vec<f32> = inp.v.data.iter().map(|x| *x as f32).collect();
    for mask in [Mask::None, Mask::Causal] {
        let a = Attn {
            q: &q,
            q_strides: inp.q.strides,
            k: &k,
            k_strides: inp.k.strides,
            v: &v,
            v_strides: inp.v.strides,
            batch: 1,
            q_len: 70,
            kv_len: 200,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 64,
            scale: 1.0,
            softcap: None,
            mask,
        };
        let mut out = vec![0.0f32; 2 * 70 * 64];
        attention(&a, &mut out).unwrap();
        assert!(out.iter().all(|x| x.is_finite() && x.abs() <= 1.0 + 1e-5));
    }
}

/// A valid small call, for the error tests to break one field at a time.
fn valid_call<'a>(q: &'a [f32], k: &'a [f32], v: &'a [f32]) -> Attn<'a, f32> {
    // (b=1, pos=4, heads=2, d=8) contiguous; kv: 4 positions, 1 head.
    Attn {
        q,
        q_strides: [64, 16, 8],
        k,
        k_strides: [32, 8, 8],
        v,
        v_strides: [32, 8, 8],
        batch: 1,
        q_len: 4,
        kv_len: 4,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
        scale: 0.5,
        softcap: None,
        mask: Mask::Causal,
    }
}

#[test]
fn every_error_variant() {
    let q = vec![0.1f32; 64];
    let k = vec![0.2f32; 32];
    let v = vec![0.3f32; 32];
    let mut out = vec![7.0f32; 64];
    let ok = valid_call(&q, &k, &v);
    attention(&ok, &mut out).unwrap();
    assert!(out.iter().all(|x| (x - 0.3).abs() < 1e-6));

    let cases: Vec<(Attn<'_, f32>, usize, AttnError)> = vec![
        (
            Attn {
                n_kv_heads: 0,
                ..ok
            },
            64,
            AttnError::ShapeMismatch {
                n_heads: 2,
                n_kv_heads: 0,
            },
        ),
        (
            Attn {
                n_heads: 3,
                n_kv_heads: 2,
                ..ok
            },
            96,
            AttnError::ShapeMismatch {
                n_heads: 3,
                n_kv_heads: 2,
            },
        ),
        (Attn { head_dim: 0, ..ok }, 0, AttnError::ZeroHeadDim),
        (
            Attn {
                kv_len: 0,
                mask: Mask::None,
                ..ok
            },
            64,
            AttnError::EmptyKv,
        ),
        (
            Attn { kv_len: 3, ..ok },
            64,
            AttnError::CausalQueryLongerThanKv {
                q_len: 4,
                kv_len: 3,
            },
        ),
        (
            Attn {
                scale: f32::NAN,
                ..ok
            },
            64,
            AttnError::NonFiniteScale { scale: f32::NAN },
        ),
        (
            Attn {
                softcap: Some(0.0),
                ..ok
            },
            64,
            AttnError::InvalidSoftcap { softcap: 0.0 },
        ),
        (
            ok,
            63,
            AttnError::OutputLength {
                expected: 64,
                actual: 63,
            },
        ),
        (
            Attn { q: &q[..63], ..ok },
            64,
            AttnError::SliceTooShort {
                which: Operand::Q,
                needed: 64,
                actual: 63,
            },
        ),
        (
            Attn {
                k_strides: [32, 9, 8],
                ..ok
            },
            64,
            AttnError::SliceTooShort {
                which: Operand::K,
                needed: 35,
                actual: 32,
            },
        ),
        (
            Attn { v: &v[..31], ..ok },
            64,
            AttnError::SliceTooShort {
                which: Operand::V,
                needed: 32,
                actual: 31,
            },
        ),
        (
            Attn {
                v_strides: [32, usize::MAX / 2, 8],
                ..ok
            },
            64,
            AttnError::SizeOverflow { which: Operand::V },
        ),
        (
            Attn {
                batch: usize::MAX,
                ..ok
            },
            64,
            AttnError::SizeOverflow {
                which: Operand::Out,
            },
        ),
    ];
    for (a, out_len, want) in cases {
        let mut out = vec![7.0f32; out_len];
        let got = attention(&a, &mut out).unwrap_err();
        // NaN != NaN: compare the Display text, which names the variant's data.
        assert_eq!(got.to_string(), want.to_string(), "{a:?}");
        assert!(!got.to_string().is_empty());
        assert!(out.iter().all(|x| *x == 7.0), "out touched on error");
    }
}

/// Nothing to compute: empty output is fine, even with kv_len 0.
#[test]
fn empty_calls_succeed() {
    let a = valid_call(&[], &[], &[]);
    attention(&Attn { batch: 0, ..a }, &mut []).unwrap();
    attention(
        &Attn {
            q_len: 0,
            kv_len: 0,
            ..a
        },
        &mut [],
    )
    .unwrap();
}

/// Steady-state calls reuse thread-local scratch across shrinking and
/// growing shapes without stale data leaking into results.
#[test]
fn repeated_calls_are_consistent() {
    for _ in 0..2 {
        for cs in [
            c(1, 130, 130, 4, 1, 128),
            c(1, 1, 17, 4, 1, 64),
            c(1, 9, 9, 2, 2, 72),
        ] {
            check::<f16>(
                &cs,
                11,
                layouts(1),
                None,
                Mask::Causal,
                Variant::Public,
                f16::from_f64,
                f16::to_f64,
                true,
            );
        }
    }
}

/// Decode reads K/V in their storage type with register tiles chosen by
/// the row count (1..4 rows per tile, remainders) and head_dim chunks of 8
/// (full, grouped, and a partial last chunk): GQA ratios 1..8 and q_len
/// up to 8 give every row-tile size, head_dims that are not multiples of 8
/// give the partial chunk, kv_len not a multiple of the tile or of the key
/// blocking gives key remainders. Every kernel set and forced path.
#[test]
fn decode_tiles_and_odd_head_dims() {
    let cases = [
        c(1, 1, 37, 2, 1, 36),
        c(1, 1, 130, 5, 1, 20),
        c(2, 1, 67, 8, 1, 4),
        c(1, 1, 300, 12, 4, 100),
        c(1, 2, 65, 6, 3, 12),
        c(1, 5, 90, 4, 2, 44),
        c(1, 8, 129, 8, 2, 64),
        c(1, 1, 1000, 7, 7, 40),
        c(1, 3, 77, 9, 3, 8),
        c(1, 1, 5, 1, 1, 1),
    ];
    let vars = [
        Variant::Public,
        Variant::Portable,
        Variant::Stress {
            gemm_qk: false,
            decode: true,
        },
    ];
    for (i, cs) in cases.iter().enumerate() {
        for (mi, mask) in [Mask::None, Mask::Causal].into_iter().enumerate() {
            let softcap = if (i + mi) % 2 == 0 { Some(5.0) } else { None };
            let lays = layouts(i + mi);
            let seed = (100 + i * 4 + mi) as u64;
            for var in vars {
                check::<f32>(
                    cs,
                    seed,
                    lays,
                    softcap,
                    mask,
                    var,
                    |x| x as f32,
                    |x| x as f64,
                    false,
                );
                check::<f16>(
                    cs,
                    seed + 1000,
                    lays,
                    softcap,
                    mask,
                    var,
                    f16::from_f64,
                    f16::to_f64,
                    true,
                );
            }
        }
    }
}
