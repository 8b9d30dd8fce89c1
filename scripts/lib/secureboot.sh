#!/usr/bin/env bash
# UEFI Secure Boot signing of the image's EFI binaries (docs/image.md,
# "Secure Boot"), with Debian's sbsigntool.
#
# Sourced by scripts/build-image (secureboot_check, secureboot_sign), or run
# alone:
#   scripts/lib/secureboot.sh check KEY CERT
#       checks a db signing key and its certificate; prints the certificate's
#       subject and SHA-256 fingerprint
#   scripts/lib/secureboot.sh sign KEY CERT IN OUT [EPOCH]
#       signs the PE file IN into OUT (OUT may be IN); the signing time is
#       EPOCH (default SOURCE_DATE_EPOCH, else 0)
#   scripts/lib/secureboot.sh ovmf-vars PK.crt KEK.crt db.crt OUT [GUID]
#       a copy of OVMF's empty variable store with PK, KEK and db enrolled
#       (owner GUID, default the Airlock demo GUID) and Secure Boot on
# Refusals are one line on stderr, `PROG: reason` (PROG: SECUREBOOT_PROG,
# default secureboot), exit status 1.
#
# Determinism: an Authenticode signature by an RSA key is PKCS#1 v1.5, which
# has no random input; but sbsign (OpenSSL's PKCS7_sign) adds a signed
# `signingTime` attribute with the current time, so two signatures made a
# second apart differ. sbsign has no option for it: it runs under libfaketime
# (`faketime -f`) with the clock frozen at EPOCH (the commit time in
# build-image), which makes the whole signed file a function of the input,
# the key and EPOCH. Only RSA keys are accepted: an ECDSA signature is
# randomised (and few PC firmwares take ECDSA in db).

# secureboot_fail MSG: the one-line refusal.
secureboot_fail() {
  printf '%s: %s\n' "${SECUREBOOT_PROG:-secureboot}" "$*" >&2
  return 1
}

# secureboot_tools: sbsign, sbverify, faketime and openssl are installed.
secureboot_tools() {
  local t
  for t in sbsign:sbsigntool sbverify:sbsigntool faketime:faketime openssl:openssl; do
    command -v "${t%%:*}" >/dev/null \
      || { secureboot_fail "${t%%:*} is missing (run scripts/setup-host: package ${t#*:})"; return 1; }
  done
}

# secureboot_check KEY CERT: refuses (one line, status 1) a key or
# certificate sbsign could not use, or a key that is not the certificate's;
# on success prints "SUBJECT (sha256 FINGERPRINT)".
secureboot_check() {
  local key=$1 cert=$2 kpub cpub subject fpr bits
  secureboot_tools || return 1
  [ -e "$key" ] || { secureboot_fail "Secure Boot key '$key' does not exist"; return 1; }
  [ -f "$key" ] || { secureboot_fail "Secure Boot key '$key' is not a regular file"; return 1; }
  [ -r "$key" ] || { secureboot_fail "Secure Boot key '$key' is not readable"; return 1; }
  [ -e "$cert" ] || { secureboot_fail "Secure Boot certificate '$cert' does not exist"; return 1; }
  [ -f "$cert" ] || { secureboot_fail "Secure Boot certificate '$cert' is not a regular file"; return 1; }
  [ -r "$cert" ] || { secureboot_fail "Secure Boot certificate '$cert' is not readable"; return 1; }
  # An encrypted key would make sbsign ask for its passphrase on the terminal.
  if grep -qE -- '-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type: 4,ENCRYPTED' "$key"; then
    secureboot_fail "Secure Boot key '$key' is encrypted with a passphrase (sbsign needs the key unencrypted; see docs/security-team.md, \"Secure Boot keys\")"
    return 1
  fi
  kpub=$(openssl pkey -in "$key" -passin pass: -pubout 2>/dev/null </dev/null) \
    || { secureboot_fail "Secure Boot key '$key' is not a PEM private key (openssl pkey cannot read it)"; return 1; }
  bits=$(openssl rsa -in "$key" -passin pass: -noout -text 2>/dev/null </dev/null \
           | sed -n '1s/^Private-Key: (\([0-9]*\) bit.*/\1/p') || bits=""
  [ -n "$bits" ] || { secureboot_fail "Secure Boot key '$key' is not an RSA key (UEFI db signatures are RSA; an ECDSA signature would not be reproducible)"; return 1; }
  [ "$bits" -ge 2048 ] || { secureboot_fail "Secure Boot key '$key' is RSA-$bits (at least 2048 bits)"; return 1; }
  cpub=$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null </dev/null) \
    || { secureboot_fail "Secure Boot certificate '$cert' is not a PEM X.509 certificate (openssl x509 cannot read it)"; return 1; }
  [ "$kpub" = "$cpub" ] \
    || { secureboot_fail "Secure Boot key '$key' does not belong to certificate '$cert' (their public keys differ)"; return 1; }
  subject=$(openssl x509 -in "$cert" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
  fpr=$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g')
  printf '%s (sha256 %s)\n' "$subject" "$fpr"
}

# secureboot_sign KEY CERT IN OUT EPOCH: signs IN into OUT (the clock of
# sbsign frozen at EPOCH, see the header), then checks OUT with sbverify.
secureboot_sign() {
  local key=$1 cert=$2 in=$3 out=$4 epoch=$5 tmp when
  tmp=$out.sbsign.$$
  when=$(date -u -d "@$epoch" '+%Y-%m-%d %H:%M:%S') \
    || { secureboot_fail "signing time '$epoch' is not a Unix time"; return 1; }
  # sbsign would add a second signature next to the old one.
  if sbverify --list "$in" 2>/dev/null | grep -q '^signature [0-9]'; then
    secureboot_fail "$in is already signed (remove the signature first: sbattach --remove)"
    return 1
  fi
  # -f: libfaketime's own format, an absolute time: the clock stands still
  # (without -f the wrapper starts a running clock there, and a signature
  # made across a second boundary differs).
  if ! TZ=UTC faketime --exclude-monotonic -f "$when" \
         sbsign --key "$key" --cert "$cert" --output "$tmp" "$in" >/dev/null 2>"$tmp.err" </dev/null; then
    secureboot_fail "sbsign could not sign $in: $(tr '\n' ' ' < "$tmp.err")"
    rm -f "$tmp" "$tmp.err"
    return 1
  fi
  if ! sbverify --cert "$cert" "$tmp" >/dev/null 2>"$tmp.err"; then
    secureboot_fail "sbverify does not accept the signature sbsign made on $in: $(tr '\n' ' ' < "$tmp.err")"
    rm -f "$tmp" "$tmp.err"
    return 1
  fi
  rm -f "$tmp.err"
  mv "$tmp" "$out"
}

# The owner GUID of the demo keys' signature-list entries (an owner GUID is
# only a label; each team picks its own, e.g. with uuidgen).
SECUREBOOT_DEMO_GUID=a1e1ab0c-5ec0-4b00-8a1b-000000000001
# OVMF's empty variable store (Debian's ovmf, 4 MiB layout).
SECUREBOOT_OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd

# secureboot_ovmf_vars PK KEK DB OUT [GUID]: see the header.
secureboot_ovmf_vars() {
  local pk=$1 kek=$2 db=$3 out=$4 guid=${5:-$SECUREBOOT_DEMO_GUID} f
  command -v virt-fw-vars >/dev/null \
    || { secureboot_fail "virt-fw-vars is missing (run scripts/setup-host: package python3-virt-firmware)"; return 1; }
  [ -r "$SECUREBOOT_OVMF_VARS" ] \
    || { secureboot_fail "OVMF's variable store $SECUREBOOT_OVMF_VARS is missing (run scripts/setup-host: package ovmf)"; return 1; }
  for f in "$pk" "$kek" "$db"; do
    openssl x509 -in "$f" -noout 2>/dev/null \
      || { secureboot_fail "'$f' is not a PEM X.509 certificate"; return 1; }
  done
  virt-fw-vars --input "$SECUREBOOT_OVMF_VARS" --output "$out.tmp" \
    --set-pk "$guid" "$pk" --add-kek "$guid" "$kek" --add-db "$guid" "$db" \
    --secure-boot >/dev/null 2>"$out.err" \
    || { secureboot_fail "virt-fw-vars failed: $(tr '\n' ' ' < "$out.err")"; rm -f "$out.tmp" "$out.err"; return 1; }
  rm -f "$out.err"
  mv "$out.tmp" "$out"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  export LC_ALL=C
  usage="usage: secureboot.sh check KEY CERT | sign KEY CERT IN OUT [EPOCH] | ovmf-vars PK.crt KEK.crt db.crt OUT [GUID]"
  case "${1:-}:$#" in
    check:3) secureboot_check "$2" "$3" ;;
    sign:5|sign:6)
      secureboot_check "$2" "$3" >/dev/null
      secureboot_sign "$2" "$3" "$4" "$5" "${6:-${SOURCE_DATE_EPOCH:-0}}" ;;
    ovmf-vars:5|ovmf-vars:6) secureboot_ovmf_vars "$2" "$3" "$4" "$5" "${6:-}" ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
fi
