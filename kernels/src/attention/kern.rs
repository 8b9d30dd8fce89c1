//! Inner kernels of the attention driver: small GEMMs, dot products, the
//! online-softmax tile update and a vector `exp`/`tanh`.
//!
//! Two implementations of [`Kern`]: [`Portable`] (plain Rust, any target) and
//! [`Avx2`] (AVX2 + FMA intrinsics, only compiled when the target enables
//! those features, which the appliance's x86-64-v3 baseline does). The driver
//! is generic over `Kern`, so the tests run both against the reference.
//!
//! Score tiles are stored transposed, `st[j * ld + r]` (key `j`, query row
//! `r`), so the softmax update is vectorised across query rows and the
//! `P·V` product reads `P` with a column stride.
//!
//! Every function takes slices and checks (`assert!`) up front that they are
//! long enough for the largest offset it touches; the sizes come from the
//! driver's scratch arithmetic, not from caller input, so a failed check is a
//! bug in this module, never a reachable input error.

use half::f16;

/// K/V element type the decode kernels read directly (no conversion pass).
pub(crate) trait Src: Copy + Send + Sync + 'static {
    const ZERO: Self;
    /// The element as f32 (the portable kernels).
    #[cfg_attr(
        all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma",
            not(test)
        ),
        allow(dead_code)
    )]
    fn get(self) -> f32;
    /// 8 elements at `p` as f32.
    ///
    /// # Safety
    /// `p` readable for 8 elements.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    unsafe fn load8(p: *const Self) -> core::arch::x86_64::__m256;
    /// The first `n < 8` elements at `p` as f32, the other lanes 0.
    ///
    /// # Safety
    /// `p` readable for `n` elements.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[inline(always)]
    unsafe fn load_part(p: *const Self, n: usize) -> core::arch::x86_64::__m256 {
        let mut t = [Self::ZERO; 8];
        // SAFETY: `n < 8` elements readable at `p` (caller), `t` holds 8.
        unsafe {
            core::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), n.min(8));
            Self::load8(t.as_ptr())
        }
    }
}

impl Src for f32 {
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> core::arch::x86_64::__m256 {
        // SAFETY: 8 f32 readable at `p` (caller).
        unsafe { core::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl Src for f16 {
    const ZERO: f16 = f16::ZERO;
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> core::arch::x86_64::__m256 {
        use core::arch::x86_64::*;
        #[cfg(target_feature = "f16c")]
        // SAFETY: 8 f16 (16 bytes, `f16` is a transparent u16) readable at
        // `p` (caller).
        unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>()))
        }
        #[cfg(not(target_feature = "f16c"))]
        // SAFETY: 8 f16 readable at `p` (caller).
        unsafe {
            let mut t = [0.0f32; 8];
            for (i, x) in t.iter_mut().enumerate() {
                *x = (*p.add(i)).to_f32();
            }
            _mm256_loadu_ps(t.as_ptr())
        }
    }
}

/// Kernel set the driver is generic over.
pub(crate) trait Kern {
    /// `c[i*ldc + j] (+)= Σ_p a[i*a_rs + p*a_cs] * b[p*ldb + j]` for
    /// `i < m`, `j < n`, `p < k`. `n` must be a multiple of 8.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    );

    /// `st[j*ld + r] = Σ_d q[r*dp + d] * kc[j*dp + d]` for `j < nk`,
    /// `r0 <= r < r1`; `dp` is a multiple of 8.
    #[allow(clippy::too_many_arguments)]
    fn dots(
        nk: usize,
        r0: usize,
        r1: usize,
        dp: usize,
        q: &[f32],
        kc: &[f32],
        st: &mut [f32],
        ld: usize,
    );

    /// `st[j*ld + r] = cap * tanh(st[j*ld + r])` for `j < nk`, `c0 <= r < ld`.
    fn softcap(st: &mut [f32], ld: usize, nk: usize, c0: usize, cap: f32);

    /// Online-softmax update of lanes `c0..ld` (`c0`, `ld` multiples of 8)
    /// over keys `0..nk` of the tile: new running max `m`, `alpha =
    /// exp(m_old - m_new)`, `st <- exp(st - m_new)`, `l <- l*alpha + Σ p`.
    /// Rows with no finite score so far keep `m = -inf` and get `p = 0`.
    #[allow(clippy::too_many_arguments)]
    fn softmax_update(
        st: &mut [f32],
        ld: usize,
        nk: usize,
        c0: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    );

    /// Decode scores straight from K rows in their storage type:
    /// `s[r*lds + jj] = Σ_{e<d} q[r*dp + e] * k[ko + jj*ks + e]` for
    /// `r < rows`, `jj < nk`. `q` rows are zero beyond `d` (`dp` is `d`
    /// rounded up to 8). Lanes `nk..nk + 3` of each row may be overwritten
    /// (`lds >= nk + 3`, `s` holds `rows * lds`).
    #[allow(clippy::too_many_arguments)]
    fn qk<S: Src>(
        nk: usize,
        rows: usize,
        d: usize,
        dp: usize,
        q: &[f32],
        k: &[S],
        ko: usize,
        ks: usize,
        s: &mut [f32],
        lds: usize,
    );

    /// Row-major online-softmax update of rows `0..rows` over lanes
    /// `0..nkp` (`nkp`, `lds` multiples of 8; padding lanes hold `-inf`):
    /// same contract as [`Kern::softmax_update`] with keys along the row.
    fn softmax_rows(
        s: &mut [f32],
        lds: usize,
        rows: usize,
        nkp: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    );

    /// Decode `P·V` straight from V rows in their storage type:
    /// `o[r*dp + e] = o[r*dp + e] * alpha[r] + Σ_{jj<nk} p[r*lds + jj] *
    /// v[vo + jj*vs + e]` for `r < rows`, `e < d` (lanes `d..dp` get 0 added).
    #[allow(clippy::too_many_arguments)]
    fn pv<S: Src>(
        nk: usize,
        rows: usize,
        d: usize,
        dp: usize,
        p: &[f32],
        lds: usize,
        alpha: &[f32],
        v: &[S],
        vo: usize,
        vs: usize,
        o: &mut [f32],
    );
}

/// Checks shared by every `qk` / `pv` implementation: all slice offsets the
/// kernel touches are in bounds.
#[allow(clippy::too_many_arguments)]
fn check_kv<S>(
    nk: usize,
    rows: usize,
    d: usize,
    dp: usize,
    x: &[S],
    xo: usize,
    xs: usize,
    q_or_o: usize,
) {
    assert!(dp.is_multiple_of(8) && dp >= d && dp < d + 8);
    assert!(q_or_o >= rows * dp);
    if nk > 0 {
        let last = (nk - 1)
            .checked_mul(xs)
            .and_then(|t| t.checked_add(xo))
            .and_then(|t| t.checked_add(d));
        assert!(matches!(last, Some(e) if e <= x.len()));
    }
}

/// Plain-Rust kernels (any target; also the tests' check of the driver).
#[cfg_attr(
    all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        not(test)
    ),
    allow(dead_code)
)]
pub(crate) struct Portable;

impl Kern for Portable {
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        for i in 0..m {
            let crow = &mut c[i * ldc..i * ldc + n];
            if !accumulate {
                crow.fill(0.0);
            }
            for p in 0..k {
                let av = a[i * a_rs + p * a_cs];
                let brow = &b[p * ldb..p * ldb + n];
                for (cv, bv) in crow.iter_mut().zip(brow) {
                    *cv += av * bv;
                }
            }
        }
    }

    fn dots(
        nk: usize,
        r0: usize,
        r1: usize,
        dp: usize,
        q: &[f32],
        kc: &[f32],
        st: &mut [f32],
        ld: usize,
    ) {
        for j in 0..nk {
            let krow = &kc[j * dp..(j + 1) * dp];
            for r in r0..r1 {
                let qrow = &q[r * dp..(r + 1) * dp];
                st[j * ld + r] = qrow.iter().zip(krow).map(|(x, y)| x * y).sum();
            }
        }
    }

    fn softcap(st: &mut [f32], ld: usize, nk: usize, c0: usize, cap: f32) {
        for j in 0..nk {
            for x in &mut st[j * ld + c0..(j + 1) * ld] {
                *x = cap * x.tanh();
            }
        }
    }

    fn softmax_update(
        st: &mut [f32],
        ld: usize,
        nk: usize,
        c0: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        for r in c0..ld {
            let mut mx = m[r];
            for j in 0..nk {
                mx = mx.max(st[j * ld + r]);
            }
            let safe = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
            let al = (m[r] - safe).exp();
            let mut sum = 0.0f32;
            for j in 0..nk {
                let p = (st[j * ld + r] - safe).exp();
                st[j * ld + r] = p;
                sum += p;
            }
            l[r] = l[r] * al + sum;
            m[r] = mx;
            alpha[r] = al;
        }
    }

    fn qk<S: Src>(
        nk: usize,
        rows: usize,
        d: usize,
        dp: usize,
        q: &[f32],
        k: &[S],
        ko: usize,
        ks: usize,
        s: &mut [f32],
        lds: usize,
    ) {
        check_kv(nk, rows, d, dp, k, ko, ks, q.len());
        for jj in 0..nk {
            let krow = &k[ko + jj * ks..ko + jj * ks + d];
            for r in 0..rows {
                let qrow = &q[r * dp..r * dp + d];
                s[r * lds + jj] = qrow.iter().zip(krow).map(|(x, y)| x * y.get()).sum();
            }
        }
    }

    fn softmax_rows(
        s: &mut [f32],
        lds: usize,
        rows: usize,
        nkp: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        for r in 0..rows {
            let row = &mut s[r * lds..r * lds + nkp];
            let mx = row.iter().fold(m[r], |a, b| a.max(*b));
            let safe = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
            let al = (m[r] - safe).exp();
            let mut sum = 0.0f32;
            for x in row.iter_mut() {
                *x = (*x - safe).exp();
                sum += *x;
            }
            l[r] = l[r] * al + sum;
            m[r] = mx;
            alpha[r] = al;
        }
    }

    fn pv<S: Src>(
        nk: usize,
        rows: usize,
        d: usize,
        dp: usize,
        p: &[f32],
        lds: usize,
        alpha: &[f32],
        v: &[S],
        vo: usize,
        vs: usize,
        o: &mut [f32],
    ) {
        check_kv(nk, rows, d, dp, v, vo, vs, o.len());
        for r in 0..rows {
            let orow = &mut o[r * dp..r * dp + d];
            let al = alpha[r];
            if al != 1.0 {
                for x in orow.iter_mut() {
                    *x *= al;
                }
            }
            for jj in 0..nk {
                let pj = p[r * lds + jj];
                let vrow = &v[vo + jj * vs..vo + jj * vs + d];
                for (x, y) in orow.iter_mut().zip(vrow) {
                    *x += pj * y.get();
                }
            }
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
pub(crate) use avx2::Avx2;

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    use super::{check_kv, Kern, Src};
    use core::arch::x86_64::*;

    /// AVX2 + FMA kernels.
    pub(crate) struct Avx2;

    /// `exp(x)` for 8 lanes: Cephes-style range reduction `x = n ln2 + r`,
    /// degree-7 polynomial for `e^r`, `2^n` built in the exponent bits.
    /// Relative error ~2e-7; inputs below -87.3 (and -inf) give exactly 0,
    /// inputs above 88.37 saturate.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(-87.336_55);
        let hi = _mm256_set1_ps(88.376_26);
        let xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
        // x >= lo (false for NaN and -inf): keep, else 0.
        let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, lo);
        _mm256_and_ps(y, keep)
    }

    /// `tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1))`; absolute error ~1e-7.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn tanh8(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let ax = _mm256_andnot_ps(sign, x);
        let e = exp8(_mm256_add_ps(ax, ax));
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_sub_ps(
            one,
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
        );
        _mm256_or_ps(t, _mm256_and_ps(x, sign))
    }

    /// Sums of four vectors, one per lane of the result.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        let ab = _mm256_hadd_ps(a, b);
        let cd = _mm256_hadd_ps(c, d);
        let h = _mm256_hadd_ps(ab, cd);
        _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
    }

    /// `MR x (8*NV)` register tile of [`Kern::gemm`].
    ///
    /// # Safety
    /// `a` readable at `i*a_rs + p*a_cs` (i < MR, p < k); `b` readable at
    /// `p*ldb + 0..8*NV`; `c` readable/writable at `i*ldc + 0..8*NV`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro<const MR: usize, const NV: usize>(
        k: usize,
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        // SAFETY: all offsets are within the ranges the caller guarantees.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); NV]; MR];
            if accumulate {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(c.add(i * ldc + 8 * v));
                    }
                }
            }
            for p in 0..k {
                let bp = b.add(p * ldb);
                let mut bv = [_mm256_setzero_ps(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(bp.add(8 * v));
                }
                let ap = a.add(p * a_cs);
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(i * a_rs));
                    for (x, bvv) in row.iter_mut().zip(bv.iter()) {
                        *x = _mm256_fmadd_ps(av, *bvv, *x);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (v, x) in row.iter().enumerate() {
                    _mm256_storeu_ps(c.add(i * ldc + 8 * v), *x);
                }
            }
        }
    }

    /// Dot products of `MR` query rows with one key row.
    ///
    /// # Safety
    /// `q` readable at `i*dp + 0..dp` (i < MR), `k` at `0..dp`, `out` writable
    /// at `0..MR`; `dp` a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot_rows<const MR: usize>(dp: usize, q: *const f32, k: *const f32, out: *mut f32) {
        // SAFETY: offsets within the caller's guarantee.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut d = 0;
            while d < dp {
                let kv = _mm256_loadu_ps(k.add(d));
                for (i, x) in acc.iter_mut().enumerate().take(MR) {
                    *x = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i * dp + d)), kv, *x);
                }
                d += 8;
            }
            let s = hsum4(acc[0], acc[1], acc[2], acc[3]);
            if MR == 4 {
                _mm_storeu_ps(out, s);
            } else {
                let mut tmp = [0.0f32; 4];
                _mm_storeu_ps(tmp.as_mut_ptr(), s);
                for (i, t) in tmp.iter().enumerate().take(MR) {
                    *out.add(i) = *t;
                }
            }
        }
    }

    impl Kern for Avx2 {
        fn gemm(
            m: usize,
            n: usize,
            k: usize,
            a: &[f32],
            a_rs: usize,
            a_cs: usize,
            b: &[f32],
            ldb: usize,
            c: &mut [f32],
            ldc: usize,
            accumulate: bool,
        ) {
            // SAFETY: this module is only compiled when AVX2 and FMA are
            // enabled for the whole target.
            unsafe { gemm_impl(m, n, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate) }
        }

        fn dots(
            nk: usize,
            r0: usize,
            r1: usize,
            dp: usize,
            q: &[f32],
            kc: &[f32],
            st: &mut [f32],
            ld: usize,
        ) {
            // SAFETY: AVX2 and FMA are enabled for the whole target.
            unsafe { dots_impl(nk, r0, r1, dp, q, kc, st, ld) }
        }

        fn softcap(st: &mut [f32], ld: usize, nk: usize, c0: usize, cap: f32) {
            // SAFETY: AVX2 and FMA are enabled for the whole target.
            unsafe { softcap_impl(st, ld, nk, c0, cap) }
        }

        fn softmax_update(
            st: &mut [f32],
            ld: usize,
            nk: usize,
            c0: usize,
            m: &mut [f32],
            l: &mut [f32],
            alpha: &mut [f32],
        ) {
            // SAFETY: AVX2 and FMA are enabled for the whole target.
            unsafe { softmax_update_impl(st, ld, nk, c0, m, l, alpha) }
        }

        fn qk<S: Src>(
            nk: usize,
            rows: usize,
            d: usize,
            dp: usize,
            q: &[f32],
            k: &[S],
            ko: usize,
            ks: usize,
            s: &mut [f32],
            lds: usize,
        ) {
            // SAFETY: AVX2 and FMA are enabled for the whole target.
            unsafe { qk_impl(nk, rows, d, dp, q, k, ko, ks, s, lds) }
        }

        fn softmax_rows(
            s: &mut [f32],
            lds: usize,
            rows: usize,
            nkp: usize,
            m: &mut [f32],
            l: &mut [f32],
            alpha: &mut [f32],
        ) {
            // SAFETY: AVX2 and FMA are enabled for the whole target.
            unsafe { softmax_rows_impl(s, lds, rows, nkp, m, l, alpha) }
        }

        fn pv<S: Src>(
            nk: usize,
            rows: usize,
            d: usize,
            dp: usize,
            p: &[f32],
            lds: usize,
            alpha: &[f32],
            v: &[S],
            vo: usize,
            vs: usize,
            o: &mut [f32],
        ) {
            // SAFETY: AVX2 and FMA are enabled for the whole target.
            unsafe { pv_impl(nk, rows, d, dp, p, lds, alpha, v, vo, vs, o) }
        }
    }

    /// Horizontal sum of one vector.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(a: __m256) -> f32 {
        let x = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_add_ss(x, _mm_movehdup_ps(x));
        _mm_cvtss_f32(x)
    }

    /// Horizontal max of one vector.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hmax(a: __m256) -> f32 {
        let x = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_max_ss(x, _mm_movehdup_ps(x));
        _mm_cvtss_f32(x)
    }

    /// Scores of `MR` query rows against `NK` consecutive keys, reading the
    /// keys in their storage type: each K chunk is loaded (and converted)
    /// once for all `MR` rows.
    ///
    /// # Safety
    /// `q` readable at `r*dp + 0..dp` (r < MR, lanes `d..dp` zero), `k` at
    /// `jj*ks + 0..d` (jj < NK), `out` writable at `r*lds + 0..max(NK, 4)`
    /// (`0..1` for NK = 1).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk_micro<S: Src, const MR: usize, const NK: usize>(
        d: usize,
        dp: usize,
        q: *const f32,
        k: *const S,
        ks: usize,
        out: *mut f32,
        lds: usize,
    ) {
        // SAFETY: offsets within the caller's guarantee.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); NK]; MR];
            let full = d & !7;
            let mut c = 0;
            while c < full {
                let mut kv = [_mm256_setzero_ps(); NK];
                for (jj, x) in kv.iter_mut().enumerate() {
                    *x = S::load8(k.add(jj * ks + c));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let qv = _mm256_loadu_ps(q.add(r * dp + c));
                    for (a, kx) in row.iter_mut().zip(kv.iter()) {
                        *a = _mm256_fmadd_ps(qv, *kx, *a);
                    }
                }
                c += 8;
            }
            if c < d {
                let mut kv = [_mm256_setzero_ps(); NK];
                for (jj, x) in kv.iter_mut().enumerate() {
                    *x = S::load_part(k.add(jj * ks + c), d - c);
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let qv = _mm256_loadu_ps(q.add(r * dp + c));
                    for (a, kx) in row.iter_mut().zip(kv.iter()) {
                        *a = _mm256_fmadd_ps(qv, *kx, *a);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let o = out.add(r * lds);
                if NK == 1 {
                    *o = hsum(row[0]);
                } else {
                    // 4 lanes even for NK < 4: the caller guarantees room
                    // (lanes past NK are rewritten or never read).
                    let z = _mm256_setzero_ps();
                    let at = |i: usize| if i < NK { row[i] } else { z };
                    _mm_storeu_ps(o, hsum4(at(0), at(1), at(2), at(3)));
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn qk_impl<S: Src>(
        nk: usize,
        rows: usize,
        d: usize,
        dp: usize,
        q: &[f32],
        k: &[S],
        ko: usize,
        ks: usize,
        s: &mut [f32],
        lds: usize,
    ) {
        if nk == 0 || rows == 0 {
            return;
        }
        check_kv(nk, rows, d, dp, k, ko, ks, q.len());
        // Multi-key tiles store 4 lanes from key j with j + NK <= nk: up to
        // lane nk + 2 of a row, inside the row when lds >= nk + 3.
        assert!(nk + 3 <= lds && s.len() >= rows * lds);
        let (qp, sp) = (q.as_ptr(), s.as_mut_ptr());
        // In bounds: ko + (nk-1)*ks + d <= k.len() (`check_kv`).
        let kp = k.as_ptr().wrapping_add(ko);
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(4);
            let mut j = 0;
            while j < nk {
                let n = nk - j;
                // SAFETY: rows r..r+mr <= rows (q holds rows*dp), keys
                // j..j+step <= nk (k holds ko + (nk-1)*ks + d), outputs
                // r*lds + j..+max(step, 4) <= r*lds + nk + 3 <= rows*lds:
                // all checked.
                unsafe {
                    let (q1, k1, o1) = (qp.add(r * dp), kp.add(j * ks), sp.add(r * lds + j));
                    macro_rules! call {
                        ($mr:literal, $nk:literal) => {{
                            qk_micro::<S, $mr, $nk>(d, dp, q1, k1, ks, o1, lds);
                            $nk
                        }};
                    }
                    // Tiles keep MR*NK accumulators + NK keys + a Q chunk
                    // within the 16 ymm registers.
                    j += match (mr, n >= 4, n >= 3) {
                        (4, _, _) if n >= 2 => call!(4, 2),
                        (4, _, _) => call!(4, 1),
                        (3, _, true) => call!(3, 3),
                        (3, _, false) => call!(3, 1),
                        (2, true, _) => call!(2, 4),
                        (2, false, _) => call!(2, 1),
                        (_, true, _) => call!(1, 4),
                        _ => call!(1, 1),
                    };
                }
            }
            r += mr;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn softmax_rows_impl(
        s: &mut [f32],
        lds: usize,
        rows: usize,
        nkp: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        if rows == 0 {
            return;
        }
        assert!(lds.is_multiple_of(8) && nkp.is_multiple_of(8) && nkp <= lds);
        assert!(s.len() >= (rows - 1) * lds + nkp);
        assert!(m.len() >= rows && l.len() >= rows && alpha.len() >= rows);
        for r in 0..rows {
            // SAFETY: lanes r*lds + 0..nkp lie within the length checked
            // above.
            unsafe {
                let row = s.as_mut_ptr().add(r * lds);
                let mut mx = _mm256_set1_ps(m[r]);
                let mut c = 0;
                while c < nkp {
                    mx = _mm256_max_ps(_mm256_loadu_ps(row.add(c)), mx);
                    c += 8;
                }
                let mx = hmax(mx);
                let safe = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
                let al = _mm256_cvtss_f32(exp8(_mm256_set1_ps(m[r] - safe)));
                let sv = _mm256_set1_ps(safe);
                let mut sum0 = _mm256_setzero_ps();
                let mut sum1 = _mm256_setzero_ps();
                let mut c = 0;
                while c + 16 <= nkp {
                    let e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row.add(c)), sv));
                    let e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row.add(c + 8)), sv));
                    _mm256_storeu_ps(row.add(c), e0);
                    _mm256_storeu_ps(row.add(c + 8), e1);
                    sum0 = _mm256_add_ps(sum0, e0);
                    sum1 = _mm256_add_ps(sum1, e1);
                    c += 16;
                }
                if c < nkp {
                    let e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(row.add(c)), sv));
                    _mm256_storeu_ps(row.add(c), e0);
                    sum0 = _mm256_add_ps(sum0, e0);
                }
                l[r] = l[r] * al + hsum(_mm256_add_ps(sum0, sum1));
                m[r] = mx;
                alpha[r] = al;
            }
        }
    }

    /// `MR` output rows × `NV` chunks of 8 of `P·V`, reading V in its
    /// storage type; with `TAIL` the (single) chunk has only `part < 8`
    /// valid elements.
    ///
    /// # Safety
    /// `p` readable at `r*lds + 0..nk`, `alpha` at `0..MR`, `v` at
    /// `j*vs + 0..8*NV` (`0..part` with `TAIL`) for `j < nk`, `o` readable and
    /// writable at `r*dp + 0..8*NV` (r < MR).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_micro<S: Src, const MR: usize, const NV: usize, const TAIL: bool>(
        nk: usize,
        p: *const f32,
        lds: usize,
        alpha: *const f32,
        v: *const S,
        vs: usize,
        part: usize,
        o: *mut f32,
        dp: usize,
    ) {
        // SAFETY: offsets within the caller's guarantee.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); NV]; MR];
            for (r, row) in acc.iter_mut().enumerate() {
                let al = _mm256_broadcast_ss(&*alpha.add(r));
                for (w, x) in row.iter_mut().enumerate() {
                    *x = _mm256_mul_ps(_mm256_loadu_ps(o.add(r * dp + 8 * w)), al);
                }
            }
            for j in 0..nk {
                let vp = v.add(j * vs);
                let mut vv = [_mm256_setzero_ps(); NV];
                for (w, x) in vv.iter_mut().enumerate() {
                    *x = if TAIL {
                        S::load_part(vp.add(8 * w), part)
                    } else {
                        S::load8(vp.add(8 * w))
                    };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let pb = _mm256_broadcast_ss(&*p.add(r * lds + j));
                    for (x, vx) in row.iter_mut().zip(vv.iter()) {
                        *x = _mm256_fmadd_ps(pb, *vx, *x);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (w, x) in row.iter().enumerate() {
                    _mm256_storeu_ps(o.add(r * dp + 8 * w), *x);
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn pv_impl<S: Src>(
        nk: usize,
        rows: usize,
        d: usize,
        dp: usize,
        p: &[f32],
        lds: usize,
        alpha: &[f32],
        v: &[S],
        vo: usize,
        vs: usize,
        o: &mut [f32],
    ) {
        if rows == 0 {
            return;
        }
        check_kv(nk, rows, d, dp, v, vo, vs, o.len());
        assert!(nk <= lds && p.len() >= (rows - 1) * lds + nk);
        assert!(alpha.len() >= rows);
        let (pp, ap, op) = (p.as_ptr(), alpha.as_ptr(), o.as_mut_ptr());
        // In bounds when nk > 0 (`check_kv`); never dereferenced otherwise.
        let vp = v.as_ptr().wrapping_add(vo);
        let full = d / 8;
        let mut r = 0;
        while r < rows {
            let mr = (rows - r).min(4);
            // Chunks per call: MR*NV accumulators (>= 8 chains where the
            // rows allow it) + NV V chunks + a broadcast in 16 registers.
            let nv_max = match mr {
                4 => 2,
                3 => 3,
                _ => 4,
            };
            let mut c = 0;
            while c * 8 < d {
                let tail = c == full;
                let nv = if tail { 1 } else { (full - c).min(nv_max) };
                // SAFETY: rows r..r+mr <= rows (o holds rows*dp, p holds
                // (rows-1)*lds + nk), V elements j*vs + 8c..8c + 8*nv <= d
                // (or ..d for the tail) for j < nk: all checked above.
                unsafe {
                    let (p1, a1, v1, o1) = (
                        pp.add(r * lds),
                        ap.add(r),
                        vp.add(8 * c),
                        op.add(r * dp + 8 * c),
                    );
                    let part = d - 8 * c;
                    macro_rules! call {
                        ($mr:literal, $nv:literal, $t:literal) => {
                            pv_micro::<S, $mr, $nv, $t>(nk, p1, lds, a1, v1, vs, part, o1, dp)
                        };
                    }
                    match (mr, nv, tail) {
                        (4, _, true) => call!(4, 1, true),
                        (4, 2, _) => call!(4, 2, false),
                        (4, _, _) => call!(4, 1, false),
                        (3, _, true) => call!(3, 1, true),
                        (3, 3, _) => call!(3, 3, false),
                        (3, 2, _) => call!(3, 2, false),
                        (3, _, _) => call!(3, 1, false),
                        (2, _, true) => call!(2, 1, true),
                        (2, 4, _) => call!(2, 4, false),
                        (2, 3, _) => call!(2, 3, false),
                        (2, 2, _) => call!(2, 2, false),
                        (2, _, _) => call!(2, 1, false),
                        (_, _, true) => call!(1, 1, true),
                        (_, 4, _) => call!(1, 4, false),
                        (_, 3, _) => call!(1, 3, false),
                        (_, 2, _) => call!(1, 2, false),
                        _ => call!(1, 1, false),
                    }
                }
                c += nv;
            }
            r += mr;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn gemm_impl(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        assert!(n.is_multiple_of(8));
        assert!(a.len() > (m - 1) * a_rs + k.saturating_sub(1) * a_cs || k == 0);
        assert!(k == 0 || b.len() >= (k - 1) * ldb + n);
        assert!(c.len() >= (m - 1) * ldc + n);
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let mut i0 = 0;
        while i0 < m {
            let mr = (m - i0).min(4);
            let mut j0 = 0;
            while j0 < n {
                let nv = ((n - j0) / 8).min(2);
                // SAFETY: rows i0..i0+mr < m, columns j0..j0+8*nv <= n,
                // p < k: all within the lengths asserted above.
                unsafe {
                    let (a1, b1, c1) = (ap.add(i0 * a_rs), bp.add(j0), cp.add(i0 * ldc + j0));
                    macro_rules! call {
                        ($mr:literal, $nv:literal) => {
                            micro::<$mr, $nv>(k, a1, a_rs, a_cs, b1, ldb, c1, ldc, accumulate)
                        };
                    }
                    match (mr, nv) {
                        (4, 2) => call!(4, 2),
                        (4, _) => call!(4, 1),
                        (3, 2) => call!(3, 2),
                        (3, _) => call!(3, 1),
                        (2, 2) => call!(2, 2),
                        (2, _) => call!(2, 1),
                        (_, 2) => call!(1, 2),
                        _ => call!(1, 1),
                    }
                }
                j0 += 8 * nv;
            }
            i0 += mr;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn dots_impl(
        nk: usize,
        r0: usize,
        r1: usize,
        dp: usize,
        q: &[f32],
        kc: &[f32],
        st: &mut [f32],
        ld: usize,
    ) {
        if nk == 0 || r1 <= r0 {
            return;
        }
        assert!(dp.is_multiple_of(8));
        assert!(q.len() >= r1 * dp);
        assert!(kc.len() >= nk * dp);
        assert!(r1 <= ld && st.len() >= (nk - 1) * ld + r1);
        let (qp, kp, sp) = (q.as_ptr(), kc.as_ptr(), st.as_mut_ptr());
        for j in 0..nk {
            let mut r = r0;
            while r < r1 {
                let mr = (r1 - r).min(4);
                // SAFETY: rows r..r+mr <= r1, key j < nk, output lanes
                // j*ld + r..r+mr <= (nk-1)*ld + r1: asserted above.
                unsafe {
                    let (q1, k1, o1) = (qp.add(r * dp), kp.add(j * dp), sp.add(j * ld + r));
                    match mr {
                        4 => dot_rows::<4>(dp, q1, k1, o1),
                        3 => dot_rows::<3>(dp, q1, k1, o1),
                        2 => dot_rows::<2>(dp, q1, k1, o1),
                        _ => dot_rows::<1>(dp, q1, k1, o1),
                    }
                }
                r += mr;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn softcap_impl(st: &mut [f32], ld: usize, nk: usize, c0: usize, cap: f32) {
        if nk == 0 {
            return;
        }
        assert!(ld.is_multiple_of(8) && c0.is_multiple_of(8) && c0 <= ld);
        assert!(st.len() >= nk * ld);
        let capv = _mm256_set1_ps(cap);
        let sp = st.as_mut_ptr();
        for j in 0..nk {
            let mut c = c0;
            while c < ld {
                // SAFETY: j*ld + c + 8 <= nk*ld <= st.len().
                unsafe {
                    let p = sp.add(j * ld + c);
                    _mm256_storeu_ps(p, _mm256_mul_ps(capv, tanh8(_mm256_loadu_ps(p))));
                }
                c += 8;
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn softmax_update_impl(
        st: &mut [f32],
        ld: usize,
        nk: usize,
        c0: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        assert!(ld.is_multiple_of(8) && c0.is_multiple_of(8) && c0 <= ld);
        assert!(st.len() >= nk * ld);
        assert!(m.len() >= ld && l.len() >= ld && alpha.len() >= ld);
        let sp = st.as_mut_ptr();
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut c = c0;
        while c < ld {
            // SAFETY: lanes c..c+8 <= ld <= m/l/alpha lengths; tile
            // offsets j*ld + c + 8 <= nk*ld <= st.len().
            unsafe {
                let m_old = _mm256_loadu_ps(m.as_ptr().add(c));
                let mut mx = m_old;
                for j in 0..nk {
                    mx = _mm256_max_ps(_mm256_loadu_ps(sp.add(j * ld + c)), mx);
                }
                let none = _mm256_cmp_ps::<_CMP_EQ_OQ>(mx, neg_inf);
                let safe = _mm256_andnot_ps(none, mx);
                let al = exp8(_mm256_sub_ps(m_old, safe));
                let mut sum0 = _mm256_setzero_ps();
                let mut sum1 = _mm256_setzero_ps();
                let mut j = 0;
                while j + 1 < nk {
                    let p0 = sp.add(j * ld + c);
                    let p1 = sp.add((j + 1) * ld + c);
                    let e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p0), safe));
                    let e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p1), safe));
                    _mm256_storeu_ps(p0, e0);
                    _mm256_storeu_ps(p1, e1);
                    sum0 = _mm256_add_ps(sum0, e0);
                    sum1 = _mm256_add_ps(sum1, e1);
                    j += 2;
                }
                if j < nk {
                    let p0 = sp.add(j * ld + c);
                    let e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(p0), safe));
                    _mm256_storeu_ps(p0, e0);
                    sum0 = _mm256_add_ps(sum0, e0);
                }
                let lp = l.as_mut_ptr().add(c);
                let lv = _mm256_fmadd_ps(_mm256_loadu_ps(lp), al, _mm256_add_ps(sum0, sum1));
                _mm256_storeu_ps(lp, lv);
                _mm256_storeu_ps(m.as_mut_ptr().add(c), mx);
                _mm256_storeu_ps(alpha.as_mut_ptr().add(c), al);
            }
            c += 8;
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    #[test]
    fn exp8_and_tanh_accuracy() {
        use core::arch::x86_64::*;
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut x = -90.0f32;
        while x < 88.0 {
            let xs = [
                x,
                x + 0.013,
                x + 0.029,
                x + 0.041,
                x + 0.057,
                x + 0.063,
                x + 0.071,
                x + 0.089,
            ];
            let mut e = [0.0f32; 8];
            // SAFETY: 8-element arrays for loads and stores.
            unsafe {
                let v = _mm256_loadu_ps(xs.as_ptr());
                _mm256_storeu_ps(e.as_mut_ptr(), super::avx2::exp8(v));
            }
            for (xi, ei) in xs.iter().zip(e) {
                let want = (*xi as f64).exp();
                if want > 1e-37 {
                    worst_exp = worst_exp.max(((ei as f64) - want).abs() / want);
                } else if *xi < -87.34 {
                    assert_eq!(ei, 0.0);
                }
            }
            x += 0.1;
        }
        let mut x = -20.0f32;
        while x < 20.0 {
            let xs = [x; 8];
            let mut st = xs;
            <super::Avx2 as super::Kern>::softcap(&mut st, 8, 1, 0, 1.0);
            worst_tanh = worst_tanh.max(((st[0] as f64) - (x as f64).tanh()).abs());
            x += 0.0137;
        }
        assert!(worst_exp < 5e-7, "exp rel err {worst_exp}");
        assert!(worst_tanh < 5e-7, "tanh abs err {worst_tanh}");
        let mut z = [f32::NEG_INFINITY; 8];
        let (mut m, mut l, mut a) = ([f32::NEG_INFINITY; 8], [0.0f32; 8], [0.0f32; 8]);
        <super::Avx2 as super::Kern>::softmax_update(&mut z, 8, 1, 0, &mut m, &mut l, &mut a);
        assert!(z.iter().all(|p| *p == 0.0) && l.iter().all(|s| *s == 0.0));
    }
}
