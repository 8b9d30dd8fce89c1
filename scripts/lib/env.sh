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
build_workspace() { cargo build --release --workspace --bins -q "$@"; }
