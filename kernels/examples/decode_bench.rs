//! Microbenchmark of decode's matrix-vector products over a whole model.
//!
//! The weights of the benchmark model's shape (`airlock-modelgen --preset
//! bench`: 10 layers, width 768, 4 of 12 heads for keys and values, SwiGLU
//! 2048, 32,000-token output; Q4_K, ~49 MB) or the 1B preset's (`1b`), one
//! allocation per matrix as in the loaded model, more than the last-level
//! cache. One "token" is every matrix times one activation row, in model
//! order. Printed: ms per token, the weights' GB/s, and the same bytes read
//! by a plain two-thread AVX2 sum (the memory's ceiling on this machine).
//!
//! `cargo run --release -p airlock-kernels --example decode_bench [bench|1b] [tokens]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use airlock_kernels::qmatmul::{kernel_dot, matmul, reference as r, wtype, QMatMul};

/// `(k, n)` of each matrix of one token, in model order.
fn shapes(preset: &str) -> Vec<(usize, usize)> {
    let (dim, layers, kv, ffn, vocab) = match preset {
        "1b" => (2048, 22, 256, 5632, 32_000),
        _ => (768, 10, 256, 2048, 32_000),
    };
    let mut s = Vec::new();
    for _ in 0..layers {
        s.extend([(dim, dim), (dim, kv), (dim, kv), (dim, dim)]);
        s.extend([(dim, ffn), (dim, ffn), (ffn, dim)]);
    }
    s.push((dim, vocab));
    s
}

/// Sums every byte of `bufs` with AVX2 across the kernels' pool.
fn stream(bufs: &[Vec<u8>]) -> u64 {
    let total = std::sync::atomic::AtomicU64::new(0);
    for b in bufs {
        let chunks = b.len().div_ceil(64 * 1024);
        airlock_kernels::pool::run(chunks, &|c| {
            let s = &b[c * 64 * 1024..((c + 1) * 64 * 1024).min(b.len())];
            let mut acc = 0u64;
            for w in s.chunks_exact(32) {
                acc = acc.wrapping_add(u64::from_le_bytes(w[..8].try_into().unwrap()));
                acc ^= u64::from_le_bytes(w[24..32].try_into().unwrap());
            }
            total.fetch_add(acc, std::sync::atomic::Ordering::Relaxed);
        });
    }
    total.into_inner()
}

fn main() {
    let preset = std::env::args().nth(1).unwrap_or_else(|| "bench".into());
    let tokens: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let wt = wtype::Q4_K;
    let (quant, ab, align) = r::act_quantizer(wt).unwrap();
    let mut rng = r::SplitMix(7);
    let shapes = shapes(&preset);
    let weights: Vec<Vec<u8>> = shapes
        .iter()
        .map(|&(k, n)| r::random_weights(wt, k, n, 0.05, &mut rng).unwrap())
        .collect();
    let bytes: usize = weights.iter().map(Vec::len).sum();
    let kmax = shapes.iter().map(|s| s.0.max(s.1)).max().unwrap();
    let x: Vec<f32> = (0..kmax).map(|_| rng.uniform() - 0.5).collect();
    let mut y = vec![0f32; kmax];
    let q = move |x: &[f32], out: &mut [u8]| quant(x, out);
    let dot = move |w: &[u8], a: &[u8]| kernel_dot(wt, w, a).unwrap_or(0.0);
    let token = |y: &mut [f32]| {
        for (&(k, n), w) in shapes.iter().zip(&weights) {
            let a = QMatMul {
                wtype: wt,
                m: 1,
                k,
                n,
                lhs: &x[..k],
                rhs: w,
                rhs_row_bytes: w.len() / n,
                act_row_bytes: k / 256 * ab,
                act_align: align,
                quantize_row: &q,
                dot: &dot,
            };
            matmul(&a, &mut y[..n]).unwrap();
        }
    };
    println!(
        "preset {preset}: {} matrices, {:.1} MB of Q4_K weights, threads {}",
        shapes.len(),
        bytes as f64 / 1e6,
        airlock_kernels::pool::threads()
    );
    for round in 0..3 {
        token(&mut y);
        let t = Instant::now();
        for _ in 0..tokens {
            token(&mut y);
        }
        let kern = t.elapsed().as_secs_f64() / tokens as f64;
        stream(&weights);
        let t = Instant::now();
        let mut sink = 0u64;
        for _ in 0..tokens {
            sink ^= stream(&weights);
        }
        let read = t.elapsed().as_secs_f64() / tokens as f64;
        println!(
            "round {round}: matvec {:.3} ms/token ({:.1} GB/s), plain read {:.3} ms ({:.1} GB/s), matvec/read time {:.2}  [{}]",
            kern * 1e3,
            bytes as f64 / kern / 1e9,
            read * 1e3,
            bytes as f64 / read / 1e9,
            kern / read,
            sink & 1
        );
    }
}
