//! Tests of the quantised matmul against plain references.
//!
//! For each weight type with a micro-kernel, over m × n × k:
//! (a) the generic driver with the scalar reference `dot` closure,
//! (b) the micro-kernel driver,
//! both against an f64 dot of the dequantised weights and the dequantised
//! (already quantised) activations, and (c) the micro-kernel driver against
//! the generic driver on the same quantised activations.
//!
//! Tolerances are relative to `‖w‖·‖a‖` (≥ |Σ w·a|) of each output: 1e-4
//! against f64 (f32 accumulation over k ≤ 2048), 2e-3 for Q4_1 (candle's
//! Q8_1 keeps `s = d·Σq` rounded to f16), 2e-5 between the two drivers
//! (same exact integer block sums, only the f32 summation order differs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::needless_range_loop
)]

use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::reference::{self as r, SplitMix};
use super::*;

const MS: [usize; 4] = [1, 3, 17, 64];
const NS: [usize; 4] = [1, 5, 256, 1000];
const KS: [usize; 3] = [256, 768, 2048];

struct Case {
    wt: u32,
    m: usize,
    n: usize,
    k: usize,
    lhs: Vec<f32>,
    rhs: Vec<u8>,
    row_bytes: usize,
    act_bytes: usize,
    align: usize,
    quant: fn(&[f32], &mut [u8]),
}

impl Case {
    fn new(wt: u32, m: usize, n: usize, k: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lhs: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let g = geometry(wt).unwrap();
        let mut sm = SplitMix(rng.random());
        let rhs = r::random_weights(wt, k, n, 0.05, &mut sm).unwrap();
        let (quant, ab, align) = r::act_quantizer(wt).unwrap();
        Case {
            wt,
            m,
            n,
            k,
            lhs,
            rhs,
            row_bytes: k / g.block * g.wbytes,
            act_bytes: k / g.block * ab,
            align,
            quant,
        }
    }

    fn run(&self, generic: bool) -> Vec<f32> {
        let wt = self.wt;
        let quant = self.quant;
        let q = move |x: &[f32], out: &mut [u8]| quant(x, out);
        let dot = move |w: &[u8], a: &[u8]| r::dot_scalar(wt, w, a).unwrap();
        let a = QMatMul {
            wtype: wt,
            m: self.m,
            k: self.k,
            n: self.n,
            lhs: &self.lhs,
            rhs: &self.rhs,
            rhs_row_bytes: self.row_bytes,
            act_row_bytes: self.act_bytes,
            act_align: self.align,
            quantize_row: &q,
            dot: &dot,
        };
        let mut dst = vec![f32::NAN; self.m * self.n];
        if generic {
            matmul_generic(&a, &mut dst).unwrap();
        } else {
            matmul(&a, &mut dst).unwrap();
        }
        dst
    }

    /// f64 reference and the per-output scale ‖w‖·‖a‖.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let g = geometry(self.wt).unwrap();
        let abytes = self.act_bytes / (self.k / g.block);
        let acts: Vec<Vec<f64>> = self
            .lhs
            .chunks(self.k)
            .map(|x| {
                let mut q = vec![0u8; self.act_bytes];
                (self.quant)(x, &mut q);
                r::dequantize_act(&q, abytes)
            })
            .collect();
        let ws: Vec<Vec<f64>> = self
            .rhs
            .chunks(self.row_bytes)
            .map(|w| r::dequantize_weights(self.wt, w).unwrap())
            .collect();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let wn: Vec<f64> = ws.iter().map(|w| norm(w)).collect();
        let mut out = Vec::with_capacity(self.m * self.n);
        let mut scale = Vec::with_capacity(self.m * self.n);
        for a in &acts {
            let an = norm(a);
            for (w, wn) in ws.iter().zip(&wn) {
                out.push(a.iter().zip(w).map(|(x, y)| x * y).sum());
                scale.push(an * wn + 1e-12);
            }
        }
        (out, scale)
    }
}

fn compare(what: &str, case: &Case, got: &[f32], want: &[f64], scale: &[f64], tol: f64) {
    for (idx, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let err = (f64::from(g) - w).abs() / s;
        assert!(
            err <= tol,
            "{what}: wtype {} m {} n {} k {}: out[{}][{}] = {g}, want {w} (rel err {err:e} > {tol:e})",
            case.wt,
            case.m,
            case.n,
            case.k,
            idx / case.n,
            idx % case.n
        );
    }
}

fn matrix(wt: u32) {
    let tol = if wt == wtype::Q4_1 { 2e-3 } else { 1e-4 };
    let mut seed = u64::from(wt) * 1000;
    for &k in &KS {
        for &m in &MS {
            for &n in &NS {
                seed += 1;
                let case = Case::new(wt, m, n, k, seed);
                let (want, scale) = case.reference();
                let generic = case.run(true);
                let fast = case.run(false);
                compare("generic vs f64", &case, &generic, &want, &scale, tol);
                compare("kernel vs f64", &case, &fast, &want, &scale, tol);
                let generic64: Vec<f64> = generic.iter().map(|&x| f64::from(x)).collect();
                compare("kernel vs generic", &case, &fast, &generic64, &scale, 2e-5);
            }
        }
    }
}

#[test]
fn q4_k_matches_reference() {
    matrix(wtype::Q4_K);
}

#[test]
fn q8_0_matches_reference() {
    matrix(wtype::Q8_0);
}

#[test]
fn q4_1_matches_reference() {
    matrix(wtype::Q4_1);
}

#[test]
fn q5_0_matches_reference() {
    matrix(wtype::Q5_0);
}

#[test]
fn q4_0_matches_reference() {
    matrix(wtype::Q4_0);
}

/// Tile shapes of every kernel (4×4, 4×2, 4×1, 1×2, 1×1) straight against
/// the scalar dot, on extreme codes too (all-0xFF / all-0x80 weight bytes).
#[test]
fn kernel_tiles_match_scalar() {
    for wt in [
        wtype::Q4_K,
        wtype::Q8_0,
        wtype::Q4_1,
        wtype::Q5_0,
        wtype::Q4_0,
    ] {
        for fill in [None, Some(0xFFu8), Some(0x80)] {
            let mut case = Case::new(wt, 4, 4, 512, 7 + u64::from(wt));
            if let Some(b) = fill {
                let g = geometry(wt).unwrap();
                for x in case.rhs.chunks_exact_mut(g.wbytes) {
                    let keep: Vec<u8> = x[..4].to_vec();
                    x.fill(b);
                    // Keep finite scales (Q6_K-style tails do not apply here).
                    x[..4].copy_from_slice(&keep);
                }
            }
            let nb = case.k / geometry(wt).unwrap().block;
            let acts: Vec<Vec<u8>> = case
                .lhs
                .chunks(case.k)
                .map(|x| {
                    let mut q = vec![0u8; case.act_bytes];
                    (case.quant)(x, &mut q);
                    q
                })
                .collect();
            let w: Vec<&[u8]> = case.rhs.chunks(case.row_bytes).collect();
            let want = |c: usize, j: usize| r::dot_scalar(wt, w[j], &acts[c]).unwrap();
            let kern = kernels::Kernel::for_type(wt, nb).unwrap();
            let close = |g: f32, w: f32| (g - w).abs() <= 1e-5 * (1.0 + w.abs()) * 10.0;
            let mut o42 = [[0f32; 4]; 2];
            kern.tile([w[0], w[1], w[2], w[3]], [&acts[0], &acts[1]], &mut o42);
            let mut o44 = [[0f32; 4]; 4];
            kern.tile(
                [w[0], w[1], w[2], w[3]],
                [&acts[0], &acts[1], &acts[2], &acts[3]],
                &mut o44,
            );
            for c in 0..4 {
                for j in 0..4 {
                    assert!(close(o44[c][j], want(c, j)), "{wt} 4x4 [{c}][{j}]");
                }
            }
            let mut o41 = [[0f32; 4]; 1];
            kern.tile([w[0], w[1], w[2], w[3]], [&acts[1]], &mut o41);
            let mut o12 = [[0f32; 1]; 2];
            kern.tile([w[2]], [&acts[0], &acts[1]], &mut o12);
            for j in 0..4 {
                for c in 0..2 {
                    assert!(close(o42[c][j], want(c, j)), "{wt} 4x2 [{c}][{j}]");
                }
                assert!(close(o41[0][j], want(1, j)), "{wt} 4x1 [{j}]");
            }
            for c in 0..2 {
                assert!(close(o12[c][0], want(c, 2)), "{wt} 1x2 [{c}]");
            }
            let one = kernel_dot(wt, w[3], &acts[0]).unwrap();
            assert!(close(one, want(0, 3)), "{wt} 1x1");
            // Decode's row stream: the four rows in one call.
            let mut orows = [0f32; 4];
            kern.rows(&case.rhs, case.row_bytes, &acts[2], &mut orows);
            for (j, &o) in orows.iter().enumerate() {
                assert!(close(o, want(2, j)), "{wt} rows [{j}]");
            }
        }
    }
}

/// A type without a kernel (F32, id 0) goes through the closures.
#[test]
fn unknown_type_uses_closures() {
    let (m, n, k) = (5, 7, 9);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let lhs: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let rhs: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let aligned = AtomicBool::new(true);
    let q = |x: &[f32], out: &mut [u8]| {
        if !(out.as_ptr() as usize).is_multiple_of(4096) {
            aligned.store(false, Ordering::Relaxed);
        }
        for (o, v) in out.chunks_exact_mut(4).zip(x) {
            o.copy_from_slice(&v.to_le_bytes());
        }
    };
    let f = |b: &[u8]| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>()
    };
    let dot = |w: &[u8], a: &[u8]| f(w).iter().zip(f(a)).map(|(x, y)| x * y).sum::<f32>();
    let a = QMatMul {
        wtype: 0,
        m,
        k,
        n,
        lhs: &lhs,
        rhs: &rhs,
        rhs_row_bytes: 4 * k,
        act_row_bytes: 4 * k,
        act_align: 4096,
        quantize_row: &q,
        dot: &dot,
    };
    let mut dst = vec![0f32; m * n];
    matmul(&a, &mut dst).unwrap();
    assert!(aligned.load(Ordering::Relaxed), "act rows not 4096-aligned");
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|t| lhs[i * k + t] * w[j * k + t]).sum();
            assert!((dst[i * n + j] - want).abs() < 1e-5, "[{i}][{j}]");
        }
    }
}

/// A valid Q8_0 call, to be broken one field at a time.
fn with_valid<T>(f: impl FnOnce(&mut QMatMul<'_>, &mut Vec<f32>) -> T) -> T {
    let (m, n, k) = (2, 3, 64);
    let lhs = vec![0.5f32; m * k];
    let rhs = r::random_weights(wtype::Q8_0, k, n, 0.05, &mut SplitMix(1)).unwrap();
    let q = |x: &[f32], out: &mut [u8]| r::quantize_row_q8_0(x, out);
    let dot = |w: &[u8], a: &[u8]| r::dot_scalar(wtype::Q8_0, w, a).unwrap();
    let mut a = QMatMul {
        wtype: wtype::Q8_0,
        m,
        k,
        n,
        lhs: &lhs,
        rhs: &rhs,
        rhs_row_bytes: 68,
        act_row_bytes: 68,
        act_align: 2,
        quantize_row: &q,
        dot: &dot,
    };
    let mut dst = vec![0f32; m * n];
    f(&mut a, &mut dst)
}

#[test]
fn errors_each_check() {
    with_valid(|a, dst| assert_eq!(matmul(a, dst), Ok(())));
    let e = with_valid(|a, dst| {
        a.lhs = &[0f32; 5];
        matmul(a, dst)
    });
    assert_eq!(
        e,
        Err(QMatMulError::LhsLen {
            expected: 128,
            got: 5
        })
    );
    let e = with_valid(|a, dst| {
        a.rhs = &a.rhs[1..];
        matmul(a, dst)
    });
    assert_eq!(
        e,
        Err(QMatMulError::RhsLen {
            expected: 204,
            got: 203
        })
    );
    let e = with_valid(|a, dst| {
        dst.pop();
        matmul(a, dst)
    });
    assert_eq!(
        e,
        Err(QMatMulError::DstLen {
            expected: 6,
            got: 5
        })
    );
    for bad in [0, 3, 8192] {
        let e = with_valid(|a, dst| {
            a.act_align = bad;
            matmul(a, dst)
        });
        assert_eq!(e, Err(QMatMulError::ActAlign(bad)));
    }
    let e = with_valid(|a, dst| {
        a.m = usize::MAX;
        matmul(a, dst)
    });
    assert_eq!(e, Err(QMatMulError::Overflow));
    let e = with_valid(|a, dst| {
        a.act_row_bytes = usize::MAX - 10;
        matmul(a, dst)
    });
    assert_eq!(e, Err(QMatMulError::Overflow));
    let e = with_valid(|a, dst| {
        a.k = 63;
        a.lhs = &[0f32; 2 * 63];
        matmul(a, dst)
    });
    assert_eq!(
        e,
        Err(QMatMulError::KBlock {
            wtype: wtype::Q8_0,
            k: 63,
            block: 32
        })
    );
    let e = with_valid(|a, dst| {
        a.rhs_row_bytes = 34;
        a.rhs = &a.rhs[..102];
        matmul(a, dst)
    });
    assert_eq!(
        e,
        Err(QMatMulError::RhsRowBytes {
            expected: 68,
            got: 34
        })
    );
    let e = with_valid(|a, dst| {
        a.act_row_bytes = 72;
        matmul(a, dst)
    });
    assert_eq!(
        e,
        Err(QMatMulError::ActRowBytes {
            expected: 68,
            got: 72
        })
    );
    // Every message names the check.
    for e in [
        QMatMulError::Overflow,
        QMatMulError::ActAlign(3),
        QMatMulError::RhsLen {
            expected: 1,
            got: 2,
        },
    ] {
        assert!(e.to_string().starts_with("qmatmul: "));
    }
}

#[test]
fn empty_shapes() {
    with_valid(|a, _| {
        a.m = 0;
        a.lhs = &[];
        assert_eq!(matmul(a, &mut []), Ok(()));
    });
    with_valid(|a, _| {
        a.n = 0;
        a.rhs = &[];
        assert_eq!(matmul(a, &mut []), Ok(()));
    });
    // k = 0 of an unknown type: zeros.
    with_valid(|a, dst| {
        a.wtype = 99;
        a.k = 0;
        a.lhs = &[];
        a.rhs_row_bytes = 0;
        a.rhs = &[];
        a.act_row_bytes = 0;
        dst.fill(1.0);
        assert_eq!(matmul(a, dst), Ok(()));
        assert!(dst.iter().all(|&x| x == 0.0));
    });
}

/// A second call of the same size reuses the pooled buffer.
#[test]
fn act_buffer_is_reused() {
    // Other tests share the pool: retry a few times.
    let reused = (0..20).any(|_| {
        let b = buffer::ActBuffer::take(3 * 1024 * 1024 + 77, 64);
        let at = b.address();
        drop(b);
        let mut b = buffer::ActBuffer::take(3 * 1024 * 1024 + 77, 64);
        assert_eq!(b.bytes_mut().as_ptr() as usize % 64, 0);
        b.address() == at
    });
    assert!(reused);
}

/// Decode of a small projection still gives every thread several tasks.
#[test]
fn plan_splits_small_decode() {
    let (tm, tn) = plan(1, 256, 432, 896, 2);
    assert_eq!(tm, 1);
    assert_eq!(tn % NR, 0);
    assert!(256usize.div_ceil(tn) >= 8, "tn {tn}");
    let (tm, tn) = plan(512, 2048, 432, 896, 2);
    assert!(tm >= 64 && tn >= 64, "tm {tm} tn {tn}");
    assert!(512usize.div_ceil(tm) * 2048usize.div_ceil(tn) >= 8);
}

/// The quantised product stays near the f32 product (quantisers sane).
#[test]
fn close_to_unquantised() {
    let case = Case::new(wtype::Q8_0, 3, 16, 768, 42);
    let got = case.run(false);
    for i in 0..case.m {
        for j in 0..case.n {
            let w = r::dequantize_weights(
                wtype::Q8_0,
                &case.rhs[j * case.row_bytes..][..case.row_bytes],
            )
            .unwrap();
            let x = &case.lhs[i * case.k..][..case.k];
            let want: f64 = w.iter().zip(x).map(|(w, &x)| w * f64::from(x)).sum();
            let norm: f64 = w.iter().map(|w| w * w).sum::<f64>().sqrt()
                * x.iter().map(|&x| f64::from(x * x)).sum::<f64>().sqrt();
            assert!((f64::from(got[i * case.n + j]) - want).abs() < 0.01 * norm);
        }
    }
}
