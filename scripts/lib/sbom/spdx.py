"""SPDX licence expressions (SPDX 2.3, annex D) as Cargo.toml `license` fields use them.

Grammar, loosest binding first:  expr := and ("OR" and)*;  and := with ("AND" with)*;
with := atom ["WITH" exception];  atom := id | "(" expr ")".
Cargo's deprecated "/" separator (`MIT/Apache-2.0`) is read as OR. Licence ids
are compared case-insensitively; operators may be upper or lower case.

An expression is allowed when: an OR has an allowed alternative, an AND has
all of its parts allowed, and `X WITH E` is allowed when the allow-list holds
`X WITH E` or `X` (an exception only adds permissions to X).
"""
import re

from . import SbomError

_TOKEN = re.compile(r"\s*(\(|\)|/|[A-Za-z0-9.+:-]+)")
_ID = re.compile(r"^[A-Za-z0-9.:-]+\+?$")
_OPS = {"and": "AND", "or": "OR", "with": "WITH"}


def _tokens(text):
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SbomError(f"unexpected '{text[pos:].strip()[:1]}'")
        tok = m.group(1)
        if tok == "/":
            tok = "OR"
        elif tok in ("AND", "OR", "WITH") or tok in _OPS:
            tok = _OPS.get(tok, tok)
        out.append(tok)
        pos = m.end()
    return out


class _Parser:
    def __init__(self, toks):
        self.toks, self.i = toks, 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self):
        tok = self.peek()
        if tok is None:
            raise SbomError("unexpected end")
        self.i += 1
        return tok

    def expr(self):
        parts = [self.conj()]
        while self.peek() == "OR":
            self.take()
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else ("OR", parts)

    def conj(self):
        parts = [self.with_()]
        while self.peek() == "AND":
            self.take()
            parts.append(self.with_())
        return parts[0] if len(parts) == 1 else ("AND", parts)

    def with_(self):
        node = self.atom()
        if self.peek() == "WITH":
            self.take()
            if node[0] != "ID":
                raise SbomError("WITH after a parenthesis")
            exc = self.take()
            if not _ID.match(exc) or exc in ("AND", "OR", "WITH"):
                raise SbomError(f"'{exc}' is not an exception id")
            node = ("ID", node[1], exc)
        return node

    def atom(self):
        tok = self.take()
        if tok == "(":
            node = self.expr()
            if self.take() != ")":
                raise SbomError("missing ')'")
            return node
        if tok in (")", "AND", "OR", "WITH") or not _ID.match(tok):
            raise SbomError(f"unexpected '{tok}'")
        return ("ID", tok, None)


def parse(text):
    """The expression tree of `text`; SbomError names what is wrong."""
    toks = _tokens(text)
    if not toks:
        raise SbomError("empty")
    p = _Parser(toks)
    node = p.expr()
    if p.peek() is not None:
        raise SbomError(f"unexpected '{p.peek()}'")
    return node


def leaf_text(node):
    return node[1] if node[2] is None else f"{node[1]} WITH {node[2]}"


def render(node, parent=None):
    """The canonical text: ' OR ' / ' AND ', parentheses only where needed."""
    if node[0] == "ID":
        return leaf_text(node)
    text = f" {node[0]} ".join(render(c, node[0]) for c in node[1])
    return f"({text})" if parent == "AND" and node[0] == "OR" else text


def allowed(node, allow):
    """`allow`: a set of lower-cased allow-list entries."""
    if node[0] == "ID":
        return leaf_text(node).lower() in allow or node[1].lower() in allow
    results = [allowed(c, allow) for c in node[1]]
    return any(results) if node[0] == "OR" else all(results)


def refused_leaves(node, allow):
    """The licences that make the expression fail, sorted, once each: those
    of the refused parts of an AND, all alternatives of a refused OR."""
    if allowed(node, allow):
        return []
    if node[0] == "ID":
        return [leaf_text(node)]
    return sorted({leaf for c in node[1] for leaf in refused_leaves(c, allow)})
