"""The HTTP request of one entry: prepared once when static, assembled per lookup when REST-shaped.

Most entries POST to a fixed URL: their request head is built once at load (``PreparedRequest``). REST-shaped
entries put the key into the URL (``target: https://api/mail/alias/{{ key }}/``) or the query string
(``query: {domain: "{{ key.split('@')[1] }}"}``): those templates are compiled once at load and rendered per
lookup. A value interpolated into the path is percent-encoded as ONE path segment (``/`` included), so a key can
never change which resource is asked for; query values are percent-encoded as query values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pfxhttp.backend.context import jinja_source, sample_context
from pfxhttp.backend.httpmsg import PreparedRequest, Target, prepare_request
from pfxhttp.config.model import EntryConfig, HttpMethod
from pfxhttp.errors import ConfigError, PayloadError


def _segment(value: Any) -> str:
    """Percent-encode an interpolated value as one URL path segment (RFC 3986 unreserved chars kept)."""
    return quote(value if isinstance(value, str) else str(value), safe="")


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
            self.build(sample_context(entry))
        except (PayloadError, ValueError) as exc:
            raise ConfigError(
                f"target/query templates do not render a valid URL for a sample request: {exc}",
                location=entry.location_of("target"),
                path=entry.key_path("target"),
            ) from exc

    def build(self, context: Mapping[str, Any]) -> PreparedRequest:
        """The request for one lookup; PayloadError if a template fails for this key."""
        if self._static is not None:
            return self._static
        assert self._target is not None
        try:
            url = self._target.render(context)
            params = [(name, template.render(context)) for name, template in self._query]
        except jinja2.UndefinedError as exc:
            raise PayloadError(f"URL template: {exc.message}") from exc
        except Exception as exc:  # any template runtime failure is a defined PayloadError
            raise PayloadError(f"URL template failed: {type(exc).__name__}: {exc}") from exc
        if params:
            query = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params)
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        try:
            return self._prepare(Target.parse(url))
        except ValueError as exc:
            raise PayloadError(f"rendered URL is not valid: {exc}") from exc
