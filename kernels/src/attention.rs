//! Attention kernels (prefill: tiled, online softmax; decode: GQA-grouped).
//!
//! `attention` computes `softmax(q·kᵀ·scale [softcap] + mask)·v` for inputs in
//! mistral.rs's layout after its `transpose(1, 2)`: logical shape
//! `(batch, position, head, head_dim)`, `head_dim` contiguous, any element
//! strides for the other three dimensions. The output is
//! `(batch, n_heads, q_len, head_dim)`, contiguous.
//!
//! Work is organised around one KV head at a time: the `n_heads / n_kv_heads`
//! query heads sharing it (GQA) are processed together, so every K/V row is
//! loaded (prefill: converted to f32 once per tile) and used by all their
//! query rows.
//!
//! * Prefill (`q_len > DECODE_MAX_Q`): work items are (batch, kv head, block
//!   of query positions), one parallel region (`crate::pool`) per call. An item walks
//!   the keys in tiles of [`BK`], up to the causal bound of its last row
//!   (fully masked tiles are never touched), with an online softmax (running
//!   max / sum per row). `Q·Kᵀ` and `P·V` are small SIMD GEMMs.
//! * Decode (`q_len <= DECODE_MAX_Q`): items are (batch, kv head, KV part).
//!   K and V are read in their storage type inside the kernels (F16C
//!   `vcvtph2ps` of 8 halves feeding the FMAs of `Q·Kᵀ` and `P·V`, no
//!   conversion pass); Q is converted once per item. Per tile of `BK`
//!   keys: scores of all the group's rows (register tiles of up to 4 rows ×
//!   2-4 keys), vector `exp` online softmax along the row, `P·V` in
//!   register tiles of rows × head_dim chunks. From ~8K query/key pairs
//!   (kv 683 at 12 heads) and with more than one pool thread, KV ranges are
//!   split so both cores work on one head group; each part keeps (max, sum,
//!   acc) and the parts are merged with log-sum-exp.
//!
//! Scratch buffers are thread-local and only grow, so a steady state of
//! calls does not allocate. All index bounds are validated before any work.

mod kern;

use std::cell::Cell;
use std::fmt;

use half::f16;

use kern::{Kern, Src};

/// Element type of q/k/v and of the output.
pub trait Elem: Copy + Send + Sync + 'static {
    /// `dst[i] = src[i] as f32` for `i < min(len)`.
    fn to_f32_slice(src: &[Self], dst: &mut [f32]);
    /// `dst[i] = src[i] as Self` (round to nearest even) for `i < min(len)`.
    fn from_f32_slice(src: &[f32], dst: &mut [Self]);
    /// The slice as `f16` if `Self` is `f16` (decode reads K/V directly).
    #[doc(hidden)]
    fn as_f16(_s: &[Self]) -> Option<&[f16]> {
        None
    }
    /// The slice as `f32` if `Self` is `f32` (decode reads K/V directly).
    #[doc(hidden)]
    fn as_f32(_s: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl Elem for f32 {
    #[inline]
    fn to_f32_slice(src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
    #[inline]
    fn from_f32_slice(src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
    #[inline]
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
}

impl Elem for f16 {
    #[inline]
    fn to_f32_slice(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        #[allow(unused_mut)]
        let mut i = 0;
        #[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
        {
            use core::arch::x86_64::*;
            while i + 8 <= n {
                // SAFETY: i + 8 <= n <= both lengths; `f16` is a
                // `repr(transparent)` u16, so 8 of them are 16 bytes.
                unsafe {
                    let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                    _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
                }
                i += 8;
            }
        }
        for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = s.to_f32();
        }
    }
    #[inline]
    fn from_f32_slice(src: &[f32], dst: &mut [f16]) {
        let n = src.len().min(dst.len());
        #[allow(unused_mut)]
        let mut i = 0;
        #[cfg(all(target_arch = "x86_64", target_feature = "f16c"))]
        {
            use core::arch::x86_64::*;
            while i + 8 <= n {
                // SAFETY: i + 8 <= n <= both lengths; 8 f16 are 16 bytes.
                unsafe {
                    let v = _mm256_loadu_ps(src.as_ptr().add(i));
                    let h = _mm256_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT }>(v);
                    _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), h);
                }
                i += 8;
            }
        }
        for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
            *d = f16::from_f32(*s);
        }
    }
    #[inline]
    fn as_f16(s: &[f16]) -> Option<&[f16]> {
        Some(s)
    }
}

/// Attention mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Every query sees every key.
    None,
    /// Query row `i` (0..q_len) is at absolute position `kv_len - q_len + i`
    /// and sees keys `0..=` that position.
    Causal,
}

/// One attention call. Strides are element strides of (batch, position,
/// head); `head_dim` is contiguous.
#[derive(Debug, Clone, Copy)]
pub struct Attn<'a, T> {
    pub q: &'a [T],
    pub q_strides: [usize; 3],
    pub k: &'a [T],
    pub k_strides: [usize; 3],
    pub v: &'a [T],
    pub v_strides: [usize; 3],
    pub batch: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Softcap `c`: `s = c * tanh(s * scale / c)` (as mistral.rs).
    pub softcap: Option<f32>,
    pub mask: Mask,
}

/// Which input a [`AttnError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Q,
    K,
    V,
    Out,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::Q => "q",
            Operand::K => "k",
            Operand::V => "v",
            Operand::Out => "out",
        })
    }
}

/// A failed argument check of [`attention`]; nothing was computed.
#[derive(Debug, Clone, PartialEq)]
pub enum AttnError {
    /// `n_kv_heads` is 0 or does not divide `n_heads`.
    ShapeMismatch { n_heads: usize, n_kv_heads: usize },
    /// `head_dim` is 0.
    ZeroHeadDim,
    /// `kv_len` is 0 while there are queries (softmax over nothing).
    EmptyKv,
    /// Causal mask with more queries than keys.
    CausalQueryLongerThanKv { q_len: usize, kv_len: usize },
    /// `scale` is NaN or infinite.
    NonFiniteScale { scale: f32 },
    /// Softcap not finite and positive.
    InvalidSoftcap { softcap: f32 },
    /// `out.len()` is not `batch * n_heads * q_len * head_dim`.
    OutputLength { expected: usize, actual: usize },
    /// An input slice is shorter than its largest element offset + 1.
    SliceTooShort {
        which: Operand,
        needed: usize,
        actual: usize,
    },
    /// A size or offset computation overflows `usize` (or the key count
    /// exceeds `i32::MAX`).
    SizeOverflow { which: Operand },
}

impl fmt::Display for AttnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttnError::ShapeMismatch {
                n_heads,
                n_kv_heads,
            } => write!(
                f,
                "n_kv_heads ({n_kv_heads}) must be non-zero and divide n_heads ({n_heads})"
            ),
            AttnError::ZeroHeadDim => f.write_str("head_dim is 0"),
            AttnError::EmptyKv => f.write_str("kv_len is 0"),
            AttnError::CausalQueryLongerThanKv { q_len, kv_len } => {
                write!(f, "causal mask with q_len {q_len} > kv_len {kv_len}")
            }
            AttnError::NonFiniteScale { scale } => write!(f, "scale {scale} is not finite"),
            AttnError::InvalidSoftcap { softcap } => {
                write!(f, "softcap {softcap} is not finite and positive")
            }
            AttnError::OutputLength { expected, actual } => {
                write!(f, "output has {actual} elements, expected {expected}")
            }
            AttnError::SliceTooShort {
                which,
                needed,
                actual,
            } => write!(f, "{which} has {actual} elements, needs {needed}"),
            AttnError::SizeOverflow { which } => write!(f, "{which}: size overflows"),
        }
    }
}

impl std::error::Error for AttnError {}

/// Keys per K/V tile.
const BK: usize = 64;
/// Row stride of decode score tiles: `BK` plus room for the Q·K kernel's
/// 4-lane stores past the last key.
const LDS: usize = BK + 8;

/// Tuning knobs (fixed in production; the tests vary them to reach every
/// code path with small shapes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// `q_len` up to this takes the decode path (KV split, merge).
    pub decode_max_q: usize,
    /// Target number of query rows (GQA heads × positions) per prefill item.
    pub rows_target: usize,
    /// Row count from which `Q·Kᵀ` is a GEMM (else one dot per row/key).
    pub gemm_min_rows: usize,
    /// Minimum keys per decode KV part.
    pub part_min: usize,
    /// Work (query/key pairs) below which the call runs on one thread
    /// (decode: half of it, its pairs cost about twice as much).
    pub serial_work: usize,
}

impl Tuning {
    pub(crate) const DEFAULT: Tuning = Tuning {
        decode_max_q: 8,
        rows_target: 64,
        gemm_min_rows: 16,
        part_min: 256,
        serial_work: 16 * 1024,
    };
}

/// Computes attention into `out` (`(batch, n_heads, q_len, head_dim)`,
/// contiguous). Returns an error, without touching `out`, if any shape,
/// stride or length check fails.
pub fn attention<T: Elem>(a: &Attn<'_, T>, out: &mut [T]) -> Result<(), AttnError> {
    run_native(a, out, &Tuning::DEFAULT)
}

/// Benchmark hook: [`attention`] with the single-thread decision forced
/// (`Some(true)`: always fork/join and split the KV range, `Some(false)`:
/// always run on the calling thread) or automatic (`None`).
#[doc(hidden)]
pub fn attention_forced_split<T: Elem>(
    a: &Attn<'_, T>,
    out: &mut [T],
    split: Option<bool>,
) -> Result<(), AttnError> {
    let mut t = Tuning::DEFAULT;
    match split {
        Some(true) => t.serial_work = 0,
        Some(false) => t.serial_work = usize::MAX,
        None => {}
    }
    run_native(a, out, &t)
}

/// Validated geometry of a call.
#[derive(Debug, Clone, Copy)]
struct Geo {
    b: usize,
    q_len: usize,
    kv_len: usize,
    h: usize,
    kvh: usize,
    g: usize,
    d: usize,
    /// `d` rounded up to a multiple of 8.
    dp: usize,
    /// Factor applied to q: `scale`, or `scale / c` with a softcap.
    q_mul: f32,
    softcap: Option<f32>,
    causal: bool,
}

impl Geo {
    /// Exclusive end of the keys visible to query position `pos`.
    #[inline]
    fn bound(&self, pos: usize) -> usize {
        if self.causal {
            self.kv_len - self.q_len + pos + 1
        } else {
            self.kv_len
        }
    }
}

/// Number of elements a strided operand spans: offset of its last element + 1.
fn span(
    which: Operand,
    strides: [usize; 3],
    dims: [usize; 3],
    d: usize,
) -> Result<usize, AttnError> {
    let mut last = 0usize;
    for (s, n) in strides.iter().zip(dims) {
        let term = (n - 1)
            .checked_mul(*s)
            .ok_or(AttnError::SizeOverflow { which })?;
        last = last
            .checked_add(term)
            .ok_or(AttnError::SizeOverflow { which })?;
    }
    last.checked_add(d).ok_or(AttnError::SizeOverflow { which })
}

/// All argument checks; `Ok(None)` when there is nothing to compute.
fn validate<T>(a: &Attn<'_, T>, out_len: usize) -> Result<Option<Geo>, AttnError> {
    if a.n_kv_heads == 0 || !a.n_heads.is_multiple_of(a.n_kv_heads) {
        return Err(AttnError::ShapeMismatch {
            n_heads: a.n_heads,
            n_kv_heads: a.n_kv_heads,
        });
    }
    if a.head_dim == 0 {
        return Err(AttnError::ZeroHeadDim);
    }
    if !a.scale.is_finite() {
        return Err(AttnError::NonFiniteScale { scale: a.scale });
    }
    if let Some(c) = a.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(AttnError::InvalidSoftcap { softcap: c });
        }
    }
    if a.mask == Mask::Causal && a.q_len > a.kv_len {
        return Err(AttnError::CausalQueryLongerThanKv {
            q_len: a.q_len,
            kv_len: a.kv_len,
        });
    }
    let overflow = AttnError::SizeOverflow {
        which: Operand::Out,
    };
    let expected = a
        .batch
        .checked_mul(a.n_heads)
        .and_then(|x| x.checked_mul(a.q_len))
        .and_then(|x| x.checked_mul(a.head_dim))
        .ok_or(overflow)?;
    if out_len != expected {
        return Err(AttnError::OutputLength {
            expected,
            actual: out_len,
        });
    }
    if expected == 0 {
        return Ok(None);
    }
    if a.kv_len == 0 {
        return Err(AttnError::EmptyKv);
    }
    if i32::try_from(a.kv_len).is_err() {
        return Err(AttnError::SizeOverflow { which: Operand::K });
    }
    let d = a.head_dim;
    let checks = [
        (
            Operand::Q,
            a.q.len(),
            a.q_strides,
            [a.batch, a.q_len, a.n_heads],
        ),
        (
            Operand::K,
            a.k.len(),
            a.k_strides,
            [a.batch, a.kv_len, a.n_kv_heads],
        ),
        (
            Operand::V,
            a.v.len(),
            a.v_strides,
            [a.batch, a.kv_len, a.n_kv_heads],
        ),
    ];
    for (which, actual, strides, dims) in checks {
        let needed = span(which, strides, dims, d)?;
        if actual < needed {
            return Err(AttnError::SliceTooShort {
                which,
                needed,
                actual,
            });
        }
    }
    let (q_mul, softcap) = match a.softcap {
        Some(c) => (a.scale / c, Some(c)),
        None => (a.scale, None),
    };
    Ok(Some(Geo {
        b: a.batch,
        q_len: a.q_len,
        kv_len: a.kv_len,
        h: a.n_heads,
        kvh: a.n_kv_heads,
        g: a.n_heads / a.n_kv_heads,
        d,
        dp: d.div_ceil(8) * 8,
        q_mul,
        softcap,
        causal: a.mask == Mask::Causal,
    }))
}

/// Driver, generic over the kernel set (tests run every `Kern`).
/// `run` with the kernel set this build has: AVX2+FMA on x86-64-v3, else
/// the portable one.
pub(crate) fn run_native<T: Elem>(
    a: &Attn<'_, T>,
    out: &mut [T],
    t: &Tuning,
) -> Result<(), AttnError> {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        run::<T, kern::Avx2>(a, out, t)
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        run::<T, kern::Portable>(a, out, t)
    }
}

pub(crate) fn run<T: Elem, K: Kern>(
    a: &Attn<'_, T>,
    out: &mut [T],
    tune: &Tuning,
) -> Result<(), AttnError> {
    let Some(geo) = validate(a, out.len())? else {
        return Ok(());
    };
    if geo.q_len <= tune.decode_max_q {
        decode::<T, K>(a, &geo, out, tune);
    } else {
        prefill::<T, K>(a, &geo, out, tune);
    }
    Ok(())
}

/// Per-thread scratch of one work item; buffers only grow.
#[derive(Default)]
struct Scratch {
    /// Q rows, f32, pre-multiplied, `[r][dp]` (dot form).
    q: Vec<f32>,
    /// Q transposed, `[d][rp]` (GEMM form).
    qt: Vec<f32>,
    /// K tile `[j][dp]`.
    kc: Vec<f32>,
    /// V tile `[j][dp]`.
    vc: Vec<f32>,
    /// Scores / probabilities, transposed: `[j][rp]`.
    st: Vec<f32>,
    /// Accumulators `[r][dp]`.
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
    bounds: Vec<usize>,
    /// Output row staging.
    row: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

thread_local! {
    static SCRATCH: Cell<Scratch> = Cell::new(Scratch::default());
    static PARTIALS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch (a fresh one if the slot is in use
/// or gone, e.g. during thread teardown).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut s = SCRATCH.try_with(Cell::take).unwrap_or_default();
    let r = f(&mut s);
    let _ = SCRATCH.try_with(|c| c.set(s));
    r
}

/// One block of query rows against keys `kv0..kv1` of one (batch, kv head).
/// Rows are `r = i * g + gi` for positions `q0 + i` (`i < nq`) and heads
/// `kvh * g + gi`; their bounds are non-decreasing in `r`. Leaves running
/// max `m`, sum `l` and unnormalised accumulators `o` in the scratch.
#[allow(clippy::too_many_arguments)]
fn run_block<T: Elem, K: Kern>(
    a: &Attn<'_, T>,
    geo: &Geo,
    s: &mut Scratch,
    tune: &Tuning,
    b: usize,
    kvh: usize,
    q0: usize,
    nq: usize,
    kv0: usize,
    kv1: usize,
) {
    let (d, dp, g) = (geo.d, geo.dp, geo.g);
    let rows = nq * g;
    let rp = rows.div_ceil(8) * 8;
    let gemm_qk = rows >= tune.gemm_min_rows;
    grow(&mut s.q, rp * dp);
    grow(&mut s.qt, d * rp);
    grow(&mut s.kc, BK * dp);
    grow(&mut s.vc, BK * dp);
    grow(&mut s.st, BK * rp);
    grow(&mut s.o, rows * dp);
    grow(&mut s.m, rp);
    grow(&mut s.l, rp);
    grow(&mut s.alpha, rp);
    grow(&mut s.row, dp);
    if s.bounds.len() < rows {
        s.bounds.resize(rows, 0);
    }

    // Q rows -> f32, pre-multiplied by scale (/ softcap).
    for i in 0..nq {
        let pos = q0 + i;
        for gi in 0..g {
            let r = i * g + gi;
            let h = kvh * g + gi;
            let off = b * a.q_strides[0] + pos * a.q_strides[1] + h * a.q_strides[2];
            let qrow = &mut s.q[r * dp..(r + 1) * dp];
            T::to_f32_slice(&a.q[off..off + d], &mut qrow[..d]);
            qrow[d..].fill(0.0);
            for x in qrow.iter_mut() {
                *x *= geo.q_mul;
            }
            if gemm_qk {
                for (dd, x) in qrow[..d].iter().enumerate() {
                    s.qt[dd * rp + r] = *x;
                }
            }
            s.bounds[r] = geo.bound(pos).min(kv1);
        }
    }
    if gemm_qk {
        for dd in 0..d {
            s.qt[dd * rp + rows..(dd + 1) * rp].fill(0.0);
        }
    }
    s.m[..rp].fill(f32::NEG_INFINITY);
    s.l[..rp].fill(0.0);
    s.o[..rows * dp].fill(0.0);

    let mut j0 = kv0;
    while j0 < kv1 {
        let j1 = (j0 + BK).min(kv1);
        let nk = j1 - j0;
        // Rows that see nothing of this tile are skipped (8-row granules).
        let r_first = s.bounds[..rows].partition_point(|&bd| bd <= j0);
        if r_first == rows {
            break;
        }
        let c0 = r_first / 8 * 8;
        for (jj, j) in (j0..j1).enumerate() {
            let ko = b * a.k_strides[0] + j * a.k_strides[1] + kvh * a.k_strides[2];
            let krow = &mut s.kc[jj * dp..(jj + 1) * dp];
            T::to_f32_slice(&a.k[ko..ko + d], &mut krow[..d]);
            krow[d..].fill(0.0);
            let vo = b * a.v_strides[0] + j * a.v_strides[1] + kvh * a.v_strides[2];
            let vrow = &mut s.vc[jj * dp..(jj + 1) * dp];
            T::to_f32_slice(&a.v[vo..vo + d], &mut vrow[..d]);
            vrow[d..].fill(0.0);
        }
        if gemm_qk {
            K::gemm(
                nk,
                rp - c0,
                d,
                &s.kc,
                dp,
                1,
                &s.qt[c0..],
                rp,
                &mut s.st[c0..],
                rp,
                false,
            );
        } else {
            K::dots(nk, c0, rows, dp, &s.q, &s.kc, &mut s.st, rp);
        }
        if let Some(cap) = geo.softcap {
            K::softcap(&mut s.st, rp, nk, c0, cap);
        }
        // Causal (and tile-end) mask: rows whose bound falls inside the tile.
        for r in c0..rows {
            let bd = s.bounds[r];
            if bd < j1 {
                for j in bd.max(j0)..j1 {
                    s.st[(j - j0) * rp + r] = f32::NEG_INFINITY;
                }
            }
        }
        K::softmax_update(&mut s.st, rp, nk, c0, &mut s.m, &mut s.l, &mut s.alpha);
        for r in c0..rows {
            let al = s.alpha[r];
            if al != 1.0 {
                for x in &mut s.o[r * dp..(r + 1) * dp] {
                    *x *= al;
                }
            }
        }
        K::gemm(
            rows - c0,
            dp,
            nk,
            &s.st[c0..],
            1,
            rp,
            &s.vc,
            dp,
            &mut s.o[c0 * dp..],
            dp,
            true,
        );
        j0 = j1;
    }
}

/// Decode form of [`run_block`]: all `q_len * g` query rows of one (batch,
/// kv head) against keys `kv0..kv1`, reading K and V rows in their storage
/// type `S` inside the dot products and the `P·V` accumulation (no
/// conversion pass; every loaded K/V chunk serves all rows). Scores are
/// row-major `[r][LDS]`. Leaves `m`, `l`, `o` in the scratch like
/// `run_block`.
#[allow(clippy::too_many_arguments)]
fn decode_block<T: Elem, S: Src, K: Kern>(
    a: &Attn<'_, T>,
    k: &[S],
    v: &[S],
    geo: &Geo,
    s: &mut Scratch,
    b: usize,
    kvh: usize,
    kv0: usize,
    kv1: usize,
) {
    let (d, dp, g) = (geo.d, geo.dp, geo.g);
    let rows = geo.q_len * g;
    grow(&mut s.q, rows * dp);
    grow(&mut s.st, rows * LDS);
    grow(&mut s.o, rows * dp);
    grow(&mut s.m, rows);
    grow(&mut s.l, rows);
    grow(&mut s.alpha, rows);
    if s.bounds.len() < rows {
        s.bounds.resize(rows, 0);
    }
    for i in 0..geo.q_len {
        for gi in 0..g {
            let r = i * g + gi;
            let h = kvh * g + gi;
            let off = b * a.q_strides[0] + i * a.q_strides[1] + h * a.q_strides[2];
            let qrow = &mut s.q[r * dp..(r + 1) * dp];
            T::to_f32_slice(&a.q[off..off + d], &mut qrow[..d]);
            qrow[d..].fill(0.0);
            for x in qrow.iter_mut() {
                *x *= geo.q_mul;
            }
            s.bounds[r] = geo.bound(i).min(kv1);
        }
    }
    s.m[..rows].fill(f32::NEG_INFINITY);
    s.l[..rows].fill(0.0);
    s.o[..rows * dp].fill(0.0);

    let kb = b * a.k_strides[0] + kvh * a.k_strides[2];
    let vb = b * a.v_strides[0] + kvh * a.v_strides[2];
    let (ks, vs) = (a.k_strides[1], a.v_strides[1]);
    let mut j0 = kv0;
    while j0 < kv1 {
        let j1 = (j0 + BK).min(kv1);
        let nk = j1 - j0;
        let nkp = nk.div_ceil(8) * 8;
        // Rows whose bound is at or before the tile see none of it (bounds
        // are non-decreasing in r).
        let r0 = s.bounds[..rows].partition_point(|&bd| bd <= j0);
        if r0 == rows {
            break;
        }
        let nr = rows - r0;
        K::qk(
            nk,
            nr,
            d,
            dp,
            &s.q[r0 * dp..rows * dp],
            k,
            kb + j0 * ks,
            ks,
            &mut s.st,
            LDS,
        );
        if let Some(cap) = geo.softcap {
            K::softcap(&mut s.st[..nr * LDS], LDS, nr, 0, cap);
        }
        // Causal bound inside the tile, and the padding up to `nkp`.
        for r in 0..nr {
            let from = s.bounds[r0 + r].clamp(j0, j1) - j0;
            s.st[r * LDS + from..r * LDS + nkp].fill(f32::NEG_INFINITY);
        }
        K::softmax_rows(
            &mut s.st,
            LDS,
            nr,
            nkp,
            &mut s.m[r0..rows],
            &mut s.l[r0..rows],
            &mut s.alpha[r0..rows],
        );
        K::pv(
            nk,
            nr,
            d,
            dp,
            &s.st,
            LDS,
            &s.alpha[r0..rows],
            v,
            vb + j0 * vs,
            vs,
            &mut s.o[r0 * dp..rows * dp],
        );
        j0 = j1;
    }
}

/// Raw output pointer shared by prefill items, which write disjoint rows.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: items write disjoint (batch, head, position) rows of the output
// (see `prefill`), so sharing the pointer across threads is race-free.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above; the pointer itself is only read.
unsafe impl<T: Send> Sync for OutPtr<T> {}

fn prefill<T: Elem, K: Kern>(a: &Attn<'_, T>, geo: &Geo, out: &mut [T], tune: &Tuning) {
    let bq = (tune.rows_target / geo.g).clamp(1, geo.q_len);
    let n_blocks = geo.q_len.div_ceil(bq);
    let n_items = geo.b * geo.kvh * n_blocks;
    let out_len = out.len();
    let optr = OutPtr(out.as_mut_ptr());
    let item = |it: usize| {
        // Last blocks first: under a causal mask they are the heaviest.
        let blk = n_blocks - 1 - it % n_blocks;
        let kvh = (it / n_blocks) % geo.kvh;
        let b = it / (n_blocks * geo.kvh);
        let q0 = blk * bq;
        let nq = bq.min(geo.q_len - q0);
        let kv1 = geo.bound(q0 + nq - 1);
        with_scratch(|s| {
            run_block::<T, K>(a, geo, s, tune, b, kvh, q0, nq, 0, kv1);
            for i in 0..nq {
                for gi in 0..geo.g {
                    let r = i * geo.g + gi;
                    let h = kvh * geo.g + gi;
                    let inv = 1.0 / s.l[r];
                    for (y, x) in s.row[..geo.d].iter_mut().zip(&s.o[r * geo.dp..]) {
                        *y = x * inv;
                    }
                    let off = ((b * geo.h + h) * geo.q_len + q0 + i) * geo.d;
                    assert!(off + geo.d <= out_len);
                    let p = optr;
                    // SAFETY: `off + d <= out.len()` (checked above; out is
                    // (b, h, q_len, d) contiguous), and the row (b, h, q0+i)
                    // belongs to this item only: items partition (b, kv
                    // head, position block) and kv head kvh owns heads
                    // kvh*g..(kvh+1)*g. `out` is borrowed mutably for the
                    // whole parallel region.
                    let dst = unsafe { std::slice::from_raw_parts_mut(p.0.add(off), geo.d) };
                    T::from_f32_slice(&s.row[..geo.d], dst);
                }
            }
        });
    };
    let work = geo.b * geo.h * geo.q_len * geo.kv_len;
    if work < tune.serial_work {
        (0..n_items).for_each(item);
    } else {
        crate::pool::run(n_items, &item);
    }
}

fn decode<T: Elem, K: Kern>(a: &Attn<'_, T>, geo: &Geo, out: &mut [T], tune: &Tuning) {
    let rows = geo.g * geo.q_len;
    let groups = geo.b * geo.kvh;
    let work = geo.b * geo.h * geo.q_len * geo.kv_len;
    // A decode pair costs ~2x a prefill pair (no GEMM reuse): half the
    // pairs are the same ~35 µs of single-thread work, about twice the
    // 5-20 µs a fork/join from a non-pool thread costs. Measured (12/4
    // heads, d 64, 2 threads): kv 400 serial 20 µs / split 18 µs, kv 700
    // 36 / 27, kv 1000 55 / 37, kv 4000 248 / 130.
    let split = work.saturating_mul(2) >= tune.serial_work;
    let threads = crate::pool::threads();
    // A one-thread pool would only add a hop to its thread and back.
    let parallel = split && threads > 1;
    let parts = if split {
        let want = (4 * threads).div_ceil(groups);
        want.min(geo.kv_len.div_ceil(tune.part_min.max(1))).max(1)
    } else {
        1
    };
    let part_len = geo.kv_len.div_ceil(parts).div_ceil(BK) * BK;
    let parts = geo.kv_len.div_ceil(part_len);
    // Per item: rows × (m, l, acc[d]).
    let stride = geo.d + 2;
    let chunk = rows * stride;
    let mut partials = PARTIALS.try_with(Cell::take).unwrap_or_default();
    grow(&mut partials, groups * parts * chunk);
    let item = |(it, ch): (usize, &mut [f32])| {
        let part = it % parts;
        let kvh = (it / parts) % geo.kvh;
        let b = it / (parts * geo.kvh);
        let kv0 = part * part_len;
        let kv1 = (kv0 + part_len).min(geo.kv_len);
        with_scratch(|s| {
            if let (Some(k), Some(v)) = (T::as_f16(a.k), T::as_f16(a.v)) {
                decode_block::<T, f16, K>(a, k, v, geo, s, b, kvh, kv0, kv1);
            } else if let (Some(k), Some(v)) = (T::as_f32(a.k), T::as_f32(a.v)) {
                decode_block::<T, f32, K>(a, k, v, geo, s, b, kvh, kv0, kv1);
            } else {
                run_block::<T, K>(a, geo, s, tune, b, kvh, 0, geo.q_len, kv0, kv1);
            }
            for r in 0..rows {
                let c = &mut ch[r * stride..(r + 1) * stride];
                c[0] = s.m[r];
                c[1] = s.l[r];
                c[2..].copy_from_slice(&s.o[r * geo.dp..r * geo.dp + geo.d]);
            }
        });
    };
    let buf = &mut partials[..groups * parts * chunk];
    if parallel {
        crate::pool::run_chunks_mut(buf, chunk, &|i, ch| item((i, ch)));
    } else {
        buf.chunks_mut(chunk).enumerate().for_each(item);
    }

    // Log-sum-exp merge of the parts, then normalise and store.
    with_scratch(|s| {
        grow(&mut s.row, geo.dp);
        for grp in 0..groups {
            let (b, kvh) = (grp / geo.kvh, grp % geo.kvh);
            let base = grp * parts * chunk;
            for r in 0..rows {
                let at = |p: usize| base + p * chunk + r * stride;
                let mx = (0..parts)
                    .map(|p| partials[at(p)])
                    .fold(f32::NEG_INFINITY, f32::max);
                let acc = &mut s.row[..geo.d];
                acc.fill(0.0);
                let mut l = 0.0f32;
                for p in 0..parts {
                    let o = at(p);
                    let w = if partials[o] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        (partials[o] - mx).exp()
                    };
                    if w == 0.0 {
                        continue;
                    }
                    l += partials[o + 1] * w;
                    for (y, x) in acc.iter_mut().zip(&partials[o + 2..o + stride]) {
                        *y += x * w;
                    }
                }
                let inv = 1.0 / l;
                for y in acc.iter_mut() {
                    *y *= inv;
                }
                let (i, gi) = (r / geo.g, r % geo.g);
                let h = kvh * geo.g + gi;
                let off = ((b * geo.h + h) * geo.q_len + i) * geo.d;
                T::from_f32_slice(acc, &mut out[off..off + geo.d]);
            }
        }
    });
    let _ = PARTIALS.try_with(|c| c.set(partials));
}

#[cfg(test)]
mod tests;
