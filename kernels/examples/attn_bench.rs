//! Microbenchmark: `airlock_kernels::attention::attention` against a straight
//! port of mistral.rs 0.8.1's CPU attention (`flash_attn_cpu`: one rayon item
//! per (batch, head, query row), scalar dot + one `exp` per query/key pair;
//! `flash_attn_cpu_single_q`: rayon over KV tiles of 16, every head per
//! tile, serial merge).
//!
//! `cargo run --release -p airlock-kernels --example attn_bench`
//! Optional arguments: `prefill_len decode_kv_len n_heads n_kv_heads head_dim`.
//! `RAYON_NUM_THREADS` sets the pool size; `ATTN_BENCH_SPLIT=serial|split`
//! forces our decode onto the calling thread or across the pool (default:
//! the production decision). `ATTN_BENCH_LAYERS=n` gives the decode call n
//! separate K/V caches, used in turn as a model's layers would (times and
//! pairs are per call; the caches then stream from L3/DRAM as in the worker
//! instead of staying in L2; the mistral.rs port still uses one cache).
//! `ATTN_BENCH_KV_BHPD=1` stores our decode K/V as (b, head, pos, d), each
//! head's rows contiguous (the port keeps reading (b, pos, head, d), so its
//! max|diff| is then meaningless).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use airlock_kernels::attention::{attention_forced_split, Attn, Mask};
use half::f16;
use rayon::prelude::*;

/// Shapes are (b, pos, head, d) contiguous, as the hook passes them.
struct Shape {
    q_len: usize,
    kv_len: usize,
    h: usize,
    kvh: usize,
    d: usize,
}

fn data(n: usize, seed: u64) -> Vec<f16> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            f16::from_f32(((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        })
        .collect()
}

#[inline]
fn vec_dot_f32(a: &[f16], b: &[f16]) -> f32 {
    let mut sum = 0f32;
    let chunks = a.len() / 4;
    for i in 0..chunks {
        let c = i * 4;
        sum += a[c].to_f32() * b[c].to_f32()
            + a[c + 1].to_f32() * b[c + 1].to_f32()
            + a[c + 2].to_f32() * b[c + 2].to_f32()
            + a[c + 3].to_f32() * b[c + 3].to_f32();
    }
    for i in chunks * 4..a.len() {
        sum += a[i].to_f32() * b[i].to_f32();
    }
    sum
}

/// Port of `flash_attn_cpu` (prefill), causal via the mask's `-inf` skip.
fn baseline_prefill(s: &Shape, q: &[f16], k: &[f16], v: &[f16], scale: f32, out: &mut [f16]) {
    let (h, d, q_len, kv_len) = (s.h, s.d, s.q_len, s.kv_len);
    let rk2 = h / s.kvh;
    let (qs1, qs2) = (h * d, d);
    let (ks1, ks2) = (s.kvh * d, d);
    out.par_chunks_mut(d)
        .with_min_len(64)
        .enumerate()
        .for_each(|(row_idx, out_chunk)| {
            let h_i = row_idx / q_len;
            let q_pos = row_idx % q_len;
            let k_head = h_i / rk2;
            let mut vkq = vec![0f32; d];
            let mut sum = 0.0f32;
            let mut m = f32::NEG_INFINITY;
            let q_base = q_pos * qs1 + h_i * qs2;
            let q_row = &q[q_base..q_base + d];
            let visible = kv_len - q_len + q_pos;
            for kv_pos in 0..kv_len {
                if kv_pos > visible {
                    continue;
                }
                let k_base = kv_pos * ks1 + k_head * ks2;
                let mut s_val = vec_dot_f32(q_row, &k[k_base..k_base + d]);
                s_val *= scale;
                let m_old = m;
                let mut ms = 1.0f32;
                let mut vs = 1.0f32;
                if s_val > m {
                    m = s_val;
                    ms = (m_old - m).exp();
                    for x in vkq.iter_mut() {
                        *x *= ms;
                    }
                } else {
                    vs = (s_val - m).exp();
                }
                for (x, vv) in vkq.iter_mut().zip(&v[k_base..k_base + d]) {
                    *x += vv.to_f32() * vs;
                }
                sum = sum * ms + vs;
            }
            let inv = 1.0 / sum;
            for (o, x) in out_chunk.iter_mut().zip(&vkq) {
                *o = f16::from_f32(x * inv);
            }
        });
}

/// Port of `flash_attn_cpu_single_q` (decode).
fn baseline_decode(s: &Shape, q: &[f16], k: &[f16], v: &[f16], scale: f32, out: &mut [f16]) {
    const TILE_KV: usize = 16;
    let (h, d, kv_len) = (s.h, s.d, s.kv_len);
    let rk2 = h / s.kvh;
    let ks1 = s.kvh * d;
    let tiles = kv_len.div_ceil(TILE_KV);
    let mut acc = vec![0f32; tiles * h * d];
    let mut ss = vec![0f32; tiles * h];
    let mut ms = vec![f32::NEG_INFINITY; tiles * h];
    acc.par_chunks_mut(h * d)
        .zip(ss.par_chunks_mut(h))
        .zip(ms.par_chunks_mut(h))
        .enumerate()
        .for_each(|(t, ((acc, ss), ms))| {
            let start = t * TILE_KV;
            let end = (start + TILE_KV).min(kv_len);
            for h_i in 0..h {
                let k_head = h_i / rk2;
                let q_row = &q[h_i * d..h_i * d + d];
                let vkq = &mut acc[h_i * d..h_i * d + d];
                let (mut sum, mut m) = (0f32, f32::NEG_INFINITY);
                for kv_pos in start..end {
                    let kb = kv_pos * ks1 + k_head * d;
                    let s_val = vec_dot_f32(q_row, &k[kb..kb + d]) * scale;
                    let m_old = m;
                    let (mut fm, mut fv) = (1.0f32, 1.0f32);
                    if s_val > m {
                        m = s_val;
                        fm = (m_old - m).exp();
                        for x in vkq.iter_mut() {
                            *x *= fm;
                        }
                    } else {
                        fv = (s_val - m).exp();
                    }
                    for (x, vv) in vkq.iter_mut().zip(&v[kb..kb + d]) {
                        *x += vv.to_f32() * fv;
                    }
                    sum = sum * fm + fv;
                }
                ss[h_i] = sum;
                ms[h_i] = m;
            }
        });
    for h_i in 0..h {
        let mut vkq = acc[h_i * d..h_i * d + d].to_vec();
        let (mut sum, mut m) = (ss[h_i], ms[h_i]);
        for t in 1..tiles {
            let (mb, sb) = (ms[t * h + h_i], ss[t * h + h_i]);
            let vb = &acc[(t * h + h_i) * d..(t * h + h_i) * d + d];
            if m >= mb {
                let f = (mb - m).exp();
                for (x, y) in vkq.iter_mut().zip(vb) {
                    *x += y * f;
                }
                sum += sb * f;
            } else {
                let f = (m - mb).exp();
                for (x, y) in vkq.iter_mut().zip(vb) {
                    *x = y + *x * f;
                }
                sum = sb + sum * f;
                m = mb;
            }
        }
        for (o, x) in out[h_i * d..h_i * d + d].iter_mut().zip(&vkq) {
            *o = f16::from_f32(x / sum);
        }
    }
}

/// Median of `iters` timed runs after one warm-up.
fn time(iters: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut t: Vec<Duration> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[iters / 2]
}

fn max_diff(a: &[f16], b: &[f16]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f32() - y.to_f32()).abs())
        .fold(0.0, f32::max)
}

fn bench(name: &str, s: &Shape, iters: usize, layers: usize) {
    let (h, kvh, d) = (s.h, s.kvh, s.d);
    let q = data(s.q_len * h * d, 1);
    let kvs: Vec<(Vec<f16>, Vec<f16>)> = (0..layers as u64)
        .map(|l| {
            (
                data(s.kv_len * kvh * d, 2 + 2 * l),
                data(s.kv_len * kvh * d, 3 + 2 * l),
            )
        })
        .collect();
    let scale = 1.0 / (d as f32).sqrt();
    let kv_strides = if s.q_len == 1 && std::env::var_os("ATTN_BENCH_KV_BHPD").is_some() {
        [s.kv_len * kvh * d, d, s.kv_len * d]
    } else {
        [s.kv_len * kvh * d, kvh * d, d]
    };
    let calls: Vec<Attn<'_, f16>> = kvs
        .iter()
        .map(|(k, v)| Attn {
            q: &q,
            q_strides: [s.q_len * h * d, h * d, d],
            k,
            k_strides: kv_strides,
            v,
            v_strides: kv_strides,
            batch: 1,
            q_len: s.q_len,
            kv_len: s.kv_len,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            scale,
            softcap: None,
            mask: Mask::Causal,
        })
        .collect();
    let mut ours = vec![f16::ZERO; h * s.q_len * d];
    let mut base = ours.clone();
    let split = match std::env::var("ATTN_BENCH_SPLIT").as_deref() {
        Ok("serial") => Some(false),
        Ok("split") => Some(true),
        _ => None,
    };
    let t_ours = time(iters, || {
        for a in &calls {
            attention_forced_split(a, &mut ours, split).unwrap();
        }
    }) / layers as u32;
    let (k, v) = (&kvs[0].0[..], &kvs[0].1[..]);
    // ATTN_BENCH_OURS_ONLY=1 skips the baseline (for profiling our kernel).
    let base_iters = if std::env::var_os("ATTN_BENCH_OURS_ONLY").is_some() {
        1
    } else {
        iters
    };
    let t_base = time(base_iters, || {
        if s.q_len == 1 {
            baseline_decode(s, &q, k, v, scale, &mut base)
        } else {
            baseline_prefill(s, &q, k, v, scale, &mut base)
        }
    });
    let pairs: usize = (0..s.q_len)
        .map(|i| s.kv_len - s.q_len + i + 1)
        .sum::<usize>()
        * h;
    let threads = rayon::current_num_threads();
    let per_pair = |t: Duration| t.as_secs_f64() * 1e9 * threads as f64 / pairs as f64;
    let name = if layers > 1 {
        format!("{name}x{layers}")
    } else {
        name.to_string()
    };
    println!(
        "{name:<8} q_len {:>4} kv_len {:>4} heads {h}/{kvh} d {d}: ours {:>9.3} ms ({:.2} thread-ns/pair), mistral.rs port {:>9.3} ms ({:.2} thread-ns/pair), speed-up {:.1}x, max|diff| {:.2e}",
        s.q_len,
        s.kv_len,
        t_ours.as_secs_f64() * 1e3,
        per_pair(t_ours),
        t_base.as_secs_f64() * 1e3,
        per_pair(t_base),
        t_base.as_secs_f64() / t_ours.as_secs_f64(),
        max_diff(&ours, &base),
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().expect("numeric argument"))
        .collect();
    let arg = |i: usize, dflt: usize| args.get(i).copied().unwrap_or(dflt);
    let (n, kv, h, kvh, d) = (
        arg(0, 1000),
        arg(1, 1000),
        arg(2, 12),
        arg(3, 4),
        arg(4, 64),
    );
    println!(
        "rayon threads: {}, f16, causal, (b, pos, head, d) contiguous",
        rayon::current_num_threads()
    );
    bench(
        "prefill",
        &Shape {
            q_len: n,
            kv_len: n,
            h,
            kvh,
            d,
        },
        7,
        1,
    );
    let layers = std::env::var("ATTN_BENCH_LAYERS")
        .ok()
        .map(|x| x.parse().expect("numeric ATTN_BENCH_LAYERS"))
        .unwrap_or(1usize)
        .max(1);
    bench(
        "decode",
        &Shape {
            q_len: 1,
            kv_len: kv,
            h,
            kvh,
            d,
        },
        201,
        layers,
    );
}
