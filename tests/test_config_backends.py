"""The keys of the backends work: REST-shaped requests, status lists, value templates, caches, circuit
breakers, policy error handling, worker pools and tcp_table listeners. Each key loads into the model, each
mistake is reported with its exact file:line:column and key path, and ``defaults`` applies to every entry."""

from __future__ import annotations

import textwrap

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
    parse_config,
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
