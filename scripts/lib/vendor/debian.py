"""The build's Debian packages (image/build-packages) at their installed
versions, with the archive's own proof of them: each list's InRelease
(signed by Debian's archive key) names the SHA-256 of its Packages index,
which names the SHA-256 of each .deb. The proof is checked against the build
machine's keyring (debian-archive-keyring), never one from the vendored set.
An InRelease's Valid-Until is not enforced: it dates the vendoring, and an
offline build happens later."""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from . import VendorError
from .manifest import sha256_file

LISTS = "/var/lib/apt/lists"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEB = "debian"
POOL = "debian/pool"
DLISTS = "debian/lists"
PACKAGES = "debian/packages.txt"
PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def wanted(root):
    path = os.path.join(root, "image/build-packages")
    out = []
    for n, line in enumerate(open(path), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        if not PKG_RE.match(s) or s in out:
            raise VendorError(f"image/build-packages line {n}: '{s}' is not a package name (or is repeated)")
        out.append(s)
    return out


def installed(name):
    """(version, architecture) of an installed package, or None."""
    args = ["dpkg-query", "-W", "-f", "${Version}\t${Architecture}\t${db:Status-Abbrev}", name]
    admin = os.environ.get("AIRLOCK_DPKG_ADMINDIR")  # tests: another dpkg status
    if admin:
        args.insert(1, f"--admindir={admin}")
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    v, a, st = (r.stdout.split("\t") + ["", "", ""])[:3]
    return (v, a) if st.startswith("ii") else None


def signed_text(path):
    """The text of an InRelease whose signature gpgv accepts with the machine's keyring."""
    r = subprocess.run(["gpgv", "--keyring", KEYRING, "--output", "-", path], capture_output=True)
    if r.returncode != 0:
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise VendorError(f"{os.path.basename(path)}: Debian's archive signature does not verify ({last.removeprefix('gpgv: ')})")
    return r.stdout.decode()


def release_hashes(text):
    """{path: (sha256, size)} of a Release text's SHA256 field."""
    out, on = {}, False
    for line in text.splitlines():
        if line.startswith("SHA256:"):
            on = True
            continue
        if on and line.startswith(" "):
            sha, size, path = line.split()
            out[path] = (sha, int(size))
        elif on:
            on = False
    return out


def stanzas(text, names):
    """{(package, version, arch): (Filename, SHA256)} for the packages named."""
    out = {}
    for block in text.split("\n\n"):
        f = {}
        for line in block.splitlines():
            if line and not line[0].isspace():
                k, _, v = line.partition(":")
                f[k] = v.strip()
        if f.get("Package") in names and "SHA256" in f:
            out[(f["Package"], f["Version"], f["Architecture"])] = (f["Filename"], f["SHA256"])
    return out


def cat_file(path):
    """A Packages index, decompressed (apt stores them lz4'd; we store zstd)."""
    if path.endswith(".zst"):
        args = ["zstd", "-dcq", path]
    else:
        args = ["/usr/lib/apt/apt-helper", "cat-file", path]
    r = subprocess.run(args, capture_output=True)
    if r.returncode != 0:
        raise VendorError(f"decompressing {path} failed")
    return r.stdout


def checked_index(inrelease_hashes, path, component, failure):
    """The decompressed Packages index at path, if its SHA-256 is the one its
    (already verified) InRelease names for COMPONENT/binary-amd64/Packages;
    else VendorError(failure)."""
    rel = f"{component}/binary-amd64/Packages"
    data = cat_file(path)
    if rel not in inrelease_hashes or hashlib.sha256(data).hexdigest() != inrelease_hashes[rel][0]:
        raise VendorError(failure)
    return data


def host_lists(names):
    """[(list prefix, InRelease path, Packages path, {key: (Filename, sha)})] of
    the machine's apt lists whose signature and index hash verify."""
    out = []
    for f in sorted(os.listdir(LISTS)):
        if not f.endswith("_InRelease"):
            continue
        prefix = f[: -len("InRelease")]
        hashes = release_hashes(signed_text(os.path.join(LISTS, f)))
        for g in sorted(os.listdir(LISTS)):
            m = re.match(re.escape(prefix) + r"([a-z-]+)_binary-amd64_Packages(\.lz4|\.xz|\.gz|\.zst)?$", g)
            if not m:
                continue
            data = checked_index(hashes, os.path.join(LISTS, g), m.group(1), f"{g}: not the Packages index {f} vouches for (run apt-get update)")
            out.append((prefix, f, g, m.group(1), data, stanzas(data.decode(errors="replace"), names)))
    return out


def deb_name(filename):
    return os.path.basename(filename)


def collect(root, out, old, log):
    """Fills out/debian: the .debs, the lists that vouch for them, packages.txt."""
    names = wanted(root)
    lists = host_lists(set(names))
    rows, used = [], {}
    for name in names:
        inst = installed(name)
        if inst is None:
            raise VendorError(f"{name} is not installed (scripts/setup-host installs the build's packages)")
        version, arch = inst
        hit = next(((lst, lst[5][(name, version, arch)]) for lst in lists if (name, version, arch) in lst[5]), None)
        if hit is None:
            raise VendorError(
                f"{name} {version} (installed) is in none of the archive's lists any more: "
                f"upgrade it (apt-get install {name}) and vendor again")
        lst, (filename, sha) = hit
        dst = os.path.join(out, POOL, deb_name(filename))
        get_deb(name, version, filename, sha, dst, old)
        used[lst[0]] = lst
        rows.append(f"{name} {version} {arch} {lst[0]} {deb_name(filename)} {sha}")
    os.makedirs(os.path.join(out, DLISTS), exist_ok=True)
    for prefix, inrel, pk, comp, data, _ in used.values():
        shutil.copy2(os.path.join(LISTS, inrel), os.path.join(out, DLISTS, inrel))
        z = subprocess.run(["zstd", "-q", "-10", "-c"], input=data, capture_output=True, check=True).stdout
        with open(os.path.join(out, DLISTS, f"{prefix}{comp}_binary-amd64_Packages.zst"), "wb") as f:
            f.write(z)
    with open(os.path.join(out, PACKAGES), "w") as f:
        f.write("# package version architecture list .deb sha256 (scripts/vendor; docs/image.md \"Offline build\")\n")
        f.write("\n".join(rows) + "\n")
    log(f"debian: {len(rows)} packages from {len(used)} signed lists")
    return len(rows)


def get_deb(name, version, filename, sha, dst, old):
    """The .deb: from the previous vendored set, apt's cache, or apt-get download."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    for cand in ([os.path.join(old, POOL, deb_name(filename))] if old else []) + [
            os.path.join("/var/cache/apt/archives", deb_name(filename))]:
        if os.path.isfile(cand) and sha256_file(cand) == sha:
            shutil.copy2(cand, dst)
            return
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        r = subprocess.run(["apt-get", "download", "-q", f"{name}={version}"], cwd=tmp, capture_output=True, text=True)
        got = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if r.returncode != 0 or len(got) != 1:
            raise VendorError(f"apt-get download {name}={version} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        p = os.path.join(tmp, got[0])
        if sha256_file(p) != sha:
            raise VendorError(f"apt-get download {name}={version}: not the SHA-256 the signed list names")
        shutil.move(p, dst)


def verify(root, top, files):
    """The vendored packages: the signed lists vouch for each .deb, they are
    exactly image/build-packages, and these versions are installed.
    files: the manifest's hashes, already checked against the bytes."""
    rows = {}
    for n, line in enumerate(open(os.path.join(top, PACKAGES)), 1):
        if line.startswith("#") or not line.strip():
            continue
        f = line.split()
        if len(f) != 6:
            raise VendorError(f"{PACKAGES} line {n}: not 'package version arch list deb sha256'")
        rows[f[0]] = f
    names = wanted(root)
    if sorted(rows) != sorted(names):
        extra = sorted(set(rows) - set(names)) or sorted(set(names) - set(rows))
        raise VendorError(f"{PACKAGES} does not list exactly image/build-packages (differs in {extra[0]})")
    lists = {}
    for name in names:
        _, version, arch, prefix, deb, sha = rows[name]
        if prefix not in lists:
            inrel = os.path.join(top, DLISTS, prefix + "InRelease")
            if not os.path.isfile(inrel):
                raise VendorError(f"{DLISTS}/{prefix}InRelease is missing")
            hashes = release_hashes(signed_text(inrel))
            entries = {}
            for g in sorted(os.listdir(os.path.join(top, DLISTS))):
                m = re.match(re.escape(prefix) + r"([a-z-]+)_binary-amd64_Packages\.zst$", g)
                if not m:
                    continue
                data = checked_index(hashes, os.path.join(top, DLISTS, g), m.group(1), f"{DLISTS}/{g}: not the Packages index its signed InRelease names")
                entries.update(stanzas(data.decode(errors="replace"), set(names)))
            lists[prefix] = entries
        signed = lists[prefix].get((name, version, arch))
        if signed is None or signed[1] != sha or deb_name(signed[0]) != deb:
            raise VendorError(f"{name} {version}: its signed list does not name {deb} with that SHA-256")
        if files.get(f"{POOL}/{deb}") != sha:
            raise VendorError(f"{POOL}/{deb}: not the SHA-256 Debian's signed list names")
        inst = installed(name)
        if inst is None:
            raise VendorError(f"{name} is not installed: install the vendored one (dpkg -i {os.path.join(top, POOL, deb)})")
        if inst != (version, arch):
            raise VendorError(
                f"{name} {inst[0]} is installed, the vendored set holds {version}: "
                f"install it (dpkg -i {os.path.join(top, POOL, deb)})")
    return len(names)
