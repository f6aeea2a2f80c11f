"""The keys of the backends work: REST-shaped requests, status lists, value templates, caches, circuit
breakers, policy error handling, worker pools and tcp_table listeners. Each key loads into the model, each
mistake is reported with its exact file:line:column and key path, and ``defaults`` applies to every entry."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from pfxhttp.config import (
    DEFAULT_POLICY_ERROR_ACTION,
    CacheConfig,
    CircuitBreakerConfig,
    Config,
    HttpMethod,
    ListenKind,
    ListenType,
    OnError,
    ResponseCacheConfig,
    WorkerPoolConfig,
    blocks,
    entries,
    listen,
    parse_config,
    serversection,
)
from pfxhttp.errors import ConfigErrors, Location

LISTEN = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 1}\n"


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "pfxhttp.yml")


def at(place: str, path: str, message: str) -> str:
    return f"pfxhttp.yml:{place}: at key {path}: {message}"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(textwrap.dedent(text), "pfxhttp.yml")
    return [error.render() for error in info.value.errors]


def entry_error(section: str, keys: str) -> str:
    """The one error of ``m: {target: http://h/, KEYS}``, written on line 5 (KEYS start in column 26)."""
    (error,) = errors(LISTEN + f"{section}:\n  m: {{target: http://h/, {keys}}}\n")
    return error


FULL = """\
server:
  listen:
    - kind: tcp_table
      name: aliases
      type: tcp
      address: 127.0.0.1
      port: 23452
      worker_pool: {max_workers: 4, max_queue: 0}
  response_cache:
    enabled: true
    ttl: 10m
  worker_pool:
    max_workers: 64
    max_queue: 512
socket_maps:
  aliases:
    method: get
    target: "https://api.example.com/v1/aliases/{{ key }}"
    query:
      domain: "{{ key.split('@')[-1] }}"
      limit: 10
    status_code: [200, 203]
    not_found_status: 410
    value_template: "{{ response.to | join(',') }}"
    http_request_compression: true
    http_response_compression: yes
    cache: {ttl: 5m, negative_ttl: 30s, stale_if_error: 1h, max_entries: 500}
    circuit_breaker: {failures: 3, cooldown: 1m30s}
policy_services:
  pol:
    target: http://127.0.0.1:8080/policy
    method: PUT
    error_action: "  450 4.7.1 Try again later  "
    on_error: Close
    not_found_status: []
    cache:
      ttl: 30s
      key_attributes: [sasl_username, client_address]
"""


def test_every_backends_key_is_loaded() -> None:
    config = parse(FULL)
    assert config.warnings == ()
    (listener,) = config.server.listen
    assert (listener.kind, listener.name, listener.type, listener.port) == (
        ListenKind.TCP_TABLE,
        "aliases",
        ListenType.TCP,
        23452,
    )
    assert listener.worker_pool == WorkerPoolConfig(max_workers=4, max_queue=0)
    assert config.server.response_cache == ResponseCacheConfig(enabled=True, ttl=600.0)
    assert config.server.worker_pool == WorkerPoolConfig(max_workers=64, max_queue=512)
    aliases = config.socket_maps["aliases"]
    assert aliases.method is HttpMethod.GET
    assert aliases.target == "https://api.example.com/v1/aliases/{{ key }}"  # kept as written
    assert aliases.query == (("domain", "{{ key.split('@')[-1] }}"), ("limit", "10"))
    assert (aliases.status_code, aliases.not_found_status) == ((200, 203), (410,))
    assert aliases.value_template == "{{ response.to | join(',') }}"
    assert aliases.value_field is None
    assert aliases.http_request_compression and aliases.http_response_compression
    assert aliases.cache == CacheConfig(ttl=300.0, negative_ttl=30.0, stale_if_error=3600.0, max_entries=500)
    assert aliases.circuit_breaker == CircuitBreakerConfig(failures=3, cooldown=90.0)
    assert aliases.locations["query"] == Location("pfxhttp.yml", 20, 7)
    assert aliases.locations["cache"] == Location("pfxhttp.yml", 27, 12)
    pol = config.policy_services["pol"]
    assert pol.method is HttpMethod.PUT
    assert pol.error_action == "450 4.7.1 Try again later"  # surrounding blanks are not part of it
    assert pol.on_error is OnError.CLOSE
    assert pol.not_found_status == ()  # no status means "not found": a 404 is an error then
    assert pol.cache == CacheConfig(ttl=30.0, key_attributes=("sasl_username", "client_address"))
    assert pol.cache.max_entries == 10_000


def test_model_defaults_when_the_new_keys_are_absent() -> None:
    config = parse_config(
        LISTEN + "socket_maps:\n  m: {target: http://h/}\npolicy_services:\n  p: {target: http://h/}\n"
    )
    for entry in (config.socket_maps["m"], config.policy_services["p"]):
        assert (entry.method, entry.query, entry.status_code, entry.not_found_status) == (
            HttpMethod.POST,
            (),
            (200,),
            (404,),
        )
        assert (entry.value_template, entry.cache, entry.circuit_breaker) == (None, None, None)
        assert not entry.http_request_compression and not entry.http_response_compression
        assert (entry.error_action, entry.on_error) == (DEFAULT_POLICY_ERROR_ACTION, OnError.REPLY)
    assert config.server.response_cache == ResponseCacheConfig(enabled=False, ttl=3600.0)
    assert config.server.worker_pool is None and config.server.listen[0].worker_pool is None


def test_response_cache_ttl_defaults_to_one_hour_and_disabled_keeps_its_ttl() -> None:
    on = parse_config(LISTEN + "  response_cache: {enabled: true}\n")
    assert on.server.response_cache == ResponseCacheConfig(enabled=True, ttl=3600.0)
    off = parse_config(LISTEN + "  response_cache: {enabled: false, ttl: 5m}\n")
    assert off.server.response_cache == ResponseCacheConfig(enabled=False, ttl=300.0)


@pytest.mark.parametrize(("written", "method"), [("get", "GET"), ("Post", "POST"), ('"PUT"', "PUT")])
def test_method_is_case_insensitive(written: str, method: str) -> None:
    config = parse_config(LISTEN + f"socket_maps:\n  m: {{target: http://h/, method: {written}}}\n")
    assert config.socket_maps["m"].method is HttpMethod(method)


@pytest.mark.parametrize(
    "target",
    [
        "http://h/{{ key }}",
        "http://h/v1/{{ .Key }}/x",
        "https://h:8443/a/{{key}}",
        "http://h/?q={{ attrs.sender }}",
        "http://h/a/{{ key | lower }}/b/{{ name }}",
        "http://h/{{ key.split('@') [1] }}",  # blanks inside an expression are fine
        "http://h#{{ key }}",
    ],
)
def test_target_templates_after_the_host(target: str) -> None:
    config = parse_config(LISTEN + f"socket_maps:\n  m:\n    target: {target!r}\n")
    assert config.socket_maps["m"].target == target


@pytest.mark.parametrize(
    "action",
    [
        "DEFER",
        "defer try later",
        "DEFER_IF_PERMIT Service temporarily unavailable",
        "Defer_If_Reject x",
        "450 4.7.1 later",
        "421 closing",
        "DUNNO",
    ],
)
def test_error_actions_that_defer_or_stay_neutral(action: str) -> None:
    config = parse_config(
        LISTEN + f"policy_services:\n  p: {{target: http://h/, error_action: {action!r}}}\n"
    )
    assert config.policy_services["p"].error_action == action


def test_status_code_scalar_list_and_empty_not_found() -> None:
    config = parse_config(
        LISTEN
        + "socket_maps:\n"
        + "  a: {target: http://h/, status_code: 201}\n"
        + '  b: {target: http://h/, status_code: ["200", 204], not_found_status: [404, 410]}\n'
        + "  c: {target: http://h/, status_code: [200, 404], not_found_status: []}\n"
    )
    maps = config.socket_maps
    assert (maps["a"].status_code, maps["a"].not_found_status) == ((201,), (404,))
    assert (maps["b"].status_code, maps["b"].not_found_status) == ((200, 204), (404, 410))
    assert (maps["c"].status_code, maps["c"].not_found_status) == ((200, 404), ())


def test_lone_key_attribute_is_a_list_of_one() -> None:
    config = parse_config(
        LISTEN + "policy_services:\n  p: {target: http://h/, cache: {ttl: 1m, key_attributes: sender}}\n"
    )
    cache = config.policy_services["p"].cache
    assert cache is not None and cache.key_attributes == ("sender",)


DEFAULTS = """\
server:
  listen: [{type: tcp, address: 127.0.0.1, port: 0}]
socket_maps:
  defaults:
    target: https://api.example.com/map
    method: put
    query: {a: "1", b: "{{ key }}"}
    not_found_status: [404, 410]
    value_template: "{{ response.v }}"
    http_request_compression: true
    http_response_compression: true
    cache: {ttl: 5m, max_entries: 100}
    circuit_breaker: {failures: 5, cooldown: 10s}
  inherits: {}
  overrides:
    method: GET
    query: {b: "{{ name }}", c: "3"}
    status_code: [200, 410]
    not_found_status: 404
    value_field: result
    http_request_compression: false
    cache: {ttl: 1m}
    circuit_breaker: false
  no_cache:
    cache: false
policy_services:
  defaults:
    error_action: "DEFER try later"
    on_error: close
    cache: {ttl: 1m, key_attributes: [sender]}
  p: {target: http://h/}
  q: {target: http://h/, error_action: DUNNO, on_error: reply, value_template: "{{ response.a }}"}
"""


def test_defaults_apply_the_new_keys_to_every_entry_and_the_entry_wins() -> None:
    config = parse(DEFAULTS)
    inherits = config.socket_maps["inherits"]
    assert inherits.method is HttpMethod.PUT
    assert inherits.query == (("a", "1"), ("b", "{{ key }}"))
    assert inherits.not_found_status == (404, 410)
    assert (inherits.value_template, inherits.value_field) == ("{{ response.v }}", None)
    assert inherits.http_request_compression and inherits.http_response_compression
    assert inherits.cache == CacheConfig(ttl=300.0, max_entries=100)
    assert inherits.circuit_breaker == CircuitBreakerConfig(failures=5, cooldown=10.0)
    assert inherits.locations["cache"] == Location("pfxhttp.yml", 12, 12)  # where defaults wrote it
    overrides = config.socket_maps["overrides"]
    assert overrides.method is HttpMethod.GET
    # query merges by parameter name: the defaults' parameters, the entry's value winning for "b".
    assert overrides.query == (("a", "1"), ("b", "{{ name }}"), ("c", "3"))
    assert (overrides.status_code, overrides.not_found_status) == ((200, 410), (404,))
    # value_field and value_template are one choice: the entry's value_field drops the defaults' template.
    assert (overrides.value_field, overrides.value_template) == ("result", None)
    assert not overrides.http_request_compression and overrides.http_response_compression
    assert overrides.cache == CacheConfig(ttl=60.0)  # replaced whole: max_entries is back to its default
    assert overrides.circuit_breaker is None  # `false` turns off the defaults' breaker
    assert config.socket_maps["no_cache"].cache is None
    assert config.socket_maps["no_cache"].circuit_breaker is not None
    p, q = config.policy_services["p"], config.policy_services["q"]
    assert (p.error_action, p.on_error) == ("DEFER try later", OnError.CLOSE)
    assert p.cache == CacheConfig(ttl=60.0, key_attributes=("sender",))
    assert (q.error_action, q.on_error, q.value_template) == ("DUNNO", OnError.REPLY, "{{ response.a }}")


def test_a_get_entry_may_inherit_a_payload_it_does_not_send() -> None:
    config = parse_config(
        LISTEN + "socket_maps:\n  defaults: {payload: '{}'}\n  m: {target: http://h/, method: GET}\n"
    )
    assert config.socket_maps["m"].method is HttpMethod.GET


def test_listeners_of_every_kind_with_worker_pools() -> None:
    config = parse(
        """\
        server:
          listen:
            - {kind: tcp_table, name: m, type: unix, address: /tmp/t.sock}
            - {kind: tcp_table, name: m, type: tcp6, address: "[::1]", port: 0}
            - {kind: policy_service, name: p, type: tcp, address: 127.0.0.1, port: 0,
               worker_pool: {max_workers: 1, max_queue: 1000000}}
        socket_maps:
          m: {target: http://h/}
        policy_services:
          p: {target: http://h/}
        """
    )
    kinds = [(listener.kind, listener.name, listener.type) for listener in config.server.listen]
    assert kinds == [
        (ListenKind.TCP_TABLE, "m", ListenType.UNIX),
        (ListenKind.TCP_TABLE, "m", ListenType.TCP6),
        (ListenKind.POLICY_SERVICE, "p", ListenType.TCP),
    ]
    assert config.server.listen[2].worker_pool == WorkerPoolConfig(max_workers=1, max_queue=1_000_000)


def test_manual_documents_every_key() -> None:
    manual = (Path(__file__).resolve().parent.parent / "man" / "pfxhttp.yml.5").read_text()
    words = set(re.findall(r"[a-z_]+", manual.replace("\\fB", " ").replace("\\fP", " ")))
    keys = (
        *serversection.SERVER_KEYS,
        *serversection.SERVER_DEFERRED,
        *listen.LISTEN_KEYS,
        *entries.ENTRY_KEYS,
        *entries.ENTRY_DEFERRED,
        *blocks.WORKER_POOL_KEYS,
        *blocks.RESPONSE_CACHE_KEYS,
        *blocks.CACHE_KEYS,
        *blocks.CIRCUIT_BREAKER_KEYS,
        *blocks.METRICS_KEYS,
        *(kind.value for kind in ListenKind),
    )
    assert [key for key in keys if key not in words] == []


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
