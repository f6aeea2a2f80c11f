"""The value of one key of a ``socket_maps`` / ``policy_services`` entry, read from its YAML node.

Each reader reports its problems at the node (``file:line:col`` and the dotted key path) and returns None
for a value that is absent, null or wrong, so the key then counts as not written. Templates (payload, target,
query, value_template) are kept as source text here; the backend layer compiles them.
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node, ScalarNode

from pfxhttp.config.auth import parse_jwt_auth, parse_oidc_auth
from pfxhttp.config.blocks import parse_cache, parse_circuit_breaker
from pfxhttp.config.model import BasicAuth, EntryKind, HttpMethod, OnError
from pfxhttp.config.secrets import read_secret
from pfxhttp.config.values import check_error_action, check_target, parse_basic_auth, parse_header
from pfxhttp.config.yamlnodes import (
    Problems,
    as_bool,
    as_choice,
    as_int,
    as_str,
    describe,
    is_null,
    join,
    mapping_items,
    sequence_items,
)
from pfxhttp.errors import ConfigError

_JSON_BOOL_SPELLINGS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})
_BOOL_KEYS = frozenset({"http_request_compression", "http_response_compression"})


def parse_value(key: str, node: Node, path: str, kind: EntryKind, problems: Problems) -> object:
    """The model value of entry key ``key`` (already known to be a supported key)."""
    if key == "status_code":
        return _status_codes(node, path, problems, allow_empty=False)
    if key == "not_found_status":
        return _status_codes(node, path, problems, allow_empty=True)
    if key == "custom_headers":
        return _headers(node, path, problems)
    if key == "query":
        return _query(node, path, problems)
    if key == "cache":
        return parse_cache(node, path, kind is EntryKind.POLICY_SERVICE, problems)
    if key == "circuit_breaker":
        return parse_circuit_breaker(node, path, problems)
    if key == "jwt_auth":
        return parse_jwt_auth(node, path, problems)
    if key in ("backend_oidc_auth", "oidc_auth"):
        return parse_oidc_auth(node, path, problems)
    if key == "http_auth_basic_file":
        return _basic_auth_file(node, path, problems)
    if key in _BOOL_KEYS:
        return as_bool(node, path, problems)
    text = as_str(node, path, problems)
    if text is None or text == "":
        return None
    if key == "method":
        return as_choice(HttpMethod, text.upper(), node, path, problems, "HTTP method")
    if key == "on_error":
        return as_choice(OnError, text.lower(), node, path, problems, "on_error value")
    try:
        if key == "target":
            return check_target(text)
        if key == "http_auth_basic":
            return parse_basic_auth(text)
        if key == "error_action":
            return check_error_action(text)
    except ConfigError as exc:
        problems.wrap(node, path, exc)
        return None
    if key == "no_error_value" and isinstance(node, ScalarNode) and text in _JSON_BOOL_SPELLINGS:
        # The backend compares with the JSON text of the error field, where booleans are true/false.
        return text.lower()
    return text


def _basic_auth_file(node: Node, path: str, problems: Problems) -> BasicAuth | None:
    """``http_auth_basic_file``: the ``user:password`` of http_auth_basic, read from a file."""
    text = read_secret(node, path, problems)
    if text is None:
        return None
    try:
        return parse_basic_auth(text, "the content of http_auth_basic_file")
    except ConfigError as exc:
        problems.wrap(node, path, exc)
        return None


def _status_codes(node: Node, path: str, problems: Problems, *, allow_empty: bool) -> tuple[int, ...] | None:
    """One HTTP status code or a list of them, each 100..599, no duplicates."""
    if is_null(node):
        return None
    if isinstance(node, MappingNode):
        problems.error(node, path, "expected a status code or a list of status codes, got a mapping")
        return None
    if isinstance(node, ScalarNode):
        elements: list[tuple[str, Node]] = [(path, node)]
    else:
        nodes = sequence_items(node, path, problems) or []
        if not nodes and not allow_empty:
            problems.error(node, path, "the list must hold at least one status code")
            return None
        elements = [(f"{path}[{index}]", element) for index, element in enumerate(nodes)]
    codes: list[int] = []
    ok = True
    for element_path, element in elements:
        code = as_int(element, element_path, problems)
        if code is None:
            if is_null(element):
                problems.error(element, element_path, f"expected an integer, got {describe(element)}")
            ok = False
        elif not 100 <= code <= 599:
            problems.error(element, element_path, f"status code {code} is not between 100 and 599")
            ok = False
        elif code in codes:
            problems.error(element, element_path, f"duplicate status code {code}")
            ok = False
        else:
            codes.append(code)
    return tuple(codes) if ok else None


def _query(node: Node, path: str, problems: Problems) -> tuple[tuple[str, str], ...] | None:
    """``query: {name: template, ...}``: URL query parameters, in the order written."""
    items = mapping_items(node, path, problems)
    if items is None:
        return None
    params: list[tuple[str, str]] = []
    for item in items:
        param_path = join(path, item.key)
        if not item.key:
            problems.error(item.key_node, path, "a query parameter name must not be empty")
            continue
        if is_null(item.value):
            problems.error(
                item.value,
                param_path,
                'expected a template string, got nothing (null); write "" for an empty value',
            )
            continue
        text = as_str(item.value, param_path, problems)
        if text is not None:
            params.append((item.key, text))
    return tuple(params)


def _headers(node: Node, path: str, problems: Problems) -> tuple[tuple[str, str], ...] | None:
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
