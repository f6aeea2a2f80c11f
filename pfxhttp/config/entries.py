"""The ``socket_maps`` and ``policy_services`` sections: entries, their ``defaults`` entry, and merging.

Upstream pfxhttp reads both sections into one Go struct, so both accept the same keys. A ``defaults`` entry
is merged into every other entry of its section: the entry's own keys win, except ``custom_headers``, where
the defaults' headers come first and the entry's follow (upstream's additive merge).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from types import MappingProxyType

from yaml.nodes import Node, ScalarNode

from pfxhttp.config.model import BasicAuth, EntryConfig, EntryKind
from pfxhttp.config.values import check_map_name, check_target, parse_basic_auth, parse_header
from pfxhttp.config.yamlnodes import (
    Item,
    Problems,
    as_int,
    as_str,
    is_null,
    join,
    mapping_items,
    sequence_items,
    suggest,
)
from pfxhttp.errors import ConfigError, Location

DEFAULTS_KEY = "defaults"  # reserved by upstream: never an entry, never a listener name

ENTRY_KEYS = (
    "target",
    "custom_headers",
    "payload",
    "status_code",
    "value_field",
    "error_field",
    "no_error_value",
    "http_auth_basic",
)
# Keys upstream pfxhttp accepts in an entry (some in older releases only) that this version ignores.
ENTRY_DEFERRED = (
    "jwt_auth",  # older releases: token endpoint + credentials, tokens kept in server.jwt_db_path
    "oidc_auth",  # older name of backend_oidc_auth
    "backend_oidc_auth",
    "sasl_oidc_auth",  # dovecot_sasl only
    "http_request_compression",
    "http_response_compression",
    "default_local_port",  # dovecot_sasl only
    "transport",  # dovecot_sasl only: json or grpc
    "grpc",  # dovecot_sasl only
)

_JSON_BOOL_SPELLINGS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})


@dataclass(frozen=True, slots=True)
class Field:
    """One parsed entry key: the value and where it was written."""

    value: object
    location: Location


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
            defaults = _parse_fields(entry.value, join(kind.value, DEFAULTS_KEY), problems) or {}
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
        fields = _parse_fields(entry.value, path, problems)
        if fields is None or len(problems.errors) > errors_before:
            continue  # already reported; a "missing target" on top would only be noise
        merged = _merge(defaults, fields)
        if defaults_failed and "target" not in merged:
            continue  # the target may be the broken one in `defaults`: that error was reported there
        built = _build(entry, kind, merged, path, problems)
        if built is not None:
            entries[entry.key] = built
    return Section(entries, frozenset(names))


def _merge(defaults: dict[str, Field], own: dict[str, Field]) -> dict[str, Field]:
    merged = {**defaults, **own}
    if "custom_headers" in defaults and "custom_headers" in own:
        headers = (*_headers(defaults), *_headers(own))
        merged["custom_headers"] = Field(headers, own["custom_headers"].location)
    return merged


def _headers(fields: dict[str, Field]) -> tuple[tuple[str, str], ...]:
    value = fields["custom_headers"].value
    assert isinstance(value, tuple)
    return value


def _build(
    entry: Item, kind: EntryKind, fields: dict[str, Field], path: str, problems: Problems
) -> EntryConfig | None:
    if "target" not in fields:
        problems.error(
            entry.key_node, path, "missing required key 'target' (here or in the 'defaults' entry)"
        )
        return None
    locations = {"": problems.loc(entry.key_node)} | {name: f.location for name, f in fields.items()}

    def text(name: str) -> str | None:
        value = fields[name].value if name in fields else None
        return value if isinstance(value, str) else None

    status = fields["status_code"].value if "status_code" in fields else 200
    auth = fields["http_auth_basic"].value if "http_auth_basic" in fields else None
    assert isinstance(status, int) and (auth is None or isinstance(auth, BasicAuth))
    return EntryConfig(
        name=entry.key,
        kind=kind,
        target=str(fields["target"].value),
        payload=text("payload"),
        custom_headers=_headers(fields) if "custom_headers" in fields else (),
        status_code=status,
        value_field=text("value_field"),
        error_field=text("error_field"),
        no_error_value=text("no_error_value"),
        http_auth_basic=auth,
        locations=MappingProxyType(locations),
    )


def _parse_fields(node: Node, path: str, problems: Problems) -> dict[str, Field] | None:
    """Parse one entry (or ``defaults``); keys whose value is null or empty count as not written, as the
    zero value does upstream, so they inherit from ``defaults``."""
    items = mapping_items(node, path, problems)
    if items is None:
        return None
    fields: dict[str, Field] = {}
    for key, item in check_keys(items, path, ENTRY_KEYS, ENTRY_DEFERRED, problems).items():
        key_path = join(path, key)
        value = _parse_value(key, item.value, key_path, problems)
        if value is not None and value != "":
            fields[key] = Field(value, problems.loc(item.value))
    return fields


def _parse_value(key: str, node: Node, path: str, problems: Problems) -> object:
    if key == "status_code":
        code = as_int(node, path, problems)
        if code is not None and not 100 <= code <= 599:
            problems.error(node, path, f"status code {code} is not between 100 and 599")
            return None
        return code
    if key == "custom_headers":
        return _parse_headers(node, path, problems)
    text = as_str(node, path, problems)
    if text is None or text == "":
        return None
    try:
        if key == "target":
            return check_target(text)
        if key == "http_auth_basic":
            return parse_basic_auth(text)
    except ConfigError as exc:
        problems.wrap(node, path, exc)
        return None
    if key == "no_error_value" and isinstance(node, ScalarNode) and text in _JSON_BOOL_SPELLINGS:
        # The backend compares with the JSON text of the error field, where booleans are true/false.
        return text.lower()
    return text


def _parse_headers(node: Node, path: str, problems: Problems) -> tuple[tuple[str, str], ...] | None:
    if is_null(node):
        return None
    if isinstance(node, ScalarNode):
        # A lone string is one header: upstream's decoder lifts a scalar into a one-element list.
        elements: list[tuple[str, Node]] = [(path, node)]
    else:
        nodes = sequence_items(node, path, problems)
        if nodes is None:
            return None
        elements = [(f"{path}[{index}]", element) for index, element in enumerate(nodes)]
    headers: list[tuple[str, str]] = []
    for element_path, element in elements:
        text = as_str(element, element_path, problems)
        if text is None:
            continue
        try:
            headers.append(parse_header(text))
        except ConfigError as exc:
            problems.wrap(element, element_path, exc)
    return tuple(headers)
