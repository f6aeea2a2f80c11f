"""Mistakes in the backend keys of entries (method, target templates, status codes, cache, error_action, on_error,
policy-only keys), each reported at its file:line:col and dotted path, also through defaults."""

from __future__ import annotations

import pytest

from tests.test_config_backends import LISTEN, at, entry_error, errors

# ---- errors ---------------------------------------------------------------------------------------------
GET_BODY = "the method is GET, which sends no request body: remove 'payload' or use POST or PUT"


BOTH = "is in both status_code and not_found_status"


@pytest.mark.parametrize(
    ("keys", "place", "key", "message"),
    [
        ("method: PATCH", "5:34", "method", "unknown HTTP method 'PATCH': use GET, POST or PUT"),
        (
            "method: pots",
            "5:34",
            "method",
            "unknown HTTP method 'pots': use GET, POST or PUT (did you mean 'POST'?)",
        ),
        ("method: [GET]", "5:34", "method", "expected a string, got a list"),
        (
            "http_response_compression: maybe",
            "5:53",
            "http_response_compression",
            "expected true or false, got a string",
        ),
        ("query: [a]", "5:33", "query", "expected a mapping, got a list"),
        (
            "query: {a: }",
            "5:36",
            "query.a",
            'expected a template string, got nothing (null); write "" for an empty value',
        ),
        ("query: {'': x}", "5:34", "query", "a query parameter name must not be empty"),
        ("query: {a: {b: c}}", "5:37", "query.a", "expected a string, got a mapping"),
        (
            "value_field: a, value_template: b",
            "5:42",
            "value_template",
            "value_field and value_template exclude each other: choose one",
        ),
        ("method: get, payload: x", "5:48", "payload", GET_BODY),
        ("status_code: []", "5:39", "status_code", "the list must hold at least one status code"),
        ("status_code: [200, 200]", "5:45", "status_code[1]", "duplicate status code 200"),
        ("status_code: [200, 99]", "5:45", "status_code[1]", "status code 99 is not between 100 and 599"),
        ("status_code: [ok]", "5:40", "status_code[0]", "expected an integer, got the string 'ok'"),
        ("status_code: [~]", "5:40", "status_code[0]", "expected an integer, got nothing (null)"),
        (
            "status_code: {a: 1}",
            "5:39",
            "status_code",
            "expected a status code or a list of status codes, got a mapping",
        ),
        (
            "not_found_status: [404, 600]",
            "5:50",
            "not_found_status[1]",
            "status code 600 is not between 100 and 599",
        ),
        (
            "status_code: [200, 404]",
            "5:39",
            "status_code",
            f"status 404 {BOTH} (not_found_status defaults to 404)",
        ),
        ("not_found_status: [200, 404]", "5:44", "not_found_status", f"status 200 {BOTH}"),
        (
            "status_code: [200, 201], not_found_status: [201, 200]",
            "5:69",
            "not_found_status",
            f"status 200, 201 {BOTH}",
        ),
        ("circuit_breaker: {failures: 3}", "5:43", "circuit_breaker", "missing required key 'cooldown'"),
        (
            "circuit_breaker: {failures: 0, cooldown: 1s}",
            "5:54",
            "circuit_breaker.failures",
            "must be between 1 and 1000000",
        ),
        (
            "circuit_breaker: {failures: 1, cooldown: 0}",
            "5:67",
            "circuit_breaker.cooldown",
            "must be greater than 0",
        ),
        (
            "circuit_breaker: {failures: 1, cooldown: 1s, reset: 1}",
            "5:71",
            "circuit_breaker.reset",
            "unknown key",
        ),
        (
            "circuit_breaker: true",
            "5:43",
            "circuit_breaker",
            "expected a mapping, or false to turn it off here; got a boolean",
        ),
    ],
)
def test_socket_map_key_errors(keys: str, place: str, key: str, message: str) -> None:
    assert entry_error("socket_maps", keys) == at(place, f"socket_maps.m.{key}", message)


TEMPLATE_IN_ORIGIN = (
    ": scheme, host and port must be written literally; a template expression may only follow them, "
    "in the path or query (after the '/' or '?' that ends the host)"
)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://{{ key }}/", TEMPLATE_IN_ORIGIN),
        ("{{ scheme }}://h/", TEMPLATE_IN_ORIGIN),
        ("http://h:{{ port }}/", TEMPLATE_IN_ORIGIN),
        ("http://h{{ key }}", TEMPLATE_IN_ORIGIN),
        ("http://u:{{ pw }}@h/", TEMPLATE_IN_ORIGIN),
        ("http://h/{{ key", " has an unclosed template expression ('{{' without '}}')"),
        ("http://h/{% if key %}x{% endif %}", ": only {{ expression }} templates are allowed in a URL"),
        ("http://h/{{ key }} x", " must be an http:// or https:// URL without blanks"),
        ("ftp://h/{{ key }}", " must use http:// or https://"),
        ("http://h:99999/{{ key }}", " has an invalid port"),
    ],
)
def test_target_template_errors(target: str, message: str) -> None:
    # Quoted as written, but for userinfo (never quoted) and a target without a scheme (nothing quoted).
    subject = {"{{ scheme }}://h/": "target", "http://u:{{ pw }}@h/": "target 'http://...@h/'"}
    assert errors(LISTEN + f"socket_maps:\n  m:\n    target: {target!r}\n") == [
        at("6:13", "socket_maps.m.target", subject.get(target, f"target {target!r}") + message)
    ]


def test_checks_between_keys_with_defaults_are_reported_where_the_entry_wrote_them() -> None:
    two = (
        "socket_maps:\n  defaults: {not_found_status: [404, 410]}\n"
        "  m: {target: http://h/, status_code: [200, 410]}\n"
    )
    assert errors(LISTEN + two) == [at("6:39", "socket_maps.m.status_code", f"status 410 {BOTH}")]
    # Both from defaults: reported once, at defaults, not once per entry.
    both = (
        "socket_maps:\n  defaults: {status_code: 404}\n  a: {target: http://h/}\n  b: {target: http://g/}\n"
    )
    assert errors(LISTEN + both) == [
        at(
            "5:27",
            "socket_maps.defaults.status_code",
            f"status 404 {BOTH} (not_found_status defaults to 404)",
        )
    ]
    get = "socket_maps:\n  defaults: {method: GET}\n  m: {target: http://h/, payload: x}\n"
    assert errors(LISTEN + get) == [at("6:35", "socket_maps.m.payload", GET_BODY)]


@pytest.mark.parametrize(
    ("cache", "place", "key", "message"),
    [
        ("{negative_ttl: 1m}", "5:33", "cache", "missing required key 'ttl'"),
        ("{ttl: 0s}", "5:39", "cache.ttl", "must be greater than 0"),
        ("{ttl: -1s}", "5:39", "cache.ttl", "invalid duration '-1s': must not be negative"),
        ("{ttl: 1m, tll: 2}", "5:43", "cache.tll", "unknown key (did you mean 'ttl'?)"),
        (
            "{ttl: 1m, stale_if_error: soon}",
            "5:59",
            "cache.stale_if_error",
            "invalid duration 'soon': expected ",
        ),
        ("{ttl: 1m, max_entries: 0}", "5:56", "cache.max_entries", "must be between 1 and 10000000"),
        ("{ttl: 1m, max_entries: 10000001}", "5:56", "cache.max_entries", "must be between 1 and 10000000"),
        ("{ttl: 1m, key_attributes: [a, a]}", "5:63", "cache.key_attributes[1]", "duplicate attribute 'a'"),
        (
            "{ttl: 1m, key_attributes: ['a=b']}",
            "5:60",
            "cache.key_attributes[0]",
            "attribute name 'a=b' must not contain '=', blanks or control characters",
        ),
        (
            "{ttl: 1m, key_attributes: [~]}",
            "5:60",
            "cache.key_attributes[0]",
            "expected a string, got nothing (null)",
        ),
        (
            "{ttl: 1m, key_attributes: {a: b}}",
            "5:59",
            "cache.key_attributes",
            "expected a list, got a mapping",
        ),
        ("true", "5:33", "cache", "expected a mapping, or false to turn it off here; got a boolean"),
        ("5m", "5:33", "cache", "expected a mapping, or false to turn it off here; got a string"),
        ("[ttl]", "5:33", "cache", "expected a mapping, got a list"),
    ],
)
def test_cache_errors(cache: str, place: str, key: str, message: str) -> None:
    error = entry_error("policy_services", f"cache: {cache}")
    assert error.startswith(at(place, f"policy_services.m.{key}", message))


def test_key_attributes_are_for_policy_services_only() -> None:
    message = "only policy_services have key_attributes (a socket map's cache key is the lookup key)"
    error = entry_error("socket_maps", "cache: {ttl: 1m, key_attributes: [a]}")
    assert error == at("5:43", "socket_maps.m.cache.key_attributes", message)
    defaults = "socket_maps:\n  defaults: {cache: {ttl: 1m, key_attributes: a}}\n  m: {target: http://h/}\n"
    assert errors(LISTEN + defaults) == [at("5:31", "socket_maps.defaults.cache.key_attributes", message)]


SAFE = "a backend fault must answer DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, a 4NN code or DUNNO"


NOT_SAFE = "is not an action that defers or stays neutral"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("REJECT not now", f"error_action 'REJECT' would bounce mail; {SAFE}"),
        ("554 5.7.1 no", f"error_action '554' would bounce mail; {SAFE}"),
        ("ok", f"error_action 'ok' would accept mail the policy never checked; {SAFE}"),
        ("DISCARD", f"error_action 'DISCARD' would lose mail; {SAFE}"),
        ("HOLD", f"error_action 'HOLD' would hold mail in the queue until an operator releases it; {SAFE}"),
        ("WARN x", f"error_action 'WARN' {NOT_SAFE}; {SAFE}"),
        ("4501 x", f"error_action '4501' {NOT_SAFE}; {SAFE}"),
        ("DEFFER", f"error_action 'DEFFER' {NOT_SAFE}; {SAFE} (did you mean 'DEFER'?)"),
        ("   ", "error_action must not be empty (Postfix reads an empty action as OK)"),
        ("DEFER a\\nb", "error_action must be one line without CR, LF or NUL"),
        ("DEFER " + "x" * 2048, "error_action is longer than 2048 bytes"),
    ],
)
def test_error_action_errors(action: str, message: str) -> None:
    error = entry_error("policy_services", f'error_action: "{action}"')
    assert error == at("5:40", "policy_services.m.error_action", message)


def test_on_error_errors() -> None:
    assert entry_error("policy_services", "on_error: clsoe") == at(
        "5:36",
        "policy_services.m.on_error",
        "unknown on_error value 'clsoe': use reply or close (did you mean 'close'?)",
    )


@pytest.mark.parametrize("key", ["error_action", "on_error"])
def test_policy_only_keys_on_a_socket_map(key: str) -> None:
    message = (
        f"'{key}' is only for policy_services (a socket map answers TEMP or TIMEOUT when its backend fails)"
    )
    assert entry_error("socket_maps", f"{key}: DEFER") == at("5:26", f"socket_maps.m.{key}", message)
    defaults = f"socket_maps:\n  defaults: {{{key}: x}}\n  m: {{target: http://h/}}\n"
    assert errors(LISTEN + defaults) == [at("5:14", f"socket_maps.defaults.{key}", message)]
