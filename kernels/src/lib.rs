//! CPU kernels of the inference worker.
//!
//! The registry's candle-core and mistralrs-core are patched at build time
//! (`patches/`, `scripts/patch-crates`) with hooks that call these kernels;
//! the worker registers them at start (`worker/src/kernels_glue.rs`). The
//! kernels work on plain slices, so this crate does not depend on candle and
//! is tested on its own against plain reference implementations.
//!
//! The appliance's CPU baseline is x86-64-v3 (AVX2, FMA, F16C), fixed at
//! compile time by `.cargo/config.toml`; every SIMD path has a portable
//! fallback used on other targets and by the reference tests.

pub mod attention;
pub mod pool;
pub mod qmatmul;
