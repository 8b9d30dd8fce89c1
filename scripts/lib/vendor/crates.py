"""The crates: every registry package of Cargo.lock and every patched crate
of patches/crates.lock as the .crate file crates.io serves, and cargo's
index entries for their names.

Kept packed, not `cargo vendor`ed: cargo checks each .crate against
Cargo.lock's SHA-256 and unpacks it itself into its registry/src/, so an
offline build compiles the crates from the same paths (after
--remap-path-prefix) as an online build and gives the same bytes; a
`[source]` replacement would compile them from the vendor directory's names
(docs/image.md, "Reproducibility")."""
import os
import shutil
import subprocess
import tomllib

from . import VendorError
from .manifest import sha256_file

CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
CRATES = "crates"
INDEX = "crates/registry-index"
MARKER = ".airlock-offline"


def lock_packages(root):
    """[(name, version, sha256)] of Cargo.lock's crates.io packages."""
    path = os.path.join(root, "Cargo.lock")
    try:
        with open(path, "rb") as f:
            lock = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise VendorError(f"reading {path}: {e}") from e
    out = []
    for p in lock.get("package", []):
        src = p.get("source")
        if src is None:
            continue
        if src != CRATES_IO:
            raise VendorError(f"Cargo.lock: {p['name']} {p['version']} comes from {src} (only crates.io is vendored)")
        if "checksum" not in p:
            raise VendorError(f"Cargo.lock: {p['name']} {p['version']} has no checksum")
        out.append((p["name"], p["version"], p["checksum"]))
    return sorted(out)


def patched_crates(root):
    """[(name, version, sha256)] of patches/crates.lock."""
    out = []
    for line in open(os.path.join(root, "patches/crates.lock")):
        f = line.split()
        if f and not f[0].startswith("#"):
            out.append((f[0], f[1], f[2]))
    return out


def index_path(name):
    """Cargo's index layout: 1/a, 2/ab, 3/a/abc, ab/cd/abcd…"""
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def cargo_home():
    return os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")


def registry_dirs(home):
    """(the crates.io index dir, its .crate cache dir) in a cargo home."""
    idx = os.path.join(home, "registry", "index")
    names = sorted(d for d in os.listdir(idx) if d.startswith("index.crates.io-")) if os.path.isdir(idx) else []
    if len(names) != 1:
        raise VendorError(f"{idx}: expected one crates.io index (index.crates.io-*), found {len(names)}")
    return os.path.join(idx, names[0]), os.path.join(home, "registry", "cache", names[0])


def place(src, dst):
    """dst becomes a copy of src (a hard link when possible)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def collect(root, out, log):
    """Fills out/crates from cargo's download cache (after `cargo fetch`)."""
    log("cargo fetch --locked (every package of Cargo.lock into cargo's download cache)")
    r = subprocess.run(["cargo", "fetch", "--locked"], cwd=root, capture_output=True, text=True)
    if r.returncode != 0:
        raise VendorError(f"cargo fetch --locked failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    home = cargo_home()
    idx, cache = registry_dirs(home)
    pkgs = lock_packages(root)
    patched = patched_crates(root)
    for name, version, sha in pkgs + patched:
        f = f"{name}-{version}.crate"
        src = os.path.join(cache, f)
        if not os.path.isfile(src):
            fetch_one(name, version, src)
        got = sha256_file(src)
        if got != sha:
            raise VendorError(f"{src}: SHA-256 {got} is not the pinned {sha}")
        place(src, os.path.join(out, CRATES, f))
    base = os.path.basename(idx)
    dest = os.path.join(out, INDEX, base)
    place(os.path.join(idx, "config.json"), os.path.join(dest, "config.json"))
    names = sorted({n for n, _, _ in pkgs + patched})
    for n in names:
        src = os.path.join(idx, ".cache", index_path(n))
        if not os.path.isfile(src):
            raise VendorError(f"{src}: cargo's index entry of {n} is missing (cargo fetch did not write it)")
        place(src, os.path.join(dest, ".cache", index_path(n)))
    log(f"crates: {len(pkgs)} of Cargo.lock, {len(patched)} patched, {len(names)} index entries")
    return len(pkgs) + len(patched)


def fetch_one(name, version, dst):
    """A patched crate cargo never downloads (Cargo.toml points at our tree)."""
    url = f"https://static.crates.io/crates/{name}/{name}-{version}.crate"
    tmp = dst + ".part"
    r = subprocess.run(["curl", "-fsSL", "--retry", "3", "-o", tmp, url], capture_output=True, text=True)
    if r.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise VendorError(f"download of {url} failed: {r.stderr.strip()}")
    os.replace(tmp, dst)


def verify(root, top, hashes):
    """Every .crate the build needs is in top with its pinned SHA-256
    (hashes: the manifest's, already checked against the bytes), and an
    index entry for each name."""
    pkgs = lock_packages(root) + patched_crates(root)
    for name, version, sha in pkgs:
        rel = f"{CRATES}/{name}-{version}.crate"
        if rel not in hashes:
            raise VendorError(f"{rel} is missing ({name} {version} is in this checkout's lock files)")
        if hashes[rel] != sha:
            raise VendorError(f"{CRATES}/{name}-{version}.crate: not the SHA-256 the lock files pin")
    bases = os.listdir(os.path.join(top, INDEX)) if os.path.isdir(os.path.join(top, INDEX)) else []
    if len(bases) != 1:
        raise VendorError(f"{INDEX}: expected one crates.io index directory, found {len(bases)}")
    for name in sorted({n for n, _, _ in pkgs}):
        if not os.path.isfile(os.path.join(top, INDEX, bases[0], ".cache", index_path(name))):
            raise VendorError(f"{INDEX}: no index entry for {name}")
    return len(pkgs)


def seed(top, home):
    """home becomes a cargo home holding only what top vendors: the index
    entries and the .crate files. Refuses a cargo home that is not ours."""
    if os.path.isdir(home) and os.listdir(home) and not os.path.exists(os.path.join(home, MARKER)):
        raise VendorError(
            f"cargo home {home} holds other things: --offline fills a cargo home of its own "
            f"(unset CARGO_HOME to use $AIRLOCK_CACHE/offline/cargo)")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, MARKER), "w") as f:
        f.write("a cargo home filled from a vendored set by scripts/vendor seed; emptied on every offline build\n")
    for d in ("registry", "git"):
        shutil.rmtree(os.path.join(home, d), ignore_errors=True)
    (base,) = os.listdir(os.path.join(top, INDEX))
    shutil.copytree(os.path.join(top, INDEX, base), os.path.join(home, "registry", "index", base))
    cache = os.path.join(home, "registry", "cache", base)
    n = 0
    for f in sorted(os.listdir(os.path.join(top, CRATES))):
        if f.endswith(".crate"):
            place(os.path.join(top, CRATES, f), os.path.join(cache, f))
            n += 1
    return n
