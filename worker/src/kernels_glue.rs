//! Our CPU kernels (`airlock-kernels`) wired into the patched candle-core and
//! mistralrs-core through their hooks (`patches/`, `scripts/patch-crates`).

// The build fails here if a crate is unpatched (a patch not applied or not used).
const _CANDLE_PATCHED: &str = candle_core::airlock_hooks::PATCHED;
const _MISTRALRS_PATCHED: &str = mistralrs_core::AIRLOCK_PATCHED;
