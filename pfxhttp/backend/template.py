"""Payload templates: Jinja2, compiled once at load, JSON-safe by construction.

A payload is JSON text with expressions in it. Whatever an expression yields is made JSON-safe by Jinja's
``finalize`` hook, so the upstream form ``{"key": "{{ .Key }}"}`` carries exactly the key for ANY key (quotes,
backslashes, control characters, UTF-8, ``<>``), and a key can never inject fields:

- a string becomes JSON string *content* (escaped, without the surrounding quotes, which the template has);
- a mapping or list (the policy attribute map) becomes a JSON object/array;
- numbers and booleans become their JSON spelling, None becomes ``null``;
- the output of the ``tojson`` filter is complete JSON text and is left alone.

Templates that only substitute names into literal text (the usual ``{"key": "{{ .Key }}"}``) are rendered by a
precomputed plan, about 30 times cheaper than a Jinja render and with exactly Jinja's output (the same
``finalize`` on the same values); everything else goes through Jinja.

The Go-template spelling ``{{ .Key }}`` is rewritten to the Jinja variable ``Key`` before compiling. For socket
maps ``Key`` is the lookup key; for policy services it is the whole attribute map, emitted as a JSON object, as in
upstream pfxhttp. Jinja names: ``key`` (same as ``Key``), ``name`` (map or service name), ``attrs`` (the policy
attribute map; empty for socket maps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.nodes
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pfxhttp.backend.context import SAMPLE_KEY, jinja_source, sample_context
from pfxhttp.config.model import EntryConfig, EntryKind
from pfxhttp.errors import ConfigError, PayloadError

DEFAULT_SOCKETMAP_PAYLOAD = '{"key": "{{ key }}"}'
DEFAULT_POLICY_PAYLOAD = "{{ attrs }}"


class RawJson(str):
    """Text that is already complete JSON; ``finalize`` passes it through unchanged."""

    __slots__ = ()


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # lone surrogates (non-UTF-8 key), unsupported types
        raise PayloadError(f"value cannot be encoded as JSON: {exc}") from exc


def _json_bytes(value: Any) -> bytes:
    """``_finalize`` for a plain plan, in UTF-8: a string's JSON content, any other value's JSON text."""
    try:
        text = orjson.dumps(value)
    except TypeError as exc:  # lone surrogates (non-UTF-8 key), unsupported types
        raise PayloadError(f"value cannot be encoded as JSON: {exc}") from exc
    return text[1:-1] if isinstance(value, str) else text


def _finalize(value: Any) -> str:
    if isinstance(value, RawJson):
        return value
    if isinstance(value, str):
        # JSON string content: dump with quotes, then drop them.
        return _json_text(value)[1:-1]
    if isinstance(value, jinja2.Undefined):
        return str(value)  # StrictUndefined raises here
    return _json_text(value)


def _tojson(value: Any) -> RawJson:
    return RawJson(_json_text(value))


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = _tojson
    return env


_PLAIN_NAMES = frozenset({"Key", "key", "name", "attrs"})


class _Var:
    """A name substituted by a plain plan."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _plain_plan(env: jinja2.Environment, source: str) -> tuple[str | _Var, ...] | None:
    """Literal text and bare context names only -> the parts to join; anything else (filters, logic) -> None."""
    body = env.parse(source).body
    if not body:
        return ()
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output):
        return None
    plan: list[str | _Var] = []
    for node in body[0].nodes:
        if isinstance(node, jinja2.nodes.TemplateData):
            plan.append(node.data)
        elif isinstance(node, jinja2.nodes.Name) and node.ctx == "load" and node.name in _PLAIN_NAMES:
            plan.append(_Var(node.name))
        else:
            return None
    return tuple(plan)


class PayloadTemplate:
    """A compiled payload template of one entry."""

    __slots__ = ("_bytes_plan", "_entry", "_plan", "_template", "always_json", "source")

    def __init__(self, entry: EntryConfig, env: jinja2.Environment | None = None) -> None:
        self._entry = entry
        if entry.payload is not None:
            self.source = entry.payload
        elif entry.kind is EntryKind.SOCKET_MAP:
            self.source = DEFAULT_SOCKETMAP_PAYLOAD
        else:
            self.source = DEFAULT_POLICY_PAYLOAD
        source_for_jinja = jinja_source(self.source)
        location = entry.location_of("payload")
        path = entry.key_path("payload")
        env = env or _environment()
        try:
            self._template = env.from_string(source_for_jinja)
            self._plan = _plain_plan(env, source_for_jinja)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"payload template: {exc.message} (template line {exc.lineno})", location=location, path=path
            ) from exc
        # The same plan with its literal text encoded once: the request body is built as bytes per lookup.
        self._bytes_plan = (
            None
            if self._plan is None
            else tuple(part.encode("utf-8") if isinstance(part, str) else part for part in self._plan)
        )
        self._check_renders_json(location, path)
        # A plain plan's variable parts are JSON string content (strings) or whole JSON values (mappings), in
        # fixed places: if the hostile sample rendered to valid JSON, every render does, so the per-request
        # check can be skipped. Jinja templates with logic keep it (a branch the sample missed may be broken).
        self.always_json = self._plan is not None

    def _check_renders_json(self, location: Any, path: str) -> None:
        """Render with hostile sample values: a payload that is not valid JSON is caught at load."""
        try:
            text = self.render(sample_context(self._entry))
        except PayloadError as exc:
            raise ConfigError(f"payload template: {exc}", location=location, path=path) from exc
        if not text.strip():
            return  # an empty body is allowed: some APIs take everything from the URL
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            # The rendered text is not quoted: a payload may carry an API key, and config errors are printed
            # and logged. The sample values are ours, and show what broke it.
            raise ConfigError(
                f"payload does not render to valid JSON ({exc}) for sample values with quotes and "
                f"backslashes, such as the key {SAMPLE_KEY!r}: write {{{{ key | tojson }}}} for a JSON string",
                location=location,
                path=path,
            ) from exc

    def render(self, context: Mapping[str, Any]) -> str:
        """The payload for one lookup's context (see pfxhttp.backend.context); PayloadError on failure."""
        plan = self._plan
        if plan is not None:
            return "".join(part if isinstance(part, str) else _finalize(context[part.name]) for part in plan)
        try:
            return self._template.render(context)
        except PayloadError:
            raise
        except jinja2.UndefinedError as exc:
            raise PayloadError(f"payload template: {exc.message}") from exc
        except Exception as exc:
            raise PayloadError(f"payload template failed: {type(exc).__name__}: {exc}") from exc

    def render_bytes(self, context: Mapping[str, Any]) -> bytes:
        """``render`` as the UTF-8 request body. Plain plans are joined as bytes: orjson already gives UTF-8,
        so the payload never makes a round trip through str. PayloadError on failure (also for text that
        cannot be UTF-8, like a lone surrogate)."""
        plan = self._bytes_plan
        if plan is None:
            try:
                return self.render(context).encode("utf-8")
            except UnicodeEncodeError as exc:
                raise PayloadError(f"payload is not UTF-8: {exc}") from exc
        return b"".join(part if isinstance(part, bytes) else _json_bytes(context[part.name]) for part in plan)


class ValueTemplate:
    """``value_template``: Jinja2 (sandboxed, compiled at load) turning a parsed response into the value.

    Names: ``response`` (the parsed JSON), ``status`` (the HTTP status) and the lookup names (``key``,
    ``attrs``, ``name``). Output is stripped; an empty result means not found / DUNNO. A failure while rendering
    is the backend answering in a shape the template does not expect: an error (PERM / the error action),
    never "not found".
    """

    __slots__ = ("_template",)

    def __init__(self, entry: EntryConfig) -> None:
        assert entry.value_template is not None
        env = ImmutableSandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined)
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(jinja_source(entry.value_template))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"value_template: {exc.message} (template line {exc.lineno})",
                location=entry.location_of("value_template"),
                path=entry.key_path("value_template"),
            ) from exc

    def render(self, response: Any, status: int, context: Mapping[str, Any]) -> str:
        """The value for this response ("" = not found); PayloadError if the template fails on it."""
        try:
            return self._template.render({**context, "response": response, "status": status}).strip()
        except Exception as exc:  # any runtime failure of the admin's template is a defined error
            raise PayloadError(f"value_template failed: {type(exc).__name__}: {exc}") from exc
