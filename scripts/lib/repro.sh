# The second build of `scripts/build-image --check-reproducible`: another
# checkout, another build user's cargo home (docs/image.md "Reproducibility").
# Sourced by build-image; functions only.

# repro_checkout SRC DEST: DEST becomes a copy of the checkout SRC at another
# path: a git clone of SRC's HEAD plus SRC's uncommitted changes (modified,
# added, deleted and untracked files that are not ignored), so it builds
# exactly what SRC builds. DEST is kept between runs and updated in place:
# git rewrites only the files that changed and the uncommitted files keep
# SRC's mtimes, so cargo rebuilds in DEST's target dir only what changed.
# DEST/build/ (patched crates, scripts/patch-crates) is kept. A SRC that is
# not a git checkout is copied whole (without build/, out/ and .git).
repro_checkout() {
  local src=$1 dest=$2 head
  if ! head=$(git -C "$src" rev-parse --verify -q HEAD 2>/dev/null); then
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} + || return 1
    tar -C "$src" --exclude=./build --exclude=./out --exclude=./.git -cf - . | tar -C "$dest" -xf -
    return
  fi
  if [ ! -d "$dest/.git" ]; then
    rm -rf "$dest" && mkdir -p "$dest" && git -C "$dest" init -q || return 1
  fi
  # (--refresh first: a file whose mtime alone changed would be rewritten.)
  git -C "$dest" fetch -q --no-tags "$src" "$head" &&
    { git -C "$dest" update-index -q --refresh || true; } &&
    git -C "$dest" checkout -q --force --detach "$head" &&
    git -C "$dest" clean -q -ffdx -e /build/ || return 1
  # Uncommitted changes: changed and untracked files copied with their mtimes,
  # deleted ones removed.
  git -C "$src" diff --no-renames --name-only -z --diff-filter=D HEAD |
    (cd "$dest" && xargs -0 -r rm -f --)
  { git -C "$src" diff --no-renames --name-only -z --diff-filter=d HEAD
    git -C "$src" ls-files -z --others --exclude-standard; } |
    tar -C "$src" --null --no-recursion -T - -cf - | tar -C "$dest" -xf -
}

# repro_cargo_home FROM TO: TO becomes the cargo home of another build user,
# holding only what cargo downloads: the registry index and the .crate files
# (and git sources' databases), copied from FROM (only what is new). cargo
# then unpacks the sources itself under TO/registry/src/ when it builds
# offline (CARGO_NET_OFFLINE=true); the .crate files are checked against
# Cargo.lock's checksums, so they are the bytes a download would give.
repro_cargo_home() {
  local from=$1 to=$2 d
  for d in registry/index registry/cache git/db; do
    [ -d "$from/$d" ] || continue
    mkdir -p "$to/$d" && cp -a -u "$from/$d/." "$to/$d/" || return 1
  done
}

# repro_embedded_paths INITRAMFS_ZST PATH...: "COUNT× PATH" for each PATH
# found in the (decompressed) initramfs, nothing when none is.
repro_embedded_paths() {
  local cpio p c
  cpio=$(mktemp)
  zstd -dcq "$1" > "$cpio"
  shift
  for p in "$@"; do
    c=$({ grep -a -o -F -- "$p" "$cpio" || true; } | wc -l)
    [ "$c" = 0 ] || printf '%s× %s\n' "$c" "$p"
  done
  rm -f "$cpio"
}
