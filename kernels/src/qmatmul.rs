//! Quantised matmul: one parallel region over 2-D tiles, int8 micro-kernels.
//!
//! `dst[i][j] = dot(weight row j, activation row i)` for `m` activation rows
//! (f32, quantised here into candle's `VecDotType`) and `n` weight rows (raw
//! GGUF blocks). Compared with candle-core 0.10.2's `k_quants::matmul`:
//!
//! * the activations are quantised once, in parallel over rows, into a pooled
//!   buffer (no allocation per call in the steady state);
//! * one parallel region (`crate::pool`) covers the whole `m × n` output, cut into 2-D tiles
//!   (activation rows × contiguous weight rows): for decode (`m = 1`) the
//!   weight rows are split over every thread even for small `n`; for prefill
//!   a weight tile stays in cache while many activation rows reuse it;
//! * for Q4_K, Q8_0, Q4_0, Q4_1, Q5_0 the tiles run AVX2 micro-kernels that
//!   read the raw blocks and compute 4 weight rows × 4 activation rows per
//!   call (integer sums, then float scaling); every other type runs the
//!   caller's `dot` closure per output.
//!
//! The micro-kernels compute the same integer sums per block as ggml/candle;
//! only the order of the float accumulation differs.

mod buffer;
mod kernels;
pub mod q8k;
pub mod reference;
#[cfg(test)]
mod tests;

use std::fmt;

pub use kernels::kernel_dot;

/// GGML type ids the driver knows the block layout of.
pub mod wtype {
    /// `Q4_0`: 32 values, f16 scale, 4-bit.
    pub const Q4_0: u32 = 2;
    /// `Q4_1`: 32 values, f16 scale and min, 4-bit.
    pub const Q4_1: u32 = 3;
    /// `Q5_0`: 32 values, f16 scale, 5-bit.
    pub const Q5_0: u32 = 6;
    /// `Q5_1`: 32 values, f16 scale and min, 5-bit.
    pub const Q5_1: u32 = 7;
    /// `Q8_0`: 32 values, f16 scale, 8-bit.
    pub const Q8_0: u32 = 8;
    /// `Q2_K` super-blocks of 256.
    pub const Q2_K: u32 = 10;
    /// `Q3_K` super-blocks of 256.
    pub const Q3_K: u32 = 11;
    /// `Q4_K` super-blocks of 256.
    pub const Q4_K: u32 = 12;
    /// `Q5_K` super-blocks of 256.
    pub const Q5_K: u32 = 13;
    /// `Q6_K` super-blocks of 256.
    pub const Q6_K: u32 = 14;
}

/// One quantised matmul, as the candle hook hands it over.
pub struct QMatMul<'a> {
    /// GGML type id of the weights: 2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0,
    /// 10 Q2_K, 11 Q3_K, 12 Q4_K, 13 Q5_K, 14 Q6_K (others possible: then
    /// only the closures are used).
    pub wtype: u32,
    /// Activation rows.
    pub m: usize,
    /// Inner dimension (values per row).
    pub k: usize,
    /// Weight rows (output columns).
    pub n: usize,
    /// `m` rows × `k`, row-major.
    pub lhs: &'a [f32],
    /// `n` weight rows, each `rhs_row_bytes`, raw GGUF blocks (ggml layout).
    pub rhs: &'a [u8],
    /// Bytes of one weight row.
    pub rhs_row_bytes: usize,
    /// Bytes of one quantised activation row in candle's `VecDotType` (Q8_K
    /// for the K-quants, Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1).
    pub act_row_bytes: usize,
    /// Alignment the activation buffer must have (`align_of` the VecDotType).
    pub act_align: usize,
    /// One f32 row of `k` → one activation row (candle's `from_float`).
    pub quantize_row: &'a (dyn Fn(&[f32], &mut [u8]) + Sync),
    /// (weight row bytes, activation row bytes) → candle's `vec_dot` over `k`.
    pub dot: &'a (dyn Fn(&[u8], &[u8]) -> f32 + Sync),
}

/// A check of [`matmul`] that failed; nothing was computed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QMatMulError {
    /// A size (`m × k`, `n × rhs_row_bytes`, `m × n`, the activation buffer)
    /// overflows `usize`.
    Overflow,
    /// `lhs` does not hold `m × k` values.
    LhsLen { expected: usize, got: usize },
    /// `rhs` does not hold `n × rhs_row_bytes` bytes.
    RhsLen { expected: usize, got: usize },
    /// `dst` does not hold `m × n` values.
    DstLen { expected: usize, got: usize },
    /// `act_align` is not a power of two up to 4096.
    ActAlign(usize),
    /// For a known `wtype`, `k` is not a multiple of its block size.
    KBlock { wtype: u32, k: usize, block: usize },
    /// For a known `wtype`, `rhs_row_bytes` is not `k / block × block bytes`.
    RhsRowBytes { expected: usize, got: usize },
    /// For a known `wtype`, `act_row_bytes` is not `k / block × VecDotType bytes`.
    ActRowBytes { expected: usize, got: usize },
}

impl fmt::Display for QMatMulError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow => write!(f, "qmatmul: a size overflows usize"),
            Self::LhsLen { expected, got } => {
                write!(f, "qmatmul: lhs holds {got} values, m × k is {expected}")
            }
            Self::RhsLen { expected, got } => write!(
                f,
                "qmatmul: rhs holds {got} bytes, n × rhs_row_bytes is {expected}"
            ),
            Self::DstLen { expected, got } => {
                write!(f, "qmatmul: dst holds {got} values, m × n is {expected}")
            }
            Self::ActAlign(a) => write!(
                f,
                "qmatmul: act_align {a} is not a power of two up to {MAX_ALIGN}"
            ),
            Self::KBlock { wtype, k, block } => write!(
                f,
                "qmatmul: k {k} is not a multiple of the block size {block} of type {wtype}"
            ),
            Self::RhsRowBytes { expected, got } => write!(
                f,
                "qmatmul: rhs_row_bytes {got}, the weight type's rows take {expected}"
            ),
            Self::ActRowBytes { expected, got } => write!(
                f,
                "qmatmul: act_row_bytes {got}, the activation type's rows take {expected}"
            ),
        }
    }
}

impl std::error::Error for QMatMulError {}

const MAX_ALIGN: usize = 4096;

/// Block geometry of a known weight type and of its VecDotType.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    /// Values per block.
    block: usize,
    /// Bytes of one weight block.
    wbytes: usize,
    /// Bytes of one activation (VecDotType) block.
    abytes: usize,
}

const Q8_0_BYTES: usize = 34;
const Q8_1_BYTES: usize = 36;
const Q8_K_BYTES: usize = 292;

fn geometry(wtype: u32) -> Option<Geometry> {
    let (block, wbytes, abytes) = match wtype {
        wtype::Q4_0 => (32, 18, Q8_0_BYTES),
        wtype::Q4_1 => (32, 20, Q8_1_BYTES),
        wtype::Q5_0 => (32, 22, Q8_0_BYTES),
        wtype::Q5_1 => (32, 24, Q8_1_BYTES),
        wtype::Q8_0 => (32, 34, Q8_0_BYTES),
        wtype::Q2_K => (256, 84, Q8_K_BYTES),
        wtype::Q3_K => (256, 110, Q8_K_BYTES),
        wtype::Q4_K => (256, 144, Q8_K_BYTES),
        wtype::Q5_K => (256, 176, Q8_K_BYTES),
        wtype::Q6_K => (256, 210, Q8_K_BYTES),
        _ => return None,
    };
    Some(Geometry {
        block,
        wbytes,
        abytes,
    })
}

/// Which tile code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Micro-kernel when the type has one, else the closures.
    Auto,
    /// The `dot` closure for every output.
    Generic,
}

/// `dst` (`m × n`, row-major) = activations × weightsᵀ.
///
/// Checks every length first and returns an error without touching `dst`.
pub fn matmul(a: &QMatMul<'_>, dst: &mut [f32]) -> Result<(), QMatMulError> {
    run(a, dst, Path::Auto)
}

/// As [`matmul`] but always through the `dot` closure (same quantisation,
/// buffers and tiling): the reference the micro-kernels are compared with.
pub fn matmul_generic(a: &QMatMul<'_>, dst: &mut [f32]) -> Result<(), QMatMulError> {
    run(a, dst, Path::Generic)
}

/// Checked sizes of one call.
struct Checked {
    /// Known block geometry, `None` for other types.
    nblocks: Option<usize>,
}

fn check(a: &QMatMul<'_>, dst: &[f32]) -> Result<Checked, QMatMulError> {
    let lhs_len = a.m.checked_mul(a.k).ok_or(QMatMulError::Overflow)?;
    if a.lhs.len() != lhs_len {
        return Err(QMatMulError::LhsLen {
            expected: lhs_len,
            got: a.lhs.len(),
        });
    }
    let rhs_len =
        a.n.checked_mul(a.rhs_row_bytes)
            .ok_or(QMatMulError::Overflow)?;
    if a.rhs.len() != rhs_len {
        return Err(QMatMulError::RhsLen {
            expected: rhs_len,
            got: a.rhs.len(),
        });
    }
    let dst_len = a.m.checked_mul(a.n).ok_or(QMatMulError::Overflow)?;
    if dst.len() != dst_len {
        return Err(QMatMulError::DstLen {
            expected: dst_len,
            got: dst.len(),
        });
    }
    if !a.act_align.is_power_of_two() || a.act_align > MAX_ALIGN {
        return Err(QMatMulError::ActAlign(a.act_align));
    }
    // The activation buffer: m rows of the stride, plus the alignment slack.
    let stride = act_stride(a.act_row_bytes, a.act_align).ok_or(QMatMulError::Overflow)?;
    a.m.checked_mul(stride)
        .and_then(|b| b.checked_add(MAX_ALIGN))
        .ok_or(QMatMulError::Overflow)?;
    let Some(g) = geometry(a.wtype) else {
        return Ok(Checked { nblocks: None });
    };
    if !a.k.is_multiple_of(g.block) {
        return Err(QMatMulError::KBlock {
            wtype: a.wtype,
            k: a.k,
            block: g.block,
        });
    }
    let nb = a.k / g.block;
    let rhs_row = nb * g.wbytes;
    if a.rhs_row_bytes != rhs_row {
        return Err(QMatMulError::RhsRowBytes {
            expected: rhs_row,
            got: a.rhs_row_bytes,
        });
    }
    let act_row = nb * g.abytes;
    if a.act_row_bytes != act_row {
        return Err(QMatMulError::ActRowBytes {
            expected: act_row,
            got: a.act_row_bytes,
        });
    }
    Ok(Checked { nblocks: Some(nb) })
}

/// Bytes between activation rows: the row rounded up to a cache line (and
/// to `act_align`), so every row starts aligned.
fn act_stride(act_row_bytes: usize, act_align: usize) -> Option<usize> {
    let unit = act_align.max(64);
    act_row_bytes.checked_next_multiple_of(unit)
}

fn run(a: &QMatMul<'_>, dst: &mut [f32], path: Path) -> Result<(), QMatMulError> {
    let checked = check(a, dst)?;
    if a.m == 0 || a.n == 0 {
        return Ok(());
    }
    if a.k == 0 {
        dst.fill(0.0);
        return Ok(());
    }
    let stride = act_stride(a.act_row_bytes, a.act_align).ok_or(QMatMulError::Overflow)?;
    let align = a.act_align.max(64);
    let mut buf = buffer::ActBuffer::take(a.m * stride, align);
    let acts = buf.bytes_mut();
    quantize(a, acts, stride);
    let acts: &[u8] = acts;

    let ops = Operands {
        rhs: a.rhs,
        rhs_row_bytes: a.rhs_row_bytes,
        acts,
        act_stride: stride,
        act_row_bytes: a.act_row_bytes,
        m: a.m,
        n: a.n,
    };
    let kernel = match (path, checked.nblocks) {
        (Path::Auto, Some(nb)) => kernels::Kernel::for_type(a.wtype, nb),
        _ => None,
    };
    match kernel {
        Some(kernel) => drive(&ops, &kernel, dst),
        None => drive(&ops, &Generic { dot: a.dot }, dst),
    }
    Ok(())
}

/// Quantises every lhs row into `acts` (rows `stride` apart), in parallel
/// over rows when there are several.
fn quantize(a: &QMatMul<'_>, acts: &mut [u8], stride: usize) {
    let row = a.act_row_bytes;
    // The k-quants' Q8_K: our vector quantiser (the same bytes as candle's).
    let own_q8k = geometry(a.wtype).is_some_and(|g| g.abytes == Q8_K_BYTES);
    let one = |(x, out): (&[f32], &mut [u8])| {
        let out = &mut out[..row];
        // candle's Q8_K quantiser leaves bsums alone on an all-zero block;
        // a fresh buffer in candle is zeroed, so is a reused one here.
        out.fill(0);
        if own_q8k {
            q8k::quantize_row_q8_k(x, out);
        } else {
            (a.quantize_row)(x, out);
        }
    };
    if a.m == 1 {
        one((a.lhs, &mut acts[..stride]));
    } else {
        // Enough values per task that the region's overhead stays small.
        let rows = (16384 / a.k.max(1)).max(1);
        let tasks = a.m.div_ceil(rows);
        let base = ActsPtr(acts.as_mut_ptr());
        let len = acts.len();
        crate::pool::run(tasks, &|t| {
            for i in t * rows..((t + 1) * rows).min(a.m) {
                // SAFETY: rows i*stride..(i+1)*stride are inside `acts`
                // (len ≥ m·stride, checked by the caller's sizing) and each
                // row belongs to exactly one task.
                let out = unsafe { base.row(i * stride, stride, len) };
                one((&a.lhs[i * a.k..(i + 1) * a.k], out));
            }
        });
    }
}

/// The activation buffer shared by the quantising tasks (disjoint rows).
struct ActsPtr(*mut u8);

// SAFETY: only used to hand out disjoint rows of one `&mut [u8]` that
// outlives the region (see `quantize`).
unsafe impl Sync for ActsPtr {}

impl ActsPtr {
    /// Bytes `at..at + n` of the buffer of `len` bytes.
    ///
    /// # Safety
    /// `at + n <= len`, and no other live reference covers these bytes.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, at: usize, n: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + n <= len);
        // SAFETY: in bounds and exclusive per the contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), n) }
    }
}

/// The two operands of the tile loop.
struct Operands<'a> {
    rhs: &'a [u8],
    rhs_row_bytes: usize,
    acts: &'a [u8],
    act_stride: usize,
    act_row_bytes: usize,
    m: usize,
    n: usize,
}

impl Operands<'_> {
    fn w(&self, j: usize) -> &[u8] {
        &self.rhs[j * self.rhs_row_bytes..(j + 1) * self.rhs_row_bytes]
    }
    fn a(&self, i: usize) -> &[u8] {
        &self.acts[i * self.act_stride..i * self.act_stride + self.act_row_bytes]
    }
}

/// Weight rows per micro-kernel call.
pub(crate) const NR: usize = 4;
/// Activation rows per micro-kernel call.
pub(crate) const MR: usize = 4;

/// A block of outputs: `out[a][w] = dot(weight row w, activation row a)`.
pub(crate) trait Tile: Sync {
    fn tile<const R: usize, const C: usize>(
        &self,
        w: [&[u8]; R],
        a: [&[u8]; C],
        out: &mut [[f32; R]; C],
    );

    /// Decode: `out.len()` consecutive weight rows (`w`, `row_bytes` each)
    /// against the one activation row `a`.
    fn rows(&self, w: &[u8], row_bytes: usize, a: &[u8], out: &mut [f32]) {
        rows_by_tile(self, w, row_bytes, a, out);
    }
}

/// [`Tile::rows`] through the 1 × 1 tile, one weight row at a time.
pub(crate) fn rows_by_tile<K: Tile + ?Sized>(
    kernel: &K,
    w: &[u8],
    row_bytes: usize,
    a: &[u8],
    out: &mut [f32],
) {
    for (o, w) in out.iter_mut().zip(w.chunks_exact(row_bytes)) {
        let mut t = [[0f32; 1]; 1];
        kernel.tile([w], [a], &mut t);
        *o = t[0][0];
    }
}

/// The closure path.
struct Generic<'a> {
    dot: &'a (dyn Fn(&[u8], &[u8]) -> f32 + Sync),
}

impl Tile for Generic<'_> {
    fn tile<const R: usize, const C: usize>(
        &self,
        w: [&[u8]; R],
        a: [&[u8]; C],
        out: &mut [[f32; R]; C],
    ) {
        for (o, a) in out.iter_mut().zip(a) {
            for (o, w) in o.iter_mut().zip(w) {
                *o = (self.dot)(w, a);
            }
        }
    }
}

/// Bytes of weights one tile holds (fits L2 next to the activation tile).
const W_TILE_BYTES: usize = 128 * 1024;
/// Bytes of activations one tile holds.
const A_TILE_BYTES: usize = 256 * 1024;

/// Tile sizes: `(activation rows, weight rows)` per task.
fn plan(
    m: usize,
    n: usize,
    rhs_row_bytes: usize,
    act_stride: usize,
    threads: usize,
) -> (usize, usize) {
    let round4 = |x: usize| x.div_ceil(NR) * NR;
    let mut tn = round4((W_TILE_BYTES / rhs_row_bytes.max(1)).clamp(NR, n.max(NR)));
    let mut tm = (A_TILE_BYTES / act_stride.max(1)).max(MR).min(m.max(1));
    let want = 4 * threads;
    let tasks = |tm: usize, tn: usize| m.div_ceil(tm) * n.div_ceil(tn);
    // Prefer splitting the weight rows (each task then streams its own
    // weights once), down to 8 rows per task, then the activation rows.
    while tasks(tm, tn) < want && tn > 2 * NR {
        tn = round4(tn / 2);
    }
    while tasks(tm, tn) < want && tm > 4 * MR {
        tm = tm.div_ceil(2);
    }
    // Whole micro-kernel steps per tile (the last tile takes the rest).
    if tm < m {
        tm = (tm / MR).max(1) * MR;
    }
    (tm, tn)
}

/// Raw `dst` shared by the tasks; each task writes only its own tile.
struct DstPtr {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: the pointer is only used to write disjoint tiles of one `&mut`
// slice that outlives the parallel region (see `DstPtr::row`).
unsafe impl Send for DstPtr {}
// SAFETY: as above; no two tasks touch the same element.
unsafe impl Sync for DstPtr {}

impl DstPtr {
    /// Row `i`, columns `j..j + len`.
    ///
    /// # Safety
    /// `i < m`, `j + len <= n`, and no other live reference covers these
    /// elements.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, i: usize, j: usize, len: usize) -> &mut [f32] {
        // SAFETY: in bounds of the m × n slice per the contract; exclusive
        // because the tiles partition the output.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.n + j), len) }
    }
}

/// Runs the tiles of the whole output in one parallel region.
fn drive<K: Tile>(ops: &Operands<'_>, kernel: &K, dst: &mut [f32]) {
    let threads = crate::pool::threads();
    let (tm, tn) = plan(ops.m, ops.n, ops.rhs_row_bytes, ops.act_stride, threads);
    let mt = ops.m.div_ceil(tm);
    let nt = ops.n.div_ceil(tn);
    let out = DstPtr {
        ptr: dst.as_mut_ptr(),
        n: ops.n,
    };
    let task = |t: usize| {
        // Weight-tile major: neighbouring tasks share activation rows.
        let (ti, tj) = (t % mt, t / mt);
        let i0 = ti * tm;
        let i1 = (i0 + tm).min(ops.m);
        let j0 = tj * tn;
        let j1 = (j0 + tn).min(ops.n);
        tile_range(ops, kernel, &out, i0..i1, j0..j1);
    };
    if mt * nt == 1 {
        task(0);
    } else {
        crate::pool::run(mt * nt, &task);
    }
}

/// One task: activation rows `is` × weight rows `js`.
fn tile_range<K: Tile>(
    ops: &Operands<'_>,
    kernel: &K,
    out: &DstPtr,
    is: std::ops::Range<usize>,
    js: std::ops::Range<usize>,
) {
    let mut j = js.start;
    // Fewer activation rows than a micro-kernel step (decode): one weight
    // row at a time, a single sequential stream through the weights.
    if is.len() < MR {
        let w = &ops.rhs[js.start * ops.rhs_row_bytes..js.end * ops.rhs_row_bytes];
        for i in is {
            // SAFETY: row i < m, columns js inside n; the tile is this task's.
            let o = unsafe { out.row(i, js.start, js.len()) };
            kernel.rows(w, ops.rhs_row_bytes, ops.a(i), o);
        }
        return;
    }
    while j < js.end {
        if j + NR <= js.end {
            let w: [&[u8]; NR] = std::array::from_fn(|r| ops.w(j + r));
            rows_for(ops, kernel, out, is.clone(), j, w);
            j += NR;
        } else {
            rows_for(ops, kernel, out, is.clone(), j, [ops.w(j)]);
            j += 1;
        }
    }
}

/// Weight rows `w` (starting at column `j`) against activation rows `is`.
fn rows_for<K: Tile, const R: usize>(
    ops: &Operands<'_>,
    kernel: &K,
    out: &DstPtr,
    is: std::ops::Range<usize>,
    j: usize,
    w: [&[u8]; R],
) {
    let mut i = is.start;
    while i < is.end {
        if i + MR <= is.end {
            let mut o = [[0f32; R]; MR];
            kernel.tile(w, std::array::from_fn(|c| ops.a(i + c)), &mut o);
            for (c, o) in o.iter().enumerate() {
                // SAFETY: i + c < m and j + R <= n (callers stay in their
                // tile); the tile belongs to this task only.
                unsafe { out.row(i + c, j, R) }.copy_from_slice(o);
            }
            i += MR;
        } else {
            let mut o = [[0f32; R]; 1];
            kernel.tile(w, [ops.a(i)], &mut o);
            // SAFETY: as above, for row i < m.
            unsafe { out.row(i, j, R) }.copy_from_slice(&o[0]);
            i += 1;
        }
    }
}
