"""The HTTP request of one entry: prepared once when static, assembled per lookup when REST-shaped.

Most entries POST to a fixed URL: their request head is built once at load (``PreparedRequest``). REST-shaped
entries put the key into the URL (``target: https://api/mail/alias/{{ key }}/``) or the query string
(``query: {domain: "{{ key.split('@')[1] }}"}``): those templates are compiled once at load and rendered per
lookup. A value interpolated into the path is percent-encoded as ONE path segment (``/`` included), so a key can
never change which resource is asked for; query values are percent-encoded as query values.

Percent-encoding leaves ``.`` and ``..`` as they are, and encoding the dots would not help: servers decode
``%2E`` and then resolve dot segments (RFC 3986 section 5.2.4) before they route, so ``/alias/../info`` asks
for ``/info``, and many merge ``//`` (``/account//`` for an empty value). A path segment that an expression
helped to write and that comes out empty, ``.`` or ``..`` therefore names no resource: such a request is never
sent, ``build`` raises :class:`~pfxhttp.errors.UnaddressableKey` and the lookup answers "not found". Literal
empty segments of the template itself (a trailing ``/``) are the admin's and stay.

The same holds inside a segment: nginx and others decode ``%2F`` (and IIS ``\\``) before resolving dot segments, so
a key ``../admin`` (sent as ``..%2Fadmin``) or ``/`` climbs out of the template just the same. A segment an
expression helped to write is therefore judged as the server may see it: percent-decoded and split at ``/`` and
``\\``, it must hold a non-empty piece and no ``.`` or ``..`` piece. A key like ``a/b`` is still asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pfxhttp.backend.context import jinja_source, sample_context
from pfxhttp.backend.httpmsg import PreparedRequest, Target, prepare_request
from pfxhttp.config.model import EntryConfig, HttpMethod
from pfxhttp.errors import ConfigError, PayloadError, UnaddressableKey

# Wraps every expression's output in a rendered target, so that the segments expressions wrote can be told
# from the template's literal text. NUL cannot come from either: check_target refuses control characters in
# the template and quote() encodes them in values.
_MARK = "\0"
_DOTS = frozenset({".", ".."})  # dot segments (RFC 3986 section 5.2.4)
_SEPARATORS = re.compile(r"[/\\]")  # what servers may split a decoded segment at


def _segment(value: Any) -> str:
    """Percent-encode an interpolated value as one URL path segment (RFC 3986 unreserved chars kept),
    marked as written by an expression."""
    return _MARK + quote(value if isinstance(value, str) else str(value), safe="") + _MARK


def _unmark(url: str) -> tuple[str, bool]:
    """The rendered target without marks, and whether every path segment an expression wrote names a
    resource (see :func:`_names_resource`). Only the path is judged: query values may be anything."""
    if _MARK not in url:
        return url, True
    end = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    addressable = all(
        _names_resource(segment.replace(_MARK, "")) for segment in url[:end].split("/") if _MARK in segment
    )
    return url.replace(_MARK, ""), addressable


def _names_resource(segment: str) -> bool:
    """Whether a path segment, as a server that decodes ``%2F`` may see it, stays one step below its parent:
    some piece non-empty, none a dot segment."""
    pieces = _SEPARATORS.split(unquote(segment))
    return any(pieces) and _DOTS.isdisjoint(pieces)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _environment(finalize: Any) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        autoescape=False, undefined=jinja2.StrictUndefined, finalize=finalize
    )


class RequestBuilder:
    """Builds the request of one entry for one lookup."""

    __slots__ = ("_entry", "_headers", "_query", "_static", "_target", "_user_agent", "has_body", "method")

    def __init__(self, entry: EntryConfig, headers: Sequence[tuple[str, str]], *, user_agent: str) -> None:
        self._entry = entry
        self._headers = tuple(headers)
        self._user_agent = user_agent
        self.method = entry.method
        self.has_body = entry.method is not HttpMethod.GET
        self._target: jinja2.Template | None = None
        self._query: tuple[tuple[str, jinja2.Template], ...] = ()
        self._static: PreparedRequest | None = None
        if "{{" in entry.target or entry.query:
            self._compile_templates()
            self._check_with_sample()
        else:
            self._static = self._prepare(Target.parse(entry.target))

    def _prepare(self, target: Target) -> PreparedRequest:
        return prepare_request(
            self.method.value,
            target,
            self._headers,
            user_agent=self._user_agent,
            gzip_request=self._entry.http_request_compression and self.has_body,
            accept_gzip=self._entry.http_response_compression,
        )

    def _compile_templates(self) -> None:
        entry = self._entry
        try:
            self._target = _environment(_segment).from_string(jinja_source(entry.target))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"target template: {exc.message}",
                location=entry.location_of("target"),
                path=entry.key_path("target"),
            ) from exc
        compiled: list[tuple[str, jinja2.Template]] = []
        query_env = _environment(_text)
        for name, source in entry.query:
            try:
                compiled.append((name, query_env.from_string(jinja_source(source))))
            except jinja2.TemplateSyntaxError as exc:
                raise ConfigError(
                    f"query template: {exc.message}",
                    location=entry.location_of("query"),
                    path=f"{entry.key_path('query')}.{name}",
                ) from exc
        self._query = tuple(compiled)

    def _check_with_sample(self) -> None:
        entry = self._entry
        try:
            # The sample may leave a path segment empty (an attribute it does not hold) and that is no config
            # problem: the URL is checked all the same.
            self._prepare(Target.parse(self._url(sample_context(entry))[0]))
        except (PayloadError, ValueError) as exc:
            raise ConfigError(
                f"target/query templates do not render a valid URL for a sample request: {exc}",
                location=entry.location_of("target"),
                path=entry.key_path("target"),
            ) from exc

    def build(self, context: Mapping[str, Any]) -> PreparedRequest:
        """The request for one lookup; PayloadError if a template fails for this key, UnaddressableKey if
        it leaves a path segment empty, ``.`` or ``..`` (the key names no resource: never sent)."""
        if self._static is not None:
            return self._static
        url, addressable = self._url(context)
        if not addressable:
            raise UnaddressableKey("the key renders an empty, '.' or '..' URL path segment")
        try:
            return self._prepare(Target.parse(url))
        except ValueError as exc:
            raise PayloadError(f"rendered URL is not valid: {exc}") from exc

    def _url(self, context: Mapping[str, Any]) -> tuple[str, bool]:
        """The rendered URL, query parameters appended, and whether its path names a resource."""
        assert self._target is not None
        try:
            url, addressable = _unmark(self._target.render(context))
            params = [(name, template.render(context)) for name, template in self._query]
        except jinja2.UndefinedError as exc:
            raise PayloadError(f"URL template: {exc.message}") from exc
        except Exception as exc:  # any template runtime failure is a defined PayloadError
            raise PayloadError(f"URL template failed: {type(exc).__name__}: {exc}") from exc
        if params:
            query = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params)
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        return url, addressable
