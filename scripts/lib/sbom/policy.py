"""The licence policy, kept as data, and the check of the linked crates against it.

image/licences.allow    one SPDX licence id per line (or `ID WITH EXCEPTION`),
                        each with a `# why` comment on the same line
image/licences.crates   a decision per crate that has no `license` field
                        (only `license-file`): `NAME VERSION EXPRESSION  # why`,
                        the EXPRESSION read by a person from its licence file;
                        it is then checked against the allow-list like any other

A crate passes when its expression is allowed (see spdx.py: OR needs one
allowed alternative, AND all parts). Every failing crate gets one line.
"""
import re

from . import SbomError, spdx

_ID_LINE = re.compile(r"^[A-Za-z0-9.:-]+\+?( WITH [A-Za-z0-9.:-]+\+?)?$")


def _rules(path, shown):
    """(line number, text before the comment, comment) of each rule line."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise SbomError(f"reading {shown}: {e.strerror}")
    for n, line in enumerate(lines, 1):
        text, _, why = line.partition("#")
        text, why = " ".join(text.split()), why.strip()
        if text:
            yield n, text, why


def read_allow(path, shown):
    """The lower-cased allowed licence ids of the allow-list."""
    out = set()
    for n, text, why in _rules(path, shown):
        if not _ID_LINE.match(text):
            raise SbomError(f"{shown} line {n}: '{text}' is not one SPDX licence id")
        if not why:
            raise SbomError(f"{shown} line {n}: '{text}' has no comment saying why it is allowed")
        out.add(text.lower())
    return out


def read_decisions(path, shown):
    """{(name, version): (expression text, line number)} of the decisions file."""
    out = {}
    for n, text, why in _rules(path, shown):
        f = text.split(" ", 2)
        if len(f) < 3:
            raise SbomError(f"{shown} line {n}: expected NAME VERSION EXPRESSION  # why")
        if not why:
            raise SbomError(f"{shown} line {n}: the decision for {f[0]} {f[1]} has no comment saying why")
        try:
            spdx.parse(f[2])
        except SbomError as e:
            raise SbomError(f"{shown} line {n}: '{f[2]}' is not an SPDX expression ({e})")
        if (f[0], f[1]) in out:
            raise SbomError(f"{shown} line {n}: a second decision for {f[0]} {f[1]}")
        out[(f[0], f[1])] = (f[2], n)
    return out


def crate_expression(crate, decisions):
    """(expression text, decided) of a crate, or None when it has neither."""
    if crate.license:
        return crate.license, False
    if crate.key in decisions:
        return decisions[crate.key][0], True
    return None


def check(crates, allow, decisions, allow_shown, decisions_shown):
    """One reason per failing crate or decision, in crate order."""
    reasons = []
    for c in crates:
        where = f"crate {c.name} {c.version} (in {', '.join(c.binaries)})"
        got = crate_expression(c, decisions)
        if got is None:
            lf = f" (license-file '{c.license_file}')" if c.license_file else ""
            reasons.append(f"{where}: no licence field{lf} and no decision in {decisions_shown}")
            continue
        text, decided = got
        label = f"licence '{text}'" + (f" (decided in {decisions_shown})" if decided else "")
        try:
            node = spdx.parse(text)
        except SbomError as e:
            reasons.append(f"{where}: {label} is not an SPDX expression ({e})")
            continue
        if spdx.allowed(node, allow):
            continue
        if node[0] == "ID":
            reasons.append(f"{where}: {label} is not in {allow_shown}")
        else:
            refused = ", ".join(spdx.refused_leaves(node, allow))
            reasons.append(f"{where}: {label} is not satisfied by {allow_shown} (not in it: {refused})")
    by_key = {c.key: c for c in crates}
    for (name, version), (_, n) in sorted(decisions.items()):
        c = by_key.get((name, version))
        if c is None:
            reasons.append(f"{decisions_shown} line {n}: {name} {version} is not linked into any shipped binary "
                           "(remove the decision)")
        elif c.license:
            reasons.append(f"{decisions_shown} line {n}: {name} {version} has a licence field ('{c.license}'); "
                           "remove the decision")
    return reasons
