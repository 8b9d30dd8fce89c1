# Shared environment of the scripts: one cargo target dir outside the clone,
# so every checkout and CI run reuses the compiled mistral.rs chain.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airlock/target}"
export AIRLOCK_CACHE="${AIRLOCK_CACHE:-$HOME/.cache/airlock}"
# Binaries land under the explicit target triple (see .cargo/config.toml).
export AIRLOCK_BIN_DIR="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
export PATH="$HOME/.cargo/bin:$PATH"
AIRLOCK_T0=${AIRLOCK_T0:-$(date +%s)}
export AIRLOCK_T0
step() { printf '\n== %s ==\n' "$*"; }
elapsed() { local s=$(( $(date +%s) - AIRLOCK_T0 )); printf '%dm%02ds' $((s/60)) $((s%60)); }
# Every script builds the same unit set as `cargo test --workspace`: building
# single packages (-p) unifies dependency features differently and would
# compile the whole mistral.rs chain a second time.
#
# cargo always runs without SOURCE_DATE_EPOCH, TZ and LC_ALL from the caller
# (build-image exports them for its own tools): cc-based build scripts
# (aws-lc-sys, ring, onig, mimalloc) watch SOURCE_DATE_EPOCH, and a changed
# value recompiles the whole chain. .cargo/config.toml's [env] sets a fixed
# SOURCE_DATE_EPOCH for every cargo build instead.
#
# Before any cargo command: the patched registry crates Cargo.toml's
# [patch.crates-io] points at (scripts/patch-crates; a no-op when current).
cargo_env() {
  "$(dirname "${BASH_SOURCE[0]}")/../patch-crates" || return 1
  env -u SOURCE_DATE_EPOCH -u TZ -u LC_ALL cargo "$@"
}
build_workspace() { cargo_env build --release --workspace --bins -q "$@"; }
