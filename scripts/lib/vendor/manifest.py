"""MANIFEST: `SHA-256  PATH` for every file of a vendored set (sorted, paths
relative to it), and inputs.txt: the SHA-256 of the repository files the set
was made for, and the toolchain that made it."""
import hashlib
import os
import subprocess

from . import VendorError

MANIFEST = "MANIFEST"
INPUTS = "inputs.txt"
# The repository files a vendored set answers: another Cargo.lock (or another
# patched crate, package list, model lock) needs another set.
INPUT_FILES = ["Cargo.lock", "patches/crates.lock", "image/build-packages", "scripts/models.lock"]
HEADER = "# Airlock vendored build inputs (scripts/vendor): SHA-256 and path of every other file\n"


def sha256_file(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise VendorError(f"reading {path}: {e.strerror}") from e
    return h.hexdigest()


def files_under(top):
    """Every regular file under top, as sorted relative paths; refuses anything else."""
    out = []
    for d, dirs, files in os.walk(top):
        dirs.sort()
        for name in dirs + files:
            p = os.path.join(d, name)
            if os.path.islink(p):
                raise VendorError(f"{os.path.relpath(p, top)}: a symbolic link (a vendored set holds files only)")
        for name in files:
            p = os.path.join(d, name)
            if not os.path.isfile(p):
                raise VendorError(f"{os.path.relpath(p, top)}: not a regular file")
            out.append(os.path.relpath(p, top))
    return sorted(out)


def toolchain(root):
    """rustc -vV: the toolchain is not vendored, so it must be the same one."""
    try:
        r = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True, cwd=root)
    except (OSError, subprocess.CalledProcessError) as e:
        raise VendorError(f"rustc -vV failed: {e}") from e
    return [line for line in r.stdout.splitlines() if line.strip()]


def inputs_text(root):
    lines = ["# what this vendored set was made for (scripts/vendor); build-image --offline checks it"]
    for rel in INPUT_FILES:
        lines.append(f"file {sha256_file(os.path.join(root, rel))} {rel}")
    for t in toolchain(root):
        lines.append(f"rustc {t}")
    return "\n".join(lines) + "\n"


def write(top):
    lines = [f"{sha256_file(os.path.join(top, rel))}  {rel}" for rel in files_under(top) if rel != MANIFEST]
    with open(os.path.join(top, MANIFEST), "w") as f:
        f.write(HEADER + "\n".join(lines) + "\n")
    return len(lines)


def read(top):
    """{path: sha256} of DIR/MANIFEST."""
    path = os.path.join(top, MANIFEST)
    try:
        text = open(path).read()
    except OSError as e:
        raise VendorError(f"{path}: {e.strerror} (not a vendored set: make one with scripts/vendor)") from e
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64 or rel in out or rel.startswith("/") or ".." in rel.split("/"):
            raise VendorError(f"{MANIFEST} line {n}: not 'SHA-256  PATH'")
        out[rel] = sha
    return out


def verify(top, root):
    """Every file listed and as listed, nothing unlisted; made for this
    checkout's lock files and this toolchain. Returns {path: sha256}, every
    hash just checked against the file (the other checks use it, no re-read)."""
    want = read(top)
    have = [rel for rel in files_under(top) if rel != MANIFEST]
    for rel in have:
        if rel not in want:
            raise VendorError(f"{rel}: not in {MANIFEST} (added after vendoring?)")
    for rel, sha in sorted(want.items()):
        p = os.path.join(top, rel)
        if not os.path.isfile(p):
            raise VendorError(f"{rel}: listed in {MANIFEST} but missing")
        got = sha256_file(p)
        if got != sha:
            raise VendorError(f"{rel}: SHA-256 {got[:16]}… is not {MANIFEST}'s {sha[:16]}… (changed after vendoring)")
    made = open(os.path.join(top, INPUTS)).read().splitlines() if INPUTS in want else []
    if not made:
        raise VendorError(f"{INPUTS} is missing (not a vendored set: make one with scripts/vendor)")
    now = inputs_text(root).splitlines()
    for rel in INPUT_FILES:
        a = [x for x in made if x.endswith(f" {rel}") and x.startswith("file ")]
        b = [x for x in now if x.endswith(f" {rel}") and x.startswith("file ")]
        if a != b:
            raise VendorError(f"made for another {rel} than this checkout's (run scripts/vendor again)")
    a = [x for x in made if x.startswith("rustc ")]
    b = [x for x in now if x.startswith("rustc ")]
    if a != b:
        theirs = next((x[6:] for x in a if x.startswith("rustc release")), "?")
        ours = next((x[6:] for x in b if x.startswith("rustc release")), "?")
        raise VendorError(f"made with another Rust toolchain ({theirs}; this one: {ours})")
    return want
