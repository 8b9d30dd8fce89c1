#!/usr/bin/env bash
# The admin recipients of an image (docs/security-team.md, "Answer
# recipients"): OpenPGP public keys the answers of operator jobs are sealed
# to. Checked here on the build host with gpg, never parsed by PID 1.
#
# Sourced by scripts/build-image (recipients_install), or run alone:
#   scripts/lib/recipients.sh SRC_DIR DEST_DIR
# Every regular file in SRC_DIR (armored or binary, one public key per file)
# must hold exactly one primary public key (no secret key), not revoked, not
# expired, with an encryption-capable subkey that is itself not revoked or
# expired. Each is written to DEST_DIR/<FINGERPRINT>.asc (40 upper-case hex,
# armored, 0644); the fingerprints are printed on stdout, sorted. The first
# bad file stops with one line on stderr naming it and its reason.

# recipients_check HOME FILE: prints the key's fingerprint and returns 0,
# or prints why the file is refused and returns 1. HOME is a throwaway gpg
# home (gpg --show-keys imports nothing into it).
recipients_check() {
  local home=$1 file=$2 colons
  if ! colons=$(gpg --homedir "$home" --batch --no-tty --no-autostart --with-colons \
                  --show-keys "$file" 2>/dev/null); then
    echo "not an OpenPGP public key (gpg --show-keys failed)"
    return 1
  fi
  # Fields (gpg doc/DETAILS): 1 type, 2 validity, 7 expiry, 10 fingerprint
  # (fpr lines), 12 capabilities. A fpr line follows its pub/sub line.
  awk -F: -v now="$(date +%s)" '
    function dead(v, x) {
      if (v == "r") return "revoked"
      if (v == "e" || (x != "" && x + 0 <= now + 0)) return "expired"
      if (v == "i") return "invalid"
      return ""
    }
    $1 == "sec" || $1 == "ssb" { secret = 1 }
    $1 == "pub" { pubs++; pstate = dead($2, $7); want = "pub"; next }
    $1 == "sub" { if ($12 ~ /e/ && dead($2, $7) == "") enc = 1; want = ""; next }
    $1 == "fpr" && want == "pub" { fpr = $10; want = "" }
    END {
      if (secret) { print "holds a secret key (give the public key only: gpg --armor --export FPR)"; exit 1 }
      if (pubs == 0) { print "holds no public key"; exit 1 }
      if (pubs > 1) { print "holds " pubs " keys (one public key per file)"; exit 1 }
      if (pstate != "") { print "key " fpr " is " pstate; exit 1 }
      if (!enc) { print "key " fpr " has no usable encryption subkey"; exit 1 }
      if (fpr !~ /^[0-9A-F]+$/ || length(fpr) != 40) { print "key " fpr " is not a v4 key (40-hex fingerprint)"; exit 1 }
      print fpr
    }' <<<"$colons"
}

# recipients_install SRC_DIR DEST_DIR: see the header. Runs in a subshell
# (its own trap and gpg home).
recipients_install() (
  set -euo pipefail
  export LC_ALL=C
  src=$1 dest=$2
  prog=${RECIPIENTS_PROG:-recipients}
  fail() { printf '%s: %s\n' "$prog" "$*" >&2; exit 1; }
  [ -d "$src" ] || fail "recipients directory '$src' is not a directory"
  command -v gpg >/dev/null || fail "gpg is missing (run scripts/setup-host)"
  home=$(mktemp -d)
  trap 'gpgconf --homedir "$home" --kill all >/dev/null 2>&1 || true; rm -rf "$home"' EXIT
  chmod 700 "$home"
  mkdir -p "$dest"
  declare -A seen=()
  n=0
  while IFS= read -r -d '' f; do
    [ -f "$f" ] && [ ! -L "$f" ] || fail "recipient file $f: not a regular file (one public key file per recipient)"
    [ -r "$f" ] || fail "recipient file $f: not readable"
    [ "$(stat -c %s "$f")" -le 1048576 ] || fail "recipient file $f: larger than 1 MiB"
    fpr=$(recipients_check "$home" "$f") || fail "recipient file $f: ${fpr:-gpg output not understood}"
    [ -z "${seen[$fpr]:-}" ] || fail "recipient file $f: the same key $fpr as ${seen[$fpr]}"
    seen[$fpr]=$f
    # One key per home: the export holds exactly this file's key.
    rm -rf "$home/k" && mkdir -m 700 "$home/k"
    gpg --homedir "$home/k" --batch --no-tty --no-autostart --quiet --import "$f" 2>/dev/null \
      || fail "recipient file $f: gpg --import failed"
    gpg --homedir "$home/k" --batch --no-tty --no-autostart --armor --export "$fpr" > "$dest/$fpr.asc" 2>/dev/null \
      && [ -s "$dest/$fpr.asc" ] || fail "recipient file $f: gpg --export of $fpr failed"
    chmod 0644 "$dest/$fpr.asc"
    n=$((n + 1))
  done < <(find "$src" -mindepth 1 -maxdepth 1 -print0 | sort -z)
  [ "$n" -gt 0 ] || fail "recipients directory '$src' holds no key files"
  printf '%s\n' "${!seen[@]}" | sort
)

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# = 2 ] || { echo "usage: recipients.sh SRC_DIR DEST_DIR" >&2; exit 2; }
  recipients_install "$1" "$2"
fi
