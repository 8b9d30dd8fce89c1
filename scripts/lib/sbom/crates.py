"""The Rust crates linked into each shipped binary.

Shipped binaries: the `bin` lines of image/initramfs.list. "Linked into
binary B" means: reachable from B's package over normal dependencies, for the
image's target triple (`[build] target` of .cargo/config.toml), with the
features of the image's build, not through a proc-macro. That is
`cargo tree --workspace -e normal,no-proc-macro --target T`:
- `--workspace`: the image is built by `cargo build --workspace --bins`,
  whose features are unified over every member (a crate's optional
  dependency enabled by another member is compiled into all of them);
- `-e normal`: build-dependencies (build scripts) and dev-dependencies
  (tests) are not linked; cargo tree then also resolves features without
  dev-dependencies, like `cargo build`;
- `no-proc-macro`: proc-macros run inside the compiler, neither they nor
  their own dependencies are linked;
- `--target T`: platform-specific dependencies of other targets are left out.
Measured equal to cargo's own unit graph of the build (tests/tests/sbom.rs).

Versions, licences and sources come from `cargo metadata`, checksums from
Cargo.lock; the patched crates (patches/crates.lock) carry the registry
checksum of the .crate our patch files were applied to. Everything runs
`--frozen`: no network, Cargo.lock must be current.
"""
import hashlib
import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass, field

from . import SbomError

REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


@dataclass
class Crate:
    name: str
    version: str
    kind: str  # registry | patched | workspace | git
    license: str | None
    license_file: str | None
    checksum: str | None  # SHA-256 of the .crate (registry, patched)
    description: str | None = None
    repository: str | None = None
    source: str | None = None
    links: str | None = None
    binaries: list = field(default_factory=list)  # shipped binaries it is linked into
    deps: list = field(default_factory=list)  # (name, version) of its linked direct dependencies
    patches: list = field(default_factory=list)  # (repo-relative path, sha256)

    @property
    def key(self):
        return (self.name, self.version)


@dataclass
class Binary:
    path: str  # in the initramfs
    name: str  # cargo bin target
    package: str  # its workspace package


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_binaries(root):
    """(initramfs path, cargo binary) of each `bin` line of image/initramfs.list."""
    out = []
    path = os.path.join(root, "image/initramfs.list")
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        raise SbomError(f"reading image/initramfs.list: {e.strerror}")
    for line in lines:
        f = line.split()
        if len(f) >= 4 and f[0] == "bin":
            out.append((f[1], f[3]))
    if not out:
        raise SbomError("image/initramfs.list has no bin lines")
    return out


def build_target(root):
    try:
        with open(os.path.join(root, ".cargo/config.toml"), "rb") as f:
            return tomllib.load(f)["build"]["target"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        raise SbomError("reading the build target ([build] target) of .cargo/config.toml failed")


def cargo(root, *args):
    """cargo as scripts/lib/env.sh's cargo_env runs it: patched crates current,
    no SOURCE_DATE_EPOCH/TZ/LC_ALL from the caller."""
    patch = os.path.join(root, "scripts/patch-crates")
    if os.path.exists(os.path.join(root, "patches/crates.lock")) and os.access(patch, os.X_OK):
        r = subprocess.run([patch], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise SbomError(f"scripts/patch-crates failed: {r.stderr.strip()}")
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "TZ", "LC_ALL")}
    r = subprocess.run(["cargo", *args], cwd=root, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SbomError(f"cargo {args[0]} failed: {last}")
    return r.stdout


_TREE_LINE = re.compile(r"^(\d+)(\S+) v(\S+)")


def tree_graph(text):
    """(roots, graph) of `cargo tree --prefix depth -f {p}` output; graph maps
    (name, version) to the set of its children, across deduplicated (*) lines."""
    graph, roots, stack = {}, [], []
    for line in text.splitlines():
        m = _TREE_LINE.match(line)
        if not m:
            continue
        depth, key = int(m.group(1)), (m.group(2), m.group(3))
        graph.setdefault(key, set())
        del stack[depth:]
        if depth == 0:
            roots.append(key)
        else:
            graph[stack[-1]].add(key)
        stack.append(key)
    return roots, graph


def closure(graph, start):
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(graph[n])
    return seen


def read_patches(root):
    """{(name, version): registry sha256} of patches/crates.lock."""
    out = {}
    path = os.path.join(root, "patches/crates.lock")
    if not os.path.exists(path):
        return out
    for line in open(path):
        f = line.split()
        if len(f) == 3 and not f[0].startswith("#"):
            out[(f[0], f[1])] = f[2]
    return out


def linked_crates(root):
    """(binaries, crates): the shipped binaries and every crate linked into
    one of them, sorted by (name, version)."""
    target = build_target(root)
    meta = json.loads(cargo(root, "metadata", "--frozen", "--format-version", "1", "--filter-platform", target))
    members = set(meta["workspace_members"])
    packages = {}
    for p in meta["packages"]:
        key = (p["name"], p["version"])
        if key in packages:
            raise SbomError(f"crate {key[0]} {key[1]} comes from two sources; the SBOM cannot tell them apart")
        packages[key] = p
    bin_package = {}
    for p in meta["packages"]:
        if p["id"] in members:
            for t in p["targets"]:
                if "bin" in t["kind"]:
                    bin_package[t["name"]] = p["name"]
    binaries = []
    for path, name in shipped_binaries(root):
        if name not in bin_package:
            raise SbomError(f"image/initramfs.list: {name} is not a binary of any workspace package")
        binaries.append(Binary(path, name, bin_package[name]))

    roots, graph = tree_graph(cargo(root, "tree", "--frozen", "--workspace", "-e", "normal,no-proc-macro",
                                    "--target", target, "--prefix", "depth", "-f", "{p}"))
    root_of = {key[0]: key for key in roots}
    linked = {}
    for b in binaries:
        for key in closure(graph, root_of[b.package]):
            linked.setdefault(key, set()).add(b.name)

    with open(os.path.join(root, "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    sums = {(p["name"], p["version"], p.get("source")): p.get("checksum") for p in lock.get("package", [])}
    patched = read_patches(root)
    crates = []
    for key in sorted(linked):
        p = packages.get(key)
        if p is None:
            raise SbomError(f"crate {key[0]} {key[1]} of cargo tree is not in cargo metadata")
        src = p["source"]
        if p["id"] in members:
            kind, checksum = "workspace", None
        elif src is None and key in patched:
            kind, checksum = "patched", patched[key]
        elif src == REGISTRY:
            kind, checksum = "registry", sums.get((key[0], key[1], src))
            if not checksum:
                raise SbomError(f"Cargo.lock has no checksum for {key[0]} {key[1]}")
        elif src and src.startswith("git+"):
            kind, checksum = "git", None
        else:
            raise SbomError(f"crate {key[0]} {key[1]} comes from {src or 'a path'}: neither crates.io, "
                            "a workspace member nor a patched crate of patches/crates.lock")
        c = Crate(name=key[0], version=key[1], kind=kind, license=p.get("license"),
                  license_file=p.get("license_file"), checksum=checksum,
                  description=(p.get("description") or "").strip() or None,
                  repository=p.get("repository"), source=src, links=p.get("links"),
                  binaries=sorted(linked[key]), deps=sorted(graph[key] & set(linked)))
        if kind == "patched":
            d = os.path.join(root, "patches", f"{key[0]}-{key[1]}")
            files = sorted(f for f in os.listdir(d) if f.endswith(".patch"))
            c.patches = [(f"patches/{key[0]}-{key[1]}/{f}", sha256_file(os.path.join(d, f))) for f in files]
        crates.append(c)
    return binaries, crates
