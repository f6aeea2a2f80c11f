"""Pure mapping of an HTTP outcome to a Postfix reply: the contract table of docs/design.md.

Nothing here does I/O. ``classify`` turns (status, body) into an :class:`Outcome`; the socketmap and policy
helpers turn an Outcome into the wire reply. The one invariant: no fault of the backend or the network ever
becomes ``NOTFOUND``, ``OK``, ``REJECT`` or ``5NN``; those only come from a well-formed answer the backend meant.

Field paths: ``value_field`` / ``error_field`` are JSONPath (jsonpath-ng), compiled at load. The plain dotted
form ``data.result`` (the common case, and upstream's spelling) is compiled to a tuple of keys and walked
directly, which costs far less per lookup than a JSONPath evaluation; a numeric segment indexes a list.
A bare name (no dot) that is absent at the top level is searched for in nested objects, depth first, as
upstream pfxhttp does: a config relying on that must not turn found values into NOTFOUND here.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jsonpath_ng.ext.parser import parse as jsonpath_parse

from pfxhttp.backend.template import ValueTemplate
from pfxhttp.errors import PayloadError, ReplyError
from pfxhttp.protocol.policy import MAX_ACTION_LENGTH, PolicyReply
from pfxhttp.protocol.socketmap import SocketmapReply
from pfxhttp.protocol.tcptable import TcpTableReply

DEFAULT_NOT_FOUND_STATUSES: frozenset[int] = frozenset({404})

_SIMPLE_PATH = re.compile(r"^\$?\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_MISSING = object()
_MAX_SEARCH_DEPTH = 32  # bounds the upstream-compatible any-depth search on hostile documents


def _search_key(node: Any, key: str, depth: int = 0) -> Any:
    """Depth-first search of nested objects for ``key`` (upstream's bare value_field semantics)."""
    if depth > _MAX_SEARCH_DEPTH or not isinstance(node, dict):
        return _MISSING
    if key in node:
        return node[key]
    for child in node.values():
        found = _search_key(child, key, depth + 1)
        if found is not _MISSING:
            return found
    return _MISSING


class OutcomeKind(enum.Enum):
    FOUND = "found"  # value present and usable
    NOT_FOUND = "not_found"  # value absent / null, or a not-found status
    ERROR = "error"  # the backend said "error" (error_field, 4xx): a permanent-looking failure
    TEMP = "temp"  # the backend or network failed in a way worth retrying
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    value: str = ""  # FOUND: the rendered value
    reason: str = ""  # ERROR/TEMP/TIMEOUT: short fixed text safe for Postfix logs
    detail: str = ""  # for our log only (may hold backend text)


class FieldPath:
    """A compiled ``value_field`` / ``error_field``."""

    __slots__ = ("_jsonpath", "_segments", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._segments: tuple[str, ...] | None = None
        self._jsonpath: Any = None
        if _SIMPLE_PATH.match(source):
            self._segments = tuple(source.lstrip("$").lstrip(".").split("."))
        else:
            # jsonpath-ng raises assorted exception types on bad syntax; the caller turns any into ConfigError.
            self._jsonpath = jsonpath_parse(source)

    def find(self, document: Any) -> Any:
        """Return the value at the path, or ``_MISSING``. A JSONPath matching several nodes yields a list."""
        if self._segments is not None:
            node = document
            for segment in self._segments:
                if isinstance(node, dict):
                    node = node.get(segment, _MISSING)
                elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
                    node = node[int(segment)]
                else:
                    return _MISSING
                if node is _MISSING:
                    if len(self._segments) == 1:
                        return _search_key(document, self._segments[0])
                    return _MISSING
            return node
        matches = self._jsonpath.find(document)
        if not matches:
            return _MISSING
        if len(matches) == 1:
            return matches[0].value
        return [m.value for m in matches]


def render_value(value: Any) -> str:
    """JSON value -> Postfix text: lists joined with ',', integral numbers without '.0', objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return ",".join(render_value(v) for v in value if v is not None)
    if value is None:
        return ""
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class ResponseRules:
    """What one entry expects of its backend's answers."""

    value_path: FieldPath | None
    error_path: FieldPath | None = None
    no_error_value: str | None = None
    success_statuses: frozenset[int] = frozenset({200})
    not_found_statuses: frozenset[int] = DEFAULT_NOT_FOUND_STATUSES
    value_template: ValueTemplate | None = None  # instead of value_path


def _field_failed(key: str, exc: Exception) -> Outcome:
    """A field path or the rendering of what it found failed on this reply: jsonpath-ng's extensions raise
    on data of a type they do not expect (``sorted`` on mixed types, ``sub()`` on a number), and a value
    nested deeper than orjson (255 levels) or Python's recursion limit renders raises too. The backend
    answered in a shape the configuration does not fit: an error (PERM / the error action) like a failing
    value_template, never "not found" and never an exception that would drop the connection unanswered."""
    return Outcome(OutcomeKind.ERROR, reason=f"{key} failed", detail=f"{type(exc).__name__}: {exc}"[:500])


def classify(
    rules: ResponseRules, status: int, body: bytes, context: Mapping[str, Any] | None = None
) -> Outcome:
    """Map an HTTP status and body to an Outcome, per the contract table. ``context``: the lookup's template
    names, for ``value_template``."""
    if status not in rules.success_statuses:
        if status in rules.not_found_statuses:
            return Outcome(OutcomeKind.NOT_FOUND, detail=f"HTTP {status}")
        if status == 429 or status >= 500:
            return Outcome(OutcomeKind.TEMP, reason=f"backend status {status}", detail=f"HTTP {status}")
        if 400 <= status < 500:
            return Outcome(OutcomeKind.ERROR, reason=f"backend status {status}", detail=f"HTTP {status}")
        # 1xx final, unexpected 2xx, 3xx redirects (not followed): nothing we can trust; retry later.
        return Outcome(OutcomeKind.TEMP, reason=f"unexpected status {status}", detail=f"HTTP {status}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Outcome(OutcomeKind.TEMP, reason="invalid JSON from backend", detail=str(exc))
    if rules.error_path is not None:
        try:
            raw_error = rules.error_path.find(document)
            error_text = "" if raw_error is _MISSING or raw_error is None else render_value(raw_error)
        except Exception as exc:  # noqa: BLE001 - see _field_failed: an answer, never an exception
            return _field_failed("error_field", exc)
        if error_text and error_text != rules.no_error_value:
            return Outcome(OutcomeKind.ERROR, reason="backend reported an error", detail=error_text[:500])
    if rules.value_template is not None:
        try:
            text = rules.value_template.render(document, status, context or {})
        except PayloadError as exc:
            return Outcome(OutcomeKind.ERROR, reason="value_template failed", detail=str(exc)[:500])
        if not text:
            return Outcome(OutcomeKind.NOT_FOUND, detail="value_template rendered nothing")
        return Outcome(OutcomeKind.FOUND, value=text)
    if rules.value_path is None:
        return Outcome(OutcomeKind.ERROR, reason="no value_field configured")
    try:
        raw = rules.value_path.find(document)
        if raw is _MISSING or raw is None:
            return Outcome(OutcomeKind.NOT_FOUND, detail="value absent")
        value = render_value(raw)
    except Exception as exc:  # noqa: BLE001 - see _field_failed: an answer, never an exception
        return _field_failed("value_field", exc)
    if not value:
        # Upstream answers PERM here too: an empty answer is not "not found" (that could bounce mail).
        return Outcome(OutcomeKind.ERROR, reason="empty value from backend", detail=repr(raw)[:200])
    return Outcome(OutcomeKind.FOUND, value=value)


def socketmap_reply(outcome: Outcome, max_reply_size: int) -> SocketmapReply:
    """Outcome -> socketmap reply; a value that would not fit is ``PERM value too long``."""
    kind = outcome.kind
    if kind is OutcomeKind.FOUND:
        value = outcome.value
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return SocketmapReply.perm("value not UTF-8")
        # The whole payload, "OK " included, must fit Postfix's socketmap_max_reply_size.
        if size + 3 > max_reply_size:
            return SocketmapReply.perm("value too long")
        if "\0" in value:
            return SocketmapReply.perm("value contains NUL")
        return SocketmapReply.ok(value)
    if kind is OutcomeKind.NOT_FOUND:
        return SocketmapReply.notfound()
    if kind is OutcomeKind.TIMEOUT:
        return SocketmapReply.timeout(outcome.reason or "backend timeout")
    if kind is OutcomeKind.TEMP:
        return SocketmapReply.temp(outcome.reason or "backend error")
    return SocketmapReply.perm(outcome.reason or "backend error")


def tcp_table_reply(outcome: Outcome) -> TcpTableReply:
    """Outcome -> tcp_table reply: 200 value, 500 not found, 400 for every failure (tcp_table(5): 4xx is a
    temporary error); a value the protocol cannot carry (over 4096 bytes, NUL, not UTF-8) is a 400, never 500."""
    if outcome.kind is OutcomeKind.FOUND:
        reply = TcpTableReply.found(outcome.value)
        try:
            reply.encode()
        except ReplyError:
            return TcpTableReply.temp("value not representable")
        return reply
    if outcome.kind is OutcomeKind.NOT_FOUND:
        return TcpTableReply.not_found()
    return TcpTableReply.temp(outcome.reason or "backend error")


_UNSAFE_ACTION = re.compile(r"[\r\n\0]")


def policy_reply(outcome: Outcome, error_action: str) -> PolicyReply:
    """Outcome -> policy reply: the value's text is the action; every failure is the error action."""
    if outcome.kind is OutcomeKind.FOUND:
        # CR/LF/NUL anywhere (even trailing) means the backend sent something other than one action line.
        action = outcome.value.strip(" \t")
        if action and not _UNSAFE_ACTION.search(action) and _fits_action(action):
            return PolicyReply(action)
        return PolicyReply(error_action)
    if outcome.kind is OutcomeKind.NOT_FOUND:
        return PolicyReply("DUNNO")
    return PolicyReply(error_action)


def _fits_action(action: str) -> bool:
    try:
        return len(action.encode("utf-8")) <= MAX_ACTION_LENGTH
    except UnicodeEncodeError:
        return False
