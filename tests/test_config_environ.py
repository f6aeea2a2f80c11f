"""PFXHTTP_* environment variables override single keys of the file; a variable that names no key is an error
for `pfxhttp check` and a warning for the daemon. Errors: test_config_environ_errors.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pfxhttp.config import Config, LogLevel, load_config, parse_config
from pfxhttp.config.overrides import entry_word, variable_for
from pfxhttp.errors import ConfigErrors

FILE = """\
server:
  listen:
    - {type: tcp, address: 127.0.0.1, port: 23450}
    - {kind: policy_service, name: sender-login, type: unix, address: /run/p.sock, mode: "0600"}
socket_maps:
  demo_map: {target: http://127.0.0.1/map, value_field: result}
policy_services:
  sender-login: {target: http://127.0.0.1/policy}
"""


def parse(environ: dict[str, str], text: str = FILE, *, strict: bool = True) -> Config:
    """As ``pfxhttp check`` parses (``strict``: a variable that names no key is an error); the daemon's way
    with ``strict=False``."""
    return parse_config(textwrap.dedent(text), "pfxhttp.yml", environ=environ, strict_environment=strict)


def errors(environ: dict[str, str], text: str = FILE, *, strict: bool = True) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse(environ, text, strict=strict)
    return [error.render() for error in info.value.errors]


def test_a_key_the_file_lacks_is_added() -> None:
    config = parse({"PFXHTTP_SERVER__LOGGING__LEVEL": "debug", "HOME": "/root", "PFXHTTPX": "not ours"})
    assert config.server.logging.level is LogLevel.DEBUG
    assert config.overrides == ("PFXHTTP_SERVER__LOGGING__LEVEL",)
    assert parse({}).overrides == ()


def test_values_are_yaml_scalars() -> None:
    config = parse(
        {
            "PFXHTTP_SERVER__LOGGING__JSON": "true",
            "PFXHTTP_SERVER__HTTP_CLIENT__TIMEOUT": "1m30s",
            "PFXHTTP_SERVER__LISTEN__0__PORT": "23460",
            "PFXHTTP_SERVER__LISTEN__1__MODE": "0660",
            "PFXHTTP_SERVER__METRICS__BASIC_AUTH": "prom: secret # not a comment",
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP__STATUS_CODE": "203",
            "PFXHTTP_POLICY_SERVICES__SENDER_LOGIN__ERROR_ACTION": "450 4.7.1 Try again: later",
        }
    )
    assert config.server.logging.json is True
    assert config.server.http_client.timeout == 90.0
    assert (config.server.listen[0].port, config.server.listen[1].mode) == (23460, 0o660)
    auth = config.server.metrics.basic_auth
    assert auth is not None and (auth.username, auth.password) == ("prom", " secret # not a comment")
    assert config.socket_maps["demo_map"].status_code == (203,)
    assert config.policy_services["sender-login"].error_action == "450 4.7.1 Try again: later"


def test_a_quoted_value_is_a_string_and_an_empty_one_is_null() -> None:
    assert parse({"PFXHTTP_SERVER__LOGGING__JSON": "yes"}).server.logging.json is True  # YAML 1.1's boolean
    assert errors({"PFXHTTP_SERVER__LOGGING__JSON": '"yes"'}) == [
        "environment variable PFXHTTP_SERVER__LOGGING__JSON: at key server.logging.json: "
        "expected true or false, got a string"
    ]
    text = FILE.replace("server:\n", "server:\n  run_as_user: postfix\n")
    assert parse({}, text).server.run_as_user == "postfix"
    assert parse({"PFXHTTP_SERVER__RUN_AS_USER": ""}, text).server.run_as_user is None
    assert parse({"PFXHTTP_SERVER__RUN_AS_USER": "'1000'"}, text).server.run_as_user == "1000"


def test_entries_are_named_with_non_alphanumerics_as_underscores_in_any_case() -> None:
    config = parse(
        {
            "PFXHTTP_POLICY_SERVICES__SENDER_LOGIN__TARGET": "https://api.example.com/policy",
            "pfxhttp_socket_maps__demo_map__method": "GET",  # not ours: the prefix is upper case
            "PFXHTTP_socket_maps__Demo_Map__Value_Field": "data.result",
        }
    )
    assert config.policy_services["sender-login"].target == "https://api.example.com/policy"
    assert config.socket_maps["demo_map"].value_field == "data.result"
    assert entry_word("sender-login.v2") == "SENDER_LOGIN_V2"
    assert variable_for("policy_services", "sender-login", "target") == (
        "PFXHTTP_POLICY_SERVICES__SENDER_LOGIN__TARGET"
    )


def test_defaults_can_be_named_even_when_the_file_has_none() -> None:
    config = parse({"PFXHTTP_SOCKET_MAPS__DEFAULTS__HTTP_RESPONSE_COMPRESSION": "true"})
    assert config.socket_maps["demo_map"].http_response_compression
    assert "defaults" not in config.socket_maps


def test_an_entry_name_may_hold_the_separator() -> None:
    text = FILE.replace("  demo_map:", "  a__b: {target: http://h/}\n  a:")
    config = parse({"PFXHTTP_SOCKET_MAPS__A__B__TARGET": "http://other/"}, text)
    assert config.socket_maps["a__b"].target == "http://other/"  # the longest name that fits wins
    assert config.socket_maps["a"].target == "http://127.0.0.1/map"


def test_a_new_block_in_an_entry_is_created() -> None:
    cache = parse({"PFXHTTP_SOCKET_MAPS__DEMO_MAP__CACHE__TTL": "5m"}).socket_maps["demo_map"].cache
    assert cache is not None and cache.ttl == 300.0


def test_listeners_by_index_also_in_the_old_single_mapping_form() -> None:
    old = "server:\n  listen: {type: tcp, address: 127.0.0.1, port: 1}\n"
    assert parse({"PFXHTTP_SERVER__LISTEN__0__PORT": "2"}, old).server.listen[0].port == 2


def test_shared_anchors_change_only_where_the_variable_points() -> None:
    text = """\
    server:
      listen: [{type: tcp, address: 127.0.0.1, port: 1}]
    socket_maps:
      one: &common {target: http://h/, cache: {ttl: 1m}}
      two: {<<: *common}
      three: *common
    """
    config = parse({"PFXHTTP_SOCKET_MAPS__TWO__CACHE__MAX_ENTRIES": "7"}, text)
    caches = {name: entry.cache for name, entry in config.socket_maps.items()}
    assert {name: cache.max_entries for name, cache in caches.items() if cache} == {
        "one": 10_000,
        "two": 7,
        "three": 10_000,
    }
    assert caches["two"] is not None and caches["two"].ttl == 60.0  # the merged keys stay


def test_without_an_environment_nothing_is_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFXHTTP_SERVER__LOGGING__LEVEL", "nonsense")
    assert parse_config(FILE).server.logging.level is LogLevel.INFO  # pure unless given one


def test_load_config_applies_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "pfxhttp.yml"
    path.write_text(FILE)
    config = load_config(path, environ={"PFXHTTP_SERVER__LOGGING__LEVEL": "error"})
    assert config.server.logging.level is LogLevel.ERROR
