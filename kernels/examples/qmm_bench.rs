//! Microbenchmark of the quantised matmul.
//!
//! For Q4_K and Q8_0 weights (and Q4_1, the real SmolLM2's), k = 768,
//! n ∈ {2048, 256}, m ∈ {1, 512}, times:
//! (i) candle-core 0.10.2's `k_quants::matmul` loop (activations quantised on
//!     one thread into a fresh Vec, then one rayon `par_iter` over the
//!     columns per activation row), with our 1 × 1 micro-kernel as its dot;
//! (ii) our driver through the `dot` closure (same 1 × 1 dot): isolates the
//!     threading, tiling and buffer reuse;
//! (iii) our driver with the 4 × 4 micro-kernels.
//!
//! `cargo run --release -p airlock-kernels --example qmm_bench [reps]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

use std::time::Instant;

use airlock_kernels::qmatmul::{
    kernel_dot, matmul, matmul_generic, reference as r, wtype, QMatMul,
};
use rayon::prelude::*;

/// candle's loop, as in `k_quants::matmul`.
fn candle_style(
    wt: u32,
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[u8],
    row_bytes: usize,
    act_bytes: usize,
    quant: r::QuantizeRow,
    dot: fn(u32, &[u8], &[u8]) -> Option<f32>,
    dst: &mut [f32],
) {
    let mut acts = vec![0u8; m * act_bytes];
    for (x, a) in lhs.chunks(k).zip(acts.chunks_mut(act_bytes)) {
        quant(x, a);
    }
    for (a, dst_row) in acts.chunks(act_bytes).zip(dst.chunks_mut(n)) {
        dst_row
            .into_par_iter()
            .enumerate()
            .with_min_len(128)
            .with_max_len(512)
            .for_each(|(j, d)| {
                *d = dot(wt, &rhs[j * row_bytes..(j + 1) * row_bytes], a).unwrap();
            });
    }
}

/// Median ms of `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("threads {}", rayon::current_num_threads());
    println!(
        "{:<5} {:>4} {:>5} {:>5} | {:>10} {:>10} {:>10} | {:>6} {:>6} {:>6}",
        "type", "m", "k", "n", "candle ms", "generic ms", "kernel ms", "i/ii", "ii/iii", "i/iii"
    );
    let k = 768;
    let mut rng = r::SplitMix(1);
    for (name, wt) in [
        ("Q4_K", wtype::Q4_K),
        ("Q8_0", wtype::Q8_0),
        ("Q4_1", wtype::Q4_1),
    ] {
        let (quant, ab, align) = r::act_quantizer(wt).unwrap();
        let block = if wt == wtype::Q4_K { 256 } else { 32 };
        for n in [2048, 256] {
            let rhs = r::random_weights(wt, k, n, 0.05, &mut rng).unwrap();
            let row_bytes = rhs.len() / n;
            for m in [1, 512] {
                let lhs: Vec<f32> = (0..m * k).map(|_| rng.uniform()).collect();
                let act_bytes = k / block * ab;
                let q = move |x: &[f32], out: &mut [u8]| quant(x, out);
                let dot = move |w: &[u8], a: &[u8]| kernel_dot(wt, w, a).unwrap_or(0.0);
                let a = QMatMul {
                    wtype: wt,
                    m,
                    k,
                    n,
                    lhs: &lhs,
                    rhs: &rhs,
                    rhs_row_bytes: row_bytes,
                    act_row_bytes: act_bytes,
                    act_align: align,
                    quantize_row: &q,
                    dot: &dot,
                };
                let reps = if m == 1 { reps * 30 } else { reps };
                let mut d0 = vec![0f32; m * n];
                let mut d1 = vec![0f32; m * n];
                let mut d2 = vec![0f32; m * n];
                let mut d3 = vec![0f32; m * n];
                let t1 = time(reps, || {
                    candle_style(
                        wt,
                        (m, k, n),
                        &lhs,
                        &rhs,
                        row_bytes,
                        act_bytes,
                        quant,
                        kernel_dot,
                        &mut d1,
                    )
                });
                // Q4_1 has no AVX2 dot in candle: its loop with a scalar dot.
                let t0 = (wt == wtype::Q4_1).then(|| {
                    time(reps, || {
                        candle_style(
                            wt,
                            (m, k, n),
                            &lhs,
                            &rhs,
                            row_bytes,
                            act_bytes,
                            quant,
                            r::dot_scalar,
                            &mut d0,
                        )
                    })
                });
                let t2 = time(reps, || matmul_generic(&a, &mut d2).unwrap());
                let t3 = time(reps, || matmul(&a, &mut d3).unwrap());
                let diff = d1
                    .iter()
                    .zip(&d3)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(d1 == d2, "generic driver differs from the candle loop");
                println!(
                    "{name:<5} {m:>4} {k:>5} {n:>5} | {t1:>10.3} {t2:>10.3} {t3:>10.3} | {:>6.2} {:>6.2} {:>6.2}   (max |i−iii| {diff:.1e})",
                    t1 / t2,
                    t2 / t3,
                    t1 / t3
                );
                if let Some(t0) = t0 {
                    println!(
                        "      candle loop with a scalar dot (as candle's Q4_1 today): {t0:.3} ms, {:.2}× the kernel time",
                        t0 / t3
                    );
                }
            }
        }
    }
}
