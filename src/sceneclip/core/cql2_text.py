"""A CQL2-text parser and evaluator for property filters: Basic CQL2 + Advanced Comparison Operators.

Why not a library: the Lambda layer has a 150 MB budget and 1.4 MB of it is left; ``cql2`` (the reference
implementation, Rust) costs 8.6 MB stripped and pygeofilter pulls dateparser and lark. What a scene filter
needs is small and fixed by the OGC standard (19-079r2), so the conformance classes a property filter uses are
implemented here and checked against ``cql2`` itself in the tests (same parse/refuse decision and the same
result on the real archive Items):

* Basic CQL2: ``AND``, ``OR``, ``NOT``, parentheses, ``= <> < > <= >=``, ``IS [NOT] NULL``, string, number,
  boolean, ``DATE('…')`` and ``TIMESTAMP('…')`` literals, property names bare (``eo:cloud_cover``) or
  double-quoted;
* Advanced Comparison Operators: ``[NOT] LIKE`` (``%``, ``_``, ``\\`` escape), ``[NOT] BETWEEN … AND …``,
  ``[NOT] IN (…)``.

Anything else (arithmetic, functions such as ``CASEI`` or ``S_INTERSECTS``, arrays) is refused at parse time
with a message naming it, never silently mis-evaluated. Evaluation uses SQL's three-valued logic: a missing
property or a comparison between different types is *unknown*, and an Item passes only when the whole
expression is *true*. Item datetimes (strings) compare with ``TIMESTAMP`` literals as instants; with a
``DATE`` literal, the property's UTC date is compared (``datetime = DATE('2024-05-01')`` is true for any time
that day; the reference implementation answers false to every timestamp-vs-date comparison).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: One token: (kind, value, offset in the text).
Token = tuple[str, Any, int]

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<op><>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_:.\-]*)
  | (?P<other>.)
""", re.VERBOSE)

_KEYWORDS = {"AND", "OR", "NOT", "LIKE", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE", "DATE", "TIMESTAMP"}
_FUNCTION_HINT = ("functions and spatial/temporal operators (CASEI, ACCENTI, S_INTERSECTS, T_AFTER, …) are "
                  "not supported; filter on property values")


class Cql2Error(ValueError):
    """The text is not CQL2 of the supported conformance classes (the message says where and why)."""


@dataclass(frozen=True)
class Prop:
    name: str


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Node:
    op: str  # and, or, not, cmp, like, between, in, isnull
    args: tuple[Any, ...]


def tokenize(text: str) -> list[Token]:
    """Split CQL2 text into tokens; an unexpected character is an error naming its position."""
    tokens: list[Token] = []
    for m in _TOKEN.finditer(text):
        kind, raw = m.lastgroup, m.group()
        if kind == "ws":
            continue
        if kind == "other":
            hint = " (arithmetic is not supported)" if raw in "+*/" else ""
            raise Cql2Error(f"unexpected {raw!r} at position {m.start()}{hint}")
        if kind == "num":
            tokens.append(("lit", float(raw) if any(c in raw for c in ".eE") else int(raw), m.start()))
        elif kind == "str":
            tokens.append(("lit", raw[1:-1].replace("''", "'"), m.start()))
        elif kind == "qident":
            tokens.append(("prop", raw[1:-1].replace('""', '"'), m.start()))
        elif kind == "ident" and raw.upper() in _KEYWORDS:
            tokens.append(("kw", raw.upper(), m.start()))
        elif kind == "ident":
            tokens.append(("prop", raw, m.start()))
        else:
            tokens.append((kind, raw, m.start()))
    tokens.append(("end", None, len(text)))
    return tokens


class _Parser:
    """Recursive descent over the CQL2-text grammar's boolean and comparison productions."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, kind: str, value: Any = None) -> bool:
        tok = self.peek()
        if tok[0] == kind and (value is None or tok[1] == value):
            self.i += 1
            return True
        return False

    def expect(self, kind: str, value: Any, what: str) -> None:
        if not self.accept(kind, value):
            tok = self.peek()
            raise Cql2Error(f"expected {what} at position {tok[2]}, found {_show(tok)}")

    def parse(self) -> Any:
        expr = self.disjunction()
        if self.peek()[0] != "end":
            tok = self.peek()
            raise Cql2Error(f"unexpected {_show(tok)} at position {tok[2]}")
        return expr

    def disjunction(self) -> Any:
        args = [self.conjunction()]
        while self.accept("kw", "OR"):
            args.append(self.conjunction())
        return args[0] if len(args) == 1 else Node("or", tuple(args))

    def conjunction(self) -> Any:
        args = [self.negation()]
        while self.accept("kw", "AND"):
            args.append(self.negation())
        return args[0] if len(args) == 1 else Node("and", tuple(args))

    def negation(self) -> Any:
        if self.accept("kw", "NOT"):
            return Node("not", (self.negation(),))
        return self.primary()

    def primary(self) -> Any:
        if self.peek()[0] == "punct" and self.peek()[1] == "(":
            self.take()
            inner = self.disjunction()
            self.expect("punct", ")", "')'")
            return self.predicate_tail(inner) if self.peek()[0] in ("op", "kw") and self._continues() else inner
        left = self.scalar()
        return self.predicate_tail(left)

    def _continues(self) -> bool:
        tok = self.peek()
        return tok[0] == "op" or tok[1] in ("LIKE", "BETWEEN", "IN", "IS") or (
            tok[1] == "NOT" and self.peek(1)[1] in ("LIKE", "BETWEEN", "IN"))

    def predicate_tail(self, left: Any) -> Any:
        tok = self.peek()
        if tok[0] == "op":
            self.take()
            return Node("cmp", (tok[1], left, self.scalar()))
        negate = False
        if tok == ("kw", "NOT", tok[2]) and self.peek(1)[1] in ("LIKE", "BETWEEN", "IN"):
            self.take()
            negate = True
        if self.accept("kw", "LIKE"):
            pattern = self.scalar()
            if not (isinstance(pattern, Lit) and isinstance(pattern.value, str)):
                raise Cql2Error("LIKE needs a string pattern")
            node = Node("like", (left, _like_regex(pattern.value)))
        elif self.accept("kw", "BETWEEN"):
            low = self.scalar()
            self.expect("kw", "AND", "AND of BETWEEN")
            node = Node("between", (left, low, self.scalar()))
        elif self.accept("kw", "IN"):
            self.expect("punct", "(", "'(' after IN")
            items = [self.scalar()]
            while self.accept("punct", ","):
                items.append(self.scalar())
            self.expect("punct", ")", "')' closing IN")
            node = Node("in", (left, tuple(items)))
        elif self.accept("kw", "IS"):
            is_not = self.accept("kw", "NOT")
            self.expect("kw", "NULL", "NULL after IS")
            node = Node("isnull", (left,))
            return Node("not", (node,)) if is_not else node
        else:
            if isinstance(left, Lit) and isinstance(left.value, bool):
                return Node("cmp", ("=", left, Lit(True)))  # a bare TRUE / FALSE is a predicate
            # a bare property is not a predicate in CQL2 (write "flag = TRUE")
            raise Cql2Error(f"expected a comparison at position {tok[2]}, found {_show(tok)}")
        return Node("not", (node,)) if negate else node

    def scalar(self) -> Any:
        tok = self.take()
        kind, value, pos = tok
        if kind == "lit":
            return Lit(value)
        if kind == "prop":
            if self.peek()[0] == "punct" and self.peek()[1] == "(":
                raise Cql2Error(f"{value}(…) at position {pos}: {_FUNCTION_HINT}")
            return Prop(value)
        if kind == "kw" and value in ("TRUE", "FALSE"):
            return Lit(value == "TRUE")
        if kind == "kw" and value in ("DATE", "TIMESTAMP"):
            self.expect("punct", "(", f"'(' after {value}")
            arg = self.take()
            if arg[0] != "lit" or not isinstance(arg[1], str):
                raise Cql2Error(f"{value} needs a quoted string at position {arg[2]}")
            self.expect("punct", ")", f"')' closing {value}")
            return Lit(_instant(arg[1], value))
        raise Cql2Error(f"expected a value or property at position {pos}, found {_show(tok)}")


def _show(tok: Token) -> str:
    return "the end of the text" if tok[0] == "end" else repr(tok[1])


def _instant(text: str, kind: str) -> _dt.datetime | _dt.date:
    try:
        if kind == "DATE":
            return _dt.date.fromisoformat(text)
        value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Cql2Error(f"{kind}({text!r}) is not an ISO 8601 {kind.lower()}") from exc
    if value.tzinfo is None:
        raise Cql2Error(f"TIMESTAMP({text!r}) needs a time zone (e.g. a trailing Z)")
    return value


def _like_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def parse(text: str) -> Any:
    """The expression tree of ``text``; :class:`Cql2Error` when it is not supported CQL2 text."""
    if not text or not text.strip():
        raise Cql2Error("the expression is empty")
    return _Parser(text).parse()


# --- evaluation: True, False or None (unknown) ----------------------------------------------------------------


def _value(node: Any, props: Mapping[str, Any]) -> Any:
    if isinstance(node, Lit):
        return node.value
    return props.get(node.name)


def _coerce(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Both sides as one comparable type, or None (unknown) when they are of different kinds."""
    if a is None or b is None:
        return None
    if isinstance(a, (_dt.date, _dt.datetime)) or isinstance(b, (_dt.date, _dt.datetime)):
        a, b = _as_instant(a, b), _as_instant(b, a)
        return None if a is None or b is None else (a, b)
    if isinstance(a, bool) or isinstance(b, bool):
        return (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return None


def _as_instant(value: Any, other: Any) -> Any:
    """An Item's datetime strings compare with DATE/TIMESTAMP literals (at the literal's precision)."""
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if isinstance(other, _dt.datetime) and not isinstance(value, _dt.datetime):
        return _dt.datetime.combine(value, _dt.time(), _dt.timezone.utc) if isinstance(value, _dt.date) else None
    if isinstance(other, _dt.date) and not isinstance(other, _dt.datetime) and isinstance(value, _dt.datetime):
        return value.astimezone(_dt.timezone.utc).date()
    if isinstance(value, _dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=_dt.timezone.utc)
    return value


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
    ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
}


def evaluate(node: Any, props: Mapping[str, Any]) -> bool | None:
    """Three-valued evaluation of a parsed expression against one property mapping."""
    if node.op == "and":
        values = [evaluate(a, props) for a in node.args]
        return False if False in values else None if None in values else True
    if node.op == "or":
        values = [evaluate(a, props) for a in node.args]
        return True if True in values else None if None in values else False
    if node.op == "not":
        value = evaluate(node.args[0], props)
        return None if value is None else not value
    if node.op == "cmp":
        op, left, right = node.args
        pair = _coerce(_value(left, props), _value(right, props))
        return None if pair is None else _CMP[op](*pair)
    if node.op == "like":
        value = _value(node.args[0], props)
        return None if not isinstance(value, str) else node.args[1].fullmatch(value) is not None
    if node.op == "between":
        value, low, high = (_value(a, props) for a in node.args)
        lo, hi = _coerce(value, low), _coerce(value, high)
        return None if lo is None or hi is None else lo[1] <= lo[0] <= hi[1]
    if node.op == "in":
        value = _value(node.args[0], props)
        results = [(_coerce(value, _value(item, props))) for item in node.args[1]]
        if any(r is not None and r[0] == r[1] for r in results):
            return True
        return None if any(r is None for r in results) else False
    if node.op == "isnull":
        return _value(node.args[0], props) is None
    raise AssertionError(node.op)  # the parser makes no other node
