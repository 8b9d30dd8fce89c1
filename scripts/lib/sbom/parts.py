"""The SBOM documents: the image's (every part of it) and a stick's (model bundles).

Image components (bom-refs in brackets):
- the shipped binaries [binary:NAME], hashed as stripped in the initramfs;
- every Rust crate linked into one of them (crates.py) [pkg:cargo/NAME@VERSION,
  workspace:NAME@VERSION for our own crates, which are not on crates.io];
- the Rust standard library of the toolchain [rust-std@RELEASE];
- the C runtime linked statically (+crt-static): found by linking a probe
  program with the image's target and RUSTFLAGS and reading the linker's map;
  its files' Debian packages (libc6-dev, libgcc-12-dev) [purl];
- the kernel [linux-kernel] (bzImage hash, build-kernel's cache key, the
  fragment's and the final .config's SHA-256) and its Debian source package;
- systemd-boot-efi: the UKI stub and, with a disk image, the boot loader [purl];
- the health-check model generated into the initramfs [model:health].
`dependencies`: image -> binaries, kernel, boot loader, model; binary -> its
package's crate, Rust std, C runtime; crate -> the linked crates it depends on.
"""
import hashlib
import json
import os
import re
import subprocess
import tempfile
import tomllib

from . import SbomError, crates, cyclonedx, debian, spdx

HEALTH_MODEL = "/usr/share/airlock/health/health.gguf"


def read_kv(path):
    out = {}
    try:
        for line in open(path, encoding="utf-8"):
            k, sep, v = line.rstrip("\n").partition("=")
            if sep and not k.startswith("#"):
                out[k.strip()] = v.strip().strip('"')
    except OSError as e:
        raise SbomError(f"reading {path}: {e.strerror}")
    return out


def initramfs_hashes(out):
    """{path: sha256} of the regular files of out/initramfs.files."""
    hashes = {}
    try:
        for line in open(os.path.join(out, "initramfs.files")):
            f = line.split()
            if len(f) == 5 and f[0] == "file":
                hashes[f[4]] = f[3]
    except OSError as e:
        raise SbomError(f"reading initramfs.files: {e.strerror}")
    return hashes


def _rustc(*args, env=None):
    r = subprocess.run(["rustc", *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SbomError(f"rustc {' '.join(args[:2])} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return r.stdout


def toolchain():
    info = dict(line.split(": ", 1) for line in _rustc("-vV").splitlines() if ": " in line)
    return info, _rustc("--print", "sysroot").strip()


def c_runtime_files(root, target, sysroot):
    """The system (non-Rust) files the linker takes into a static binary of this
    target: link a probe with the image's RUSTFLAGS, read its -Map."""
    with open(os.path.join(root, ".cargo/config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    flags = cfg.get("target", {}).get(target, {}).get("rustflags", [])
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "TZ", "LC_ALL")}
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.rs")
        with open(src, "w") as f:
            # Threads, I/O, unwinding and libm, as the real binaries use them.
            f.write("fn main() { let x: f64 = std::hint::black_box(0.5);\n"
                    "  let t = std::thread::spawn(move || println!(\"{}\", x.exp().sin().powf(x)));\n"
                    "  t.join().unwrap(); }\n")
        _rustc("--edition", "2021", "-O", "--target", target, *flags,
               "-C", f"link-arg=-Wl,-Map={tmp}/probe.map", "-o", os.path.join(tmp, "probe"), src, env=env)
        text = open(os.path.join(tmp, "probe.map"), errors="replace").read()
        paths = {os.path.realpath(p) for p in re.findall(r"(/[^\s():]+\.(?:a|o))\b", text)}
        return sorted(p for p in paths
                      if os.path.isfile(p) and not p.startswith(sysroot + "/") and not p.startswith(tmp + "/"))


def crate_component(c, decisions):
    ref = f"workspace:{c.name}@{c.version}" if c.kind == "workspace" else f"pkg:cargo/{c.name}@{c.version}"
    comp = {"type": "library", "bom-ref": ref, "name": c.name, "version": c.version}
    props = [("airlock:linked-into", " ".join(c.binaries)), ("airlock:source", c.kind)]
    if c.kind in ("registry", "patched"):
        comp["purl"] = f"pkg:cargo/{c.name}@{c.version}"
    if c.kind == "git":
        props.append(("airlock:git-source", c.source))
    if c.checksum:
        comp["hashes"] = cyclonedx.sha256(c.checksum)
    text = c.license
    if not text and c.key in decisions:
        text = decisions[c.key][0]
        props.append(("airlock:licence-decision", f"image/licences.crates line {decisions[c.key][1]}"))
    if text:
        try:
            comp["licenses"] = [{"expression": spdx.render(spdx.parse(text))}]
        except SbomError:
            comp["licenses"] = [{"license": {"name": text}}]
        if c.license and comp["licenses"][0].get("expression") != c.license:
            props.append(("cargo:license", c.license))
    if c.description:
        comp["description"] = c.description
    if c.repository:
        comp["externalReferences"] = [{"type": "vcs", "url": c.repository}]
    if c.links:
        props.append(("cargo:links", c.links))
    if c.kind == "patched":
        props.append(("airlock:patched", "our patch files applied to the registry .crate by scripts/patch-crates; "
                                         "hashes: the registry .crate's SHA-256 (patches/crates.lock)"))
        props += [("airlock:patch", f"{path} sha256:{digest}") for path, digest in c.patches]
        comp["pedigree"] = {
            "notes": "registry crate with Airlock's patch files applied (scripts/patch-crates)",
            "patches": [{"type": "unofficial", "diff": {"url": path}} for path, _ in c.patches],
        }
    comp["properties"] = cyclonedx.properties(props)
    return ref, comp


def kernel_licence(copying):
    """The SPDX-License-Identifier line of the kernel source's COPYING, if any."""
    try:
        m = re.search(r"SPDX-License-Identifier:\s*(.+)", open(copying, errors="replace").read())
    except OSError:
        return None
    return spdx.render(spdx.parse(m.group(1).strip())) if m else None


def kernel_component(root, bzimage, out_bzimage):
    """(component, {path: use} of its Debian source) of the kernel."""
    comp = {"type": "operating-system", "bom-ref": "linux-kernel", "name": "linux",
            "hashes": cyclonedx.sha256(crates.sha256_file(out_bzimage))}
    props, uses = [], {}
    kdir = os.path.dirname(os.path.realpath(bzimage))
    cache = os.path.realpath(os.path.join(os.environ.get("AIRLOCK_CACHE", os.path.expanduser("~/.cache/airlock")),
                                          "kernel"))
    if os.path.dirname(kdir) == cache and os.path.isfile(os.path.join(kdir, "config")):
        v = read_kv(os.path.join(root, "kernel-config/VERSION"))
        comp["version"] = v["version"].split("-")[0]
        props += [
            ("airlock:kernel-cache-key", os.path.basename(kdir)),
            ("airlock:kernel-source-package", f"{v['package']} {v['version']}"),
            ("airlock:kernel-config-fragment-sha256",
             crates.sha256_file(os.path.join(root, "kernel-config/airlock.config"))),
            ("airlock:kernel-config-sha256", crates.sha256_file(os.path.join(kdir, "config"))),
            ("airlock:kbuild-build-timestamp", v["timestamp"]),
        ]
        uses[v["tarball"]] = ("kernel source (scripts/build-kernel)", "operating-system")
        licence = kernel_licence(os.path.join(os.path.dirname(kdir), f"src-{v['version']}", "COPYING"))
        if licence:
            comp["licenses"] = [{"expression": licence}]
    else:
        props.append(("airlock:kernel-origin", "not built by scripts/build-kernel (build-image --kernel)"))
    comp["properties"] = cyclonedx.properties(props)
    return comp, uses


def image_document(root, out, bzimage, binaries, linked, decisions):
    osr = read_kv(os.path.join(out, "os-release"))
    version = osr.get("VERSION_ID", "")
    files = initramfs_hashes(out)
    target = crates.build_target(root)
    info, sysroot = toolchain()
    components, deps = [], {}

    crate_ref = {}
    for c in linked:
        ref, comp = crate_component(c, decisions)
        crate_ref[c.key] = ref
        components.append(comp)
    for c in linked:
        deps[crate_ref[c.key]] = [crate_ref[d] for d in c.deps]

    std_ref = f"rust-std@{info['release']}"
    components.append({
        "type": "library", "bom-ref": std_ref, "name": "rust-std", "version": info["release"],
        "description": "the Rust standard library (std, core, alloc) of the toolchain, linked into every binary",
        "licenses": [{"expression": "MIT OR Apache-2.0"}],
        "properties": cyclonedx.properties([("rustc:commit-hash", info.get("commit-hash", "")),
                                            ("rustc:target", target)]),
    })
    deps[std_ref] = []

    uses = {p: ("statically linked C runtime (+crt-static)", "library")
            for p in c_runtime_files(root, target, sysroot)}
    runtime_paths = set(uses)
    stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    uses[stub] = ("UKI stub (airlock.efi)", "application")
    boot_paths = {stub}
    if os.path.exists(os.path.join(out, "airlock.img")):
        loader = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
        uses[loader] = ("boot loader on the ESP (EFI/BOOT/BOOTX64.EFI, EFI/systemd/systemd-bootx64.efi)",
                        "application")
        boot_paths.add(loader)
    kernel, kuses = kernel_component(root, bzimage, os.path.join(out, "bzImage"))
    uses.update(kuses)
    pkg_ref, pkg_comps = debian.components(uses)
    components += pkg_comps
    for comp in pkg_comps:
        deps[comp["bom-ref"]] = []
    runtime_refs = sorted({pkg_ref[p] for p in runtime_paths})
    boot_refs = sorted({pkg_ref[p] for p in boot_paths})
    components.append(kernel)
    deps["linux-kernel"] = [pkg_ref[p] for p in kuses]

    image_deps = ["linux-kernel", *boot_refs]
    for b in binaries:
        ref = f"binary:{b.name}"
        if b.path not in files:
            raise SbomError(f"initramfs.files has no {b.path} ({b.name})")
        components.append({
            "type": "application", "bom-ref": ref, "name": b.name, "version": version,
            "hashes": cyclonedx.sha256(files[b.path]),
            "properties": cyclonedx.properties([("airlock:initramfs-path", b.path),
                                                ("airlock:cargo-package", b.package)]),
        })
        pkg = next(c for c in linked if c.name == b.package and c.kind == "workspace")
        deps[ref] = [crate_ref[pkg.key], std_ref, *runtime_refs]
        image_deps.append(ref)
    if HEALTH_MODEL in files:
        components.append({
            "type": "machine-learning-model", "bom-ref": "model:health", "name": "airlock-health-tiny",
            "version": version, "hashes": cyclonedx.sha256(files[HEALTH_MODEL]),
            "description": "tiny random-weight llama generated at build time by airlock-modelgen "
                           "(scripts/build-image): the health check's model when none is installed",
            "properties": cyclonedx.properties([("airlock:initramfs-path", HEALTH_MODEL)]),
        })
        deps["model:health"] = []
        image_deps.append("model:health")
    deps["airlock-image"] = image_deps

    subject_props = [("airlock:system-version", osr.get("AIRLOCK_SYSTEM_VERSION", "")),
                     ("airlock:variant", osr.get("VARIANT_ID", "")),
                     ("airlock:build-id", osr.get("BUILD_ID", ""))]
    subject = {"type": "operating-system", "bom-ref": "airlock-image", "name": "airlock", "version": version,
               "hashes": cyclonedx.sha256(crates.sha256_file(os.path.join(out, "airlock.efi"))),
               "description": "Airlock appliance image; hashes: the UKI's (airlock.efi), "
                              "SHA256SUMS next to this file has every artefact's",
               "properties": cyclonedx.properties(subject_props)}
    cargo_v = subprocess.run(["cargo", "-V"], capture_output=True, text=True).stdout.split()
    tools = [{"type": "application", "group": "airlock", "name": "scripts/sbom", "version": version},
             {"type": "application", "name": "cargo", "version": cargo_v[1] if len(cargo_v) > 1 else ""}]
    return cyclonedx.document(subject, components, deps, tools)


def read_models_lock(path):
    """{gguf sha256: (name, requirement, wheel, wheel sha256, member)} of scripts/models.lock."""
    out = {}
    try:
        for line in open(path):
            f = line.split()
            if len(f) == 6 and not f[0].startswith("#"):
                out[f[5]] = tuple(f[:5])
    except OSError as e:
        raise SbomError(f"reading {path}: {e.strerror}")
    return out


def stick_document(models_lock, bundles):
    """The model bundles of a stick; files pinned in scripts/models.lock carry
    where they come from (the PyPI wheel and its SHA-256)."""
    pinned = read_models_lock(models_lock)
    components, deps = [], {}
    for b in sorted(bundles):
        try:
            ref, comp = _bundle_component(b, pinned)
        except KeyError as e:
            raise SbomError(f"{b}/manifest.json has no {e}")
        components.append(comp)
        deps[ref] = []
    deps["stick"] = sorted(deps)
    subject = {"type": "data", "bom-ref": "stick", "name": "airlock-stick",
               "description": "bundles on an Airlock USB stick"}
    return cyclonedx.document(subject, components, deps,
                              [{"type": "application", "group": "airlock", "name": "scripts/sbom"}])


def _bundle_component(b, pinned):
    """(bom-ref, component) of one bundle directory."""
    try:
        with open(os.path.join(b, "manifest.json"), "rb") as f:
            raw = f.read()
        m = json.loads(raw)
    except OSError as e:
        raise SbomError(f"reading {b}/manifest.json: {e.strerror}")
    except ValueError as e:
        raise SbomError(f"reading {b}/manifest.json: not JSON ({e})")
    ref = f"bundle:{m['kind']}/{m['name']}@{m['version']}"
    files, props = [], [("airlock:manifest-sha256", hashlib.sha256(raw).hexdigest()),
                        ("airlock:bundle-kind", m["kind"])]
    props += [("airlock:signature", s) for s in sorted(os.listdir(b)) if s.endswith(".minisig")]
    for entry in m["files"]:
        fc = {"type": "data" if m["kind"] == "model" else "file", "bom-ref": f"{ref}#{entry['path']}",
              "name": entry["path"], "hashes": cyclonedx.sha256(entry["sha256"])}
        fprops = [("airlock:size", str(entry["size"]))]
        lock = pinned.get(entry["sha256"])
        if lock:
            name, req, wheel, wheel_sha, member = lock
            pkg, _, ver = req.partition("==")
            fprops += [("airlock:models-lock", name), ("airlock:wheel-member", member)]
            fc["pedigree"] = {"ancestors": [{
                "type": "library", "bom-ref": f"pkg:pypi/{pkg}@{ver}", "name": pkg, "version": ver,
                "purl": f"pkg:pypi/{pkg}@{ver}", "hashes": cyclonedx.sha256(wheel_sha),
                "properties": cyclonedx.properties([("airlock:wheel", wheel)]),
            }]}
        else:
            fprops.append(("airlock:origin", "not in scripts/models.lock (made locally, e.g. airlock-modelgen)"))
        fc["properties"] = cyclonedx.properties(fprops)
        files.append(fc)
    return ref, {
        "type": "machine-learning-model" if m["kind"] == "model" else "application",
        "bom-ref": ref, "name": m["name"], "version": str(m["version"]),
        "description": m.get("description", ""), "components": files,
        "properties": cyclonedx.properties(props),
    }
