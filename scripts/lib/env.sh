# Shared environment of the scripts: one cargo target dir outside the clone,
# so every checkout and CI run reuses the compiled mistral.rs chain.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airlock/target}"
export AIRLOCK_CACHE="${AIRLOCK_CACHE:-$HOME/.cache/airlock}"
# Binaries land under the explicit target triple (see .cargo/config.toml).
export AIRLOCK_BIN_DIR="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
export PATH="$HOME/.cargo/bin:$PATH"
# Reproducible from anywhere (docs/image.md "Reproducibility"): rustc writes
# the path of every source file that can panic into the binary. Workspace
# members and build/crates/ reach rustc relative to the workspace root, but
# registry crates are compiled from $CARGO_HOME/registry/src/ and generated
# code from the target dir, both absolute and different for another build
# user or target dir; --remap-path-prefix rewrites them to /cargo and
# /target. No flag names the checkout, so a clone at a new path (CI) reuses
# a warm target dir. Set through CARGO_TARGET_<triple>_RUSTFLAGS, which
# cargo appends to .cargo/config.toml's target rustflags (RUSTFLAGS would
# replace them) for every command, clippy and tests included, so one target
# dir holds one build of the mistral.rs chain; exported here (the value
# follows CARGO_HOME and CARGO_TARGET_DIR, so one target dir always sees the
# same flags) and recomputed by cargo_env. Our value replaces any other: the
# project's rustflags live in .cargo/config.toml alone.
airlock_rustflags() {
  local pair from to abs seen=" " out=()
  for pair in "${CARGO_HOME:-$HOME/.cargo}=/cargo" "$CARGO_TARGET_DIR=/target"; do
    from=${pair%=*} to=${pair##*=}
    case "$from" in /*) abs=$from ;; *) abs=$PWD/$from ;; esac
    # As cargo spells it and with symlinks resolved; the longer (more
    # specific) prefix last, as rustc applies the last one that matches.
    for from in "$abs" "$(readlink -m "$abs")"; do
      case "$seen" in *" $from "*) continue ;; esac
      seen="$seen$from "
      case "$from" in
        *[[:space:]=]*) printf 'env.sh: %s holds a blank or "=": not remapped, binaries will embed it\n' "$from" >&2; continue ;;
      esac
      out+=("${#from} --remap-path-prefix=$from=$to")
    done
  done
  printf '%s\n' "${out[@]}" | sort -n -s -k1,1 | cut -d' ' -f2- | paste -sd' '
}
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS
CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=$(airlock_rustflags)
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
  env -u SOURCE_DATE_EPOCH -u TZ -u LC_ALL \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$(airlock_rustflags)" cargo "$@"
}
build_workspace() { cargo_env build --release --workspace --bins -q "$@"; }
