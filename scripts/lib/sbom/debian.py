"""Debian packages as SBOM components, found from the files a build used.

`dpkg -S` names the package that installed each file, `dpkg-query` its
version and architecture; the component lists the files used (with their
SHA-256 and what they were used for) as sub-components. Licences are not
recorded: Debian's /usr/share/doc/PKG/copyright is not machine-readable for
every package.
"""
import subprocess
from urllib.parse import quote

from . import SbomError, crates, cyclonedx


def _run(args, what):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SbomError(f"{what} failed: {(r.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    return r.stdout


def owners(paths):
    """{path: package} for every path (dpkg -S)."""
    out = {}
    for line in _run(["dpkg", "-S", *sorted(paths)], f"dpkg -S {' '.join(sorted(paths))}").splitlines():
        pkgs, _, path = line.partition(": ")
        if path in paths and "," not in pkgs and not pkgs.startswith("diversion"):
            out[path] = pkgs.split(":")[0]
    missing = sorted(set(paths) - set(out))
    if missing:
        raise SbomError(f"dpkg -S: no single Debian package holds {missing[0]}")
    return out


def distro():
    try:
        for line in open("/etc/os-release"):
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def purl(name, version, arch):
    q = f"?arch={arch}"
    d = distro()
    if d:
        q += f"&distro={d}"
    return f"pkg:deb/debian/{name}@{quote(version, safe='.~-_')}{q}"


def components(uses):
    """uses: {path: (what it was used for, CycloneDX type of its package)}.
    Returns ({path: bom-ref of its package}, [components])."""
    by_pkg = {}
    for path, pkg in owners(set(uses)).items():
        by_pkg.setdefault(pkg, []).append(path)
    refs, comps = {}, []
    for pkg, paths in sorted(by_pkg.items()):
        paths.sort()
        version, arch = _run(["dpkg-query", "-W", "-f", "${Version} ${Architecture}", pkg],
                             f"dpkg-query -W {pkg}").split()
        ref = purl(pkg, version, arch)
        refs.update({p: ref for p in paths})
        files = [{
            "type": "file",
            "bom-ref": f"{ref}#{p}",
            "name": p,
            "hashes": cyclonedx.sha256(crates.sha256_file(p)),
            "properties": cyclonedx.properties([("airlock:used-as", uses[p][0])]),
        } for p in sorted(paths)]
        comps.append({
            "type": uses[paths[0]][1],
            "bom-ref": ref,
            "name": pkg,
            "version": version,
            "purl": ref,
            "publisher": "Debian",
            "components": files,
            "properties": cyclonedx.properties([("airlock:source", "debian")]),
        })
    return refs, comps
