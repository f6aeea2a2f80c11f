"""The key tree of pfxhttp.yml: every key the loader reads, with its shape, value schema and description.

Built from the loader's own key tables (``serversection.SERVER_KEYS``, ``listen.LISTEN_KEYS``, ``entries.ENTRY_KEYS``
...), in their order; :mod:`pfxhttp.config.keydocs` holds the description and JSON Schema of each key. A key
added to a table without its description makes :func:`key_tree` raise, and a test builds it. One tree serves
the JSON Schema (:mod:`pfxhttp.config.schema`), the environment overrides (:mod:`pfxhttp.config.overrides`)
and the test that the manual documents every key.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pfxhttp.config import auth, blocks, entries, listen, serversection
from pfxhttp.config.jsontypes import Doc
from pfxhttp.config.keydocs import BLOCK_DOCS, DOCS, ENTRY_RULES, IGNORED_DOC


class Shape(enum.Enum):
    VALUE = "value"  # one value (a scalar, or a scalar-or-list such as status_code, or query's mapping)
    BLOCK = "block"  # a mapping of fixed keys; unknown keys are errors
    ENTRIES = "entries"  # socket_maps / policy_services: user-named entries, each a block of entry keys
    LISTENERS = "listeners"  # server.listen: a list of listener blocks (or, in old files, one)
    IGNORED = "ignored"  # an upstream key this version accepts and ignores with a warning


@dataclass(frozen=True, slots=True)
class Key:
    """One key. ``schema``: for a VALUE the JSON Schema of its value; for a BLOCK extra keywords (required
    keys, rules between keys). ``keys``: the keys of a BLOCK, of each entry, of each listener."""

    name: str
    shape: Shape
    doc: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    keys: tuple[Key, ...] = ()
    nullable: bool = True  # null (an empty value) means "not set"
    off: bool = False  # BLOCK: `false` turns it off (cache, circuit_breaker, jwt_auth, backend_oidc_auth)

    def accepts_scalar(self) -> bool:
        """True when one scalar is a valid value (what an environment variable can set)."""
        return self.shape is Shape.VALUE and _scalar_schema(self.schema)


def _scalar_schema(schema: Mapping[str, Any]) -> bool:
    types = schema.get("type", ())
    types = [types] if isinstance(types, str) else list(types)
    if any(t in ("string", "integer", "number", "boolean") for t in types) or "enum" in schema:
        return True
    return any(_scalar_schema(alt) for alt in schema.get("anyOf", ()))


def _value(name: str, docs: Mapping[str, Doc]) -> Key:
    doc = docs[name]
    return Key(name, Shape.VALUE, doc.text, doc.schema, nullable=doc.nullable)


def _ignored(name: str) -> Key:
    return Key(name, Shape.IGNORED, IGNORED_DOC)


def _keys(
    table: Sequence[str],
    deferred: Sequence[str],
    docs: Mapping[str, Doc],
    nested: Mapping[str, Key] | None = None,
) -> tuple[Key, ...]:
    """The keys of one loader table, in its order: nested blocks from ``nested``, values from ``docs``."""
    nested = nested or {}
    unused = set(docs) | set(nested)
    keys: list[Key] = []
    for name in table:
        if name in nested:
            keys.append(nested[name])
        elif name in docs:
            keys.append(_value(name, docs))
        else:
            raise KeyError(f"key {name!r} of a loader table has no description in pfxhttp.config.keydocs")
        unused.discard(name)
    if unused:
        raise KeyError(f"keydocs describe keys the loader does not read: {sorted(unused)}")
    return (*keys, *(_ignored(name) for name in deferred))


def _block(name: str, keys: tuple[Key, ...], **options: Any) -> Key:
    doc = BLOCK_DOCS[name]
    return Key(name, Shape.BLOCK, doc.text, doc.schema, keys, nullable=doc.nullable, **options)


def _worker_pool() -> Key:
    return _block("worker_pool", _keys(blocks.WORKER_POOL_KEYS, (), DOCS["worker_pool"]))


def _entry_keys(policy: bool) -> tuple[Key, ...]:
    entry_docs = dict(DOCS["entry"])
    cache_docs = dict(DOCS["cache"])
    table = list(entries.ENTRY_KEYS)
    cache_table = list(blocks.CACHE_KEYS)
    if not policy:
        for key in entries.POLICY_ONLY_KEYS:
            table.remove(key)
            del entry_docs[key]
        cache_table.remove("key_attributes")  # a socket map's cache key is always the lookup key
        del cache_docs["key_attributes"]
    oidc_keys = _keys(auth.OIDC_AUTH_KEYS, (), DOCS["backend_oidc_auth"])
    nested = {
        "cache": _block("cache", _keys(cache_table, (), cache_docs), off=True),
        "circuit_breaker": _block(
            "circuit_breaker", _keys(blocks.CIRCUIT_BREAKER_KEYS, (), DOCS["circuit_breaker"]), off=True
        ),
        "jwt_auth": _block("jwt_auth", _keys(auth.JWT_AUTH_KEYS, (), DOCS["jwt_auth"]), off=True),
        "backend_oidc_auth": _block("backend_oidc_auth", oidc_keys, off=True),
        "oidc_auth": _block("oidc_auth", oidc_keys, off=True),  # upstream's older name, the same keys
    }
    return _keys(table, entries.ENTRY_DEFERRED, entry_docs, nested)


def _entries(name: str, *, policy: bool) -> Key:
    doc = BLOCK_DOCS[name]
    return Key(name, Shape.ENTRIES, doc.text, ENTRY_RULES, _entry_keys(policy))


def key_tree() -> Key:
    """The root block of pfxhttp.yml."""
    from pfxhttp.config import loader  # the loader applies overrides, which walk this tree: import late

    listener = _keys(
        listen.LISTEN_KEYS, listen.LISTEN_DEFERRED, DOCS["listen"], {"worker_pool": _worker_pool()}
    )
    server_blocks = {
        "listen": Key(
            "listen", Shape.LISTENERS, BLOCK_DOCS["listen"].text, BLOCK_DOCS["listen"].schema, listener
        ),
        "logging": _block("logging", _keys(serversection.LOGGING_KEYS, (), DOCS["logging"])),
        "http_client": _block(
            "http_client",
            _keys(serversection.HTTP_CLIENT_KEYS, serversection.HTTP_CLIENT_DEFERRED, DOCS["http_client"]),
        ),
        "tls": _block("tls", _keys(serversection.TLS_KEYS, (), DOCS["tls"])),
        "response_cache": _block(
            "response_cache", _keys(blocks.RESPONSE_CACHE_KEYS, (), DOCS["response_cache"])
        ),
        "worker_pool": _worker_pool(),
        "metrics": _block("metrics", _keys(blocks.METRICS_KEYS, (), DOCS["metrics"])),
    }
    server = _block(
        "server",
        _keys(serversection.SERVER_KEYS, serversection.SERVER_DEFERRED, DOCS["server"], server_blocks),
    )
    sections = {
        "server": server,
        "socket_maps": _entries("socket_maps", policy=False),
        "policy_services": _entries("policy_services", policy=True),
    }
    return _block("", _keys(loader.TOP_KEYS, loader.TOP_DEFERRED, {}, sections))


def leaf_paths(key: Key, path: str = "") -> Iterator[tuple[str, Key]]:
    """Every VALUE and IGNORED key below ``key`` as ``(dotted path, key)``; entries and listeners appear
    as ``socket_maps.*.target`` and ``server.listen[].port``."""
    for child in key.keys:
        if key.shape is Shape.ENTRIES:
            child_path = f"{path}.*.{child.name}"
        elif key.shape is Shape.LISTENERS:
            child_path = f"{path}[].{child.name}"
        else:
            child_path = f"{path}.{child.name}" if path else child.name
        if child.shape in (Shape.VALUE, Shape.IGNORED):
            yield child_path, child
        else:
            yield from leaf_paths(child, child_path)
