"""The ``socket_maps`` and ``policy_services`` sections: entries, their ``defaults`` entry, and merging.

Upstream pfxhttp reads both sections into one Go struct, so both accept the same keys; the keys of what a
policy service answers when its backend fails (``error_action``, ``on_error``) are errors on a socket map. A
``defaults`` entry is merged into every other entry of its section: the entry's own keys win, except
``custom_headers`` (the defaults' headers first, then the entry's: upstream's additive merge) and ``query``
(the defaults' parameters plus the entry's, the entry's value winning for a name both set). Mapping-valued
keys (``cache``, ``circuit_breaker``, ``jwt_auth``, ``backend_oidc_auth``) are replaced whole, and ``false``
turns off the one of ``defaults``. ``value_field`` and ``value_template`` are one choice: an entry that writes
either one drops the other from ``defaults``.

Two keys are other spellings of one model field (:data:`ALIASES`): ``oidc_auth`` is upstream's older name of
``backend_oidc_auth``, and ``http_auth_basic_file`` gives http_auth_basic from a file. Both spellings in one
mapping are an error; across ``defaults`` and an entry the entry's wins, as for any key.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from yaml.nodes import Node

from pfxhttp.config.entrykeys import parse_value
from pfxhttp.config.model import (
    DEFAULT_POLICY_ERROR_ACTION,
    BasicAuth,
    CacheConfig,
    CircuitBreakerConfig,
    EntryConfig,
    EntryKind,
    HttpMethod,
    JwtAuthConfig,
    OidcAuthConfig,
    OnError,
)
from pfxhttp.config.values import check_map_name
from pfxhttp.config.yamlnodes import EnvironmentLocation, Item, Problems, join, mapping_items, suggest
from pfxhttp.errors import ConfigError, Location

DEFAULTS_KEY = "defaults"  # reserved by upstream: never an entry, never a listener name

ENTRY_KEYS = (
    "target",
    "method",
    "query",
    "custom_headers",
    "payload",
    "status_code",
    "not_found_status",
    "value_field",
    "value_template",
    "error_field",
    "no_error_value",
    "http_auth_basic",
    "http_auth_basic_file",
    "jwt_auth",
    "backend_oidc_auth",
    "oidc_auth",
    "http_request_compression",
    "http_response_compression",
    "cache",
    "circuit_breaker",
    "error_action",
    "on_error",
)
POLICY_ONLY_KEYS = ("error_action", "on_error")
# Keys upstream pfxhttp accepts in an entry (some in older releases only) that this version ignores.
ENTRY_DEFERRED = (
    "sasl_oidc_auth",  # dovecot_sasl only
    "default_local_port",  # dovecot_sasl only
    "transport",  # dovecot_sasl only: json or grpc
    "grpc",  # dovecot_sasl only
)
_MODEL_DEFAULTS = EntryConfig(name="", kind=EntryKind.SOCKET_MAP, target="")  # the model's own defaults
_ONE_OF = ("value_field", "value_template")
# Another spelling -> the key (and model field) it sets, with why the two exclude each other in one mapping.
ALIASES = {
    "http_auth_basic_file": ("http_auth_basic", "give the credentials or the file that holds them"),
    "oidc_auth": ("backend_oidc_auth", "oidc_auth is the older name of backend_oidc_auth: write one"),
}
_AUTH_KEYS = ("jwt_auth", "backend_oidc_auth")  # each sends its own Authorization: Bearer

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Field:
    """One parsed entry key: the value, where it was written, and how (the alias used, if any)."""

    value: object
    location: Location
    spelling: str = ""  # the key as written, when an alias of the field's name


@dataclass(frozen=True, slots=True)
class Section:
    entries: dict[str, EntryConfig]
    names: frozenset[str]  # every entry name written, even of entries that had errors


def check_keys(
    items: list[Item],
    path: str,
    supported: Collection[str],
    deferred: Collection[str],
    problems: Problems,
) -> dict[str, Item]:
    """Keep the supported keys; warn once per deferred key; refuse the rest with the closest spelling."""
    known: dict[str, Item] = {}
    for item in items:
        key_path = join(path, item.key)
        if item.key in supported:
            known[item.key] = item
        elif item.key in deferred:
            problems.deferred(item.key_node, key_path)
        else:
            hint = suggest(item.key, [*supported, *deferred])
            problems.error(item.key_node, key_path, "unknown key", hint)
    return known


def parse_section(item: Item | None, kind: EntryKind, problems: Problems) -> Section:
    if item is None:
        return Section({}, frozenset())
    items = mapping_items(item.value, kind.value, problems)
    if items is None:
        return Section({}, frozenset())
    defaults: dict[str, Field] = {}
    errors_before = len(problems.errors)
    for entry in items:
        if entry.key == DEFAULTS_KEY:
            path = join(kind.value, DEFAULTS_KEY)
            defaults = _parse_fields(entry.value, path, kind, problems) or {}
            _cross_check(defaults, set(defaults), path, problems)
    defaults_failed = len(problems.errors) > errors_before
    entries: dict[str, EntryConfig] = {}
    names: set[str] = set()
    for entry in items:
        if entry.key == DEFAULTS_KEY:
            continue
        names.add(entry.key)
        path = join(kind.value, entry.key)
        try:
            check_map_name(entry.key, "entry name")
        except ConfigError as exc:
            problems.wrap(entry.key_node, path, exc)
            continue
        errors_before = len(problems.errors)
        fields = _parse_fields(entry.value, path, kind, problems)
        if fields is None or len(problems.errors) > errors_before:
            continue  # already reported; a "missing target" on top would only be noise
        merged = _merge(defaults, fields)
        if defaults_failed and "target" not in merged:
            continue  # the target may be the broken one in `defaults`: that error was reported there
        if not _cross_check(merged, set(fields), path, problems):
            continue
        built = _build(entry, kind, merged, path, problems)
        if built is not None:
            entries[entry.key] = built
    return Section(entries, frozenset(names))


def _merge(defaults: dict[str, Field], own: dict[str, Field]) -> dict[str, Field]:
    merged = {**defaults, **own}
    if "custom_headers" in defaults and "custom_headers" in own:
        headers = (*_pairs(defaults, "custom_headers"), *_pairs(own, "custom_headers"))
        merged["custom_headers"] = Field(headers, own["custom_headers"].location)
    if "query" in defaults and "query" in own:
        query = dict(_pairs(defaults, "query")) | dict(_pairs(own, "query"))
        merged["query"] = Field(tuple(query.items()), own["query"].location)
    for mine, other in (_ONE_OF, _ONE_OF[::-1]):
        if mine in own and other not in own:
            merged.pop(other, None)
    return merged


def _pairs(fields: dict[str, Field], key: str) -> tuple[tuple[str, str], ...]:
    value = fields[key].value
    assert isinstance(value, tuple)
    return value


def _get(fields: dict[str, Field], key: str, kind: type[T], default: T) -> T:
    value = fields[key].value if key in fields else None
    return value if isinstance(value, kind) else default


def _cross_check(fields: dict[str, Field], own: set[str], path: str, problems: Problems) -> bool:
    """Checks between keys, after merging. Reported only when ``own`` (the keys the entry itself wrote)
    holds one of the keys involved: otherwise ``defaults`` alone is wrong and was reported there."""
    ok = True
    success = _get(fields, "status_code", tuple, _MODEL_DEFAULTS.status_code)
    not_found = _get(fields, "not_found_status", tuple, _MODEL_DEFAULTS.not_found_status)
    both = sorted(set(success) & set(not_found))
    if both and own & {"status_code", "not_found_status"}:
        key = "not_found_status" if "not_found_status" in own else "status_code"
        default = "" if "not_found_status" in fields else " (not_found_status defaults to 404)"
        codes = ", ".join(str(code) for code in both)
        problems.error_at(
            fields[key].location,
            join(path, key),
            f"status {codes} is in both status_code and not_found_status{default}",
        )
        ok = False
    ok = _check_authorization(fields, own, path, problems) and ok
    method = _get(fields, "method", HttpMethod, HttpMethod.POST)
    if method is HttpMethod.GET and "payload" in own:
        problems.error_at(
            fields["payload"].location,
            join(path, "payload"),
            "the method is GET, which sends no request body: remove 'payload' or use POST or PUT",
        )
        ok = False
    return ok


def _order(location: Location) -> tuple[bool, int, int]:
    """File order, values set from the environment after the whole file."""
    return (isinstance(location, EnvironmentLocation), location.line, location.column)


def _written(fields: dict[str, Field], key: str) -> str:
    return fields[key].spelling or key


def _check_authorization(fields: dict[str, Field], own: set[str], path: str, problems: Problems) -> bool:
    """One Authorization header per request: jwt_auth and backend_oidc_auth each send a bearer token, so
    neither goes with the other, with http_auth_basic or with a custom Authorization header."""
    active = [
        key
        for key in _AUTH_KEYS
        if isinstance(_get(fields, key, object, None), JwtAuthConfig | OidcAuthConfig)
    ]
    if not active:
        return True
    others = active[1:]
    if isinstance(_get(fields, "http_auth_basic", object, None), BasicAuth):
        others.append("http_auth_basic")
    headers = _get(fields, "custom_headers", tuple, ())
    if any(name.lower() == "authorization" for name, _ in headers):
        others.append("custom_headers")
    involved = [key for key in (active[0], *others) if key in own]
    if not others or not involved:
        return True  # no clash, or one `defaults` has on its own and reported there
    blame = max(involved, key=lambda key: _order(fields[key].location))
    other = next(key for key in (active[0], *others) if key != blame)

    def name(key: str) -> str:
        written = "a custom Authorization header" if key == "custom_headers" else _written(fields, key)
        return written + ("" if key in own else " (from defaults)")

    problems.error_at(
        fields[blame].location,
        join(path, _written(fields, blame)),
        f"{name(blame)} and {name(other)} would both send the Authorization header: keep one "
        "(an entry turns off an authentication block of defaults with 'false')",
    )
    return False


def _build(
    entry: Item, kind: EntryKind, fields: dict[str, Field], path: str, problems: Problems
) -> EntryConfig | None:
    if "target" not in fields:
        problems.error(
            entry.key_node, path, "missing required key 'target' (here or in the 'defaults' entry)"
        )
        return None
    locations = {"": problems.loc(entry.key_node)} | {name: f.location for name, f in fields.items()}
    blank = _MODEL_DEFAULTS

    def text(name: str) -> str | None:
        return _get(fields, name, str, None)

    return EntryConfig(
        name=entry.key,
        kind=kind,
        target=str(fields["target"].value),
        payload=text("payload"),
        custom_headers=_get(fields, "custom_headers", tuple, ()),
        status_code=_get(fields, "status_code", tuple, blank.status_code),
        not_found_status=_get(fields, "not_found_status", tuple, blank.not_found_status),
        method=_get(fields, "method", HttpMethod, blank.method),
        query=_get(fields, "query", tuple, ()),
        value_template=text("value_template"),
        value_field=text("value_field"),
        error_field=text("error_field"),
        no_error_value=text("no_error_value"),
        http_auth_basic=_get(fields, "http_auth_basic", BasicAuth, None),
        # `jwt_auth: false` / `enabled: false` (a bool here) turn off what `defaults` turned on.
        jwt_auth=_get(fields, "jwt_auth", JwtAuthConfig, None),
        backend_oidc_auth=_get(fields, "backend_oidc_auth", OidcAuthConfig, None),
        http_request_compression=_get(fields, "http_request_compression", bool, False),
        http_response_compression=_get(fields, "http_response_compression", bool, False),
        # `cache: false` / `circuit_breaker: false` (a bool here) turn off what `defaults` turned on.
        cache=_get(fields, "cache", CacheConfig, None),
        circuit_breaker=_get(fields, "circuit_breaker", CircuitBreakerConfig, None),
        error_action=_get(fields, "error_action", str, DEFAULT_POLICY_ERROR_ACTION),
        on_error=_get(fields, "on_error", OnError, blank.on_error),
        locations=MappingProxyType(locations),
    )


def _parse_fields(node: Node, path: str, kind: EntryKind, problems: Problems) -> dict[str, Field] | None:
    """Parse one entry (or ``defaults``); keys whose value is null or empty count as not written, as the
    zero value does upstream, so they inherit from ``defaults``."""
    items = mapping_items(node, path, problems)
    if items is None:
        return None
    fields: dict[str, Field] = {}
    known = check_keys(items, path, ENTRY_KEYS, ENTRY_DEFERRED, problems)
    for alias, (canonical, why) in ALIASES.items():
        if alias in known and canonical in known:
            later = max(known[alias], known[canonical], key=lambda i: i.key_node.start_mark.index)
            problems.error(
                later.key_node, join(path, later.key), f"{canonical} and {alias} exclude each other: {why}"
            )
            del known[later.key]
    for key, item in known.items():
        key_path = join(path, key)
        if kind is EntryKind.SOCKET_MAP and key in POLICY_ONLY_KEYS:
            problems.error(
                item.key_node,
                key_path,
                f"'{key}' is only for policy_services (a socket map answers TEMP or TIMEOUT when its "
                "backend fails)",
            )
            continue
        value = parse_value(key, item.value, key_path, kind, problems)
        if value is not None and value != "":
            canonical = ALIASES[key][0] if key in ALIASES else key
            fields[canonical] = Field(value, problems.loc(item.value), key if key in ALIASES else "")
    both = [key for key in _ONE_OF if key in fields]
    if len(both) == 2:
        second = max((_by_key(items, key) for key in both), key=lambda i: i.key_node.start_mark.index)
        problems.error(
            second.key_node,
            join(path, second.key),
            "value_field and value_template exclude each other: choose one",
        )
    return fields


def _by_key(items: list[Item], key: str) -> Item:
    return next(item for item in items if item.key == key)
