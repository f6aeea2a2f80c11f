"""Invalid pfxhttp configurations: every error kind with its exact file:line:column and key path.
Listener and server-block mistakes: test_config_listen_errors.py."""

from __future__ import annotations

import textwrap

import pytest

from pfxhttp.config import parse_config
from pfxhttp.errors import ConfigError, ConfigErrors, Location

LISTEN = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 1}\n"


def at(place: str, path: str, message: str) -> str:
    """The rendered form of one error: ``pfxhttp.yml:LINE:COL: at key PATH: MESSAGE``."""
    return f"pfxhttp.yml:{place}: at key {path}: {message}"


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(textwrap.dedent(text), "pfxhttp.yml")
    assert isinstance(info.value, ConfigError)  # callers may catch the base class
    return [error.render() for error in info.value.errors]


def test_unknown_key_suggests_the_closest_known_key() -> None:
    assert errors(
        """\
        server:
          listen:
            - type: tcp
              address: 127.0.0.1
              port: 0
          http_client:
            timout: 10s
        """
    ) == ["pfxhttp.yml:7:5: at key server.http_client.timout: unknown key (did you mean 'timeout'?)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Server: {}\n", at("1:1", "Server", "unknown key (did you mean 'server'?)")),
        (
            LISTEN + "socket_map:\n  m: {target: http://h/}\n",
            at("4:1", "socket_map", "unknown key (did you mean 'socket_maps'?)"),
        ),
        (
            LISTEN + "  logging: {levle: info}\n",
            at("4:13", "server.logging.levle", "unknown key (did you mean 'level'?)"),
        ),
        (
            LISTEN + "socket_maps:\n  m:\n    target: http://h/\n    value_feild: x\n",
            at("7:5", "socket_maps.m.value_feild", "unknown key (did you mean 'value_field'?)"),
        ),
        (
            LISTEN + "socket_maps:\n  m:\n    target: http://h/\n    jwt_aut: {}\n",
            at("7:5", "socket_maps.m.jwt_aut", "unknown key (did you mean 'jwt_auth'?)"),
        ),
        (
            "server:\n  listen:\n    - {type: tcp, adress: 127.0.0.1, port: 1}\n",
            at("3:19", "server.listen[0].adress", "unknown key (did you mean 'address'?)"),
        ),
        (LISTEN + "  tls: {zzz: 1}\n", at("4:9", "server.tls.zzz", "unknown key")),
    ],
)
def test_unknown_keys(text: str, expected: str) -> None:
    assert expected in errors(text)


def test_yaml_syntax_error_has_a_location() -> None:
    (message,) = errors("server:\n  listen: [\n  - a\n")
    assert message.startswith("pfxhttp.yml:3:3: YAML syntax error:")
    (message,) = errors("server:\n\tlisten: []\n")
    assert message.startswith("pfxhttp.yml:2:1: YAML syntax error:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "pfxhttp.yml:1:1: the configuration is empty"),
        ("# only a comment\n---\n", "pfxhttp.yml:1:1: the configuration is empty"),
        (
            "- server\n",
            "pfxhttp.yml:1:1: the top level must be a mapping with the sections server, socket_maps, ...",
        ),
        (
            "just text\n",
            "pfxhttp.yml:1:1: the top level must be a mapping with the sections server, socket_maps, ...",
        ),
        ("socket_maps: {}\n", "pfxhttp.yml:1:1: missing required section 'server'"),
        ("server:\n  logging: {}\n", at("1:1", "server", "missing required key 'listen'")),
        ("server:\n  listen: []\n", at("2:11", "server.listen", "at least one listener is required")),
        ("server: [listen]\n", at("1:9", "server", "expected a mapping, got a list")),
    ],
)
def test_document_shape(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_duplicate_keys_are_errors() -> None:
    assert errors(
        """\
        server:
          listen:
            - {type: tcp, address: 127.0.0.1, port: 1, port: 2}
          logging: {}
          logging: {json: true}
        socket_maps:
          m: {target: http://h/}
          m: {target: http://g/}
        """
    ) == [
        at("3:48", "server.listen[0].port", "duplicate key (first defined on line 3)"),
        at("5:3", "server.logging", "duplicate key (first defined on line 4)"),
        at("8:3", "socket_maps.m", "duplicate key (first defined on line 7)"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: abc}\n",
            at("3:45", "server.listen[0].port", "expected an integer, got the string 'abc'"),
        ),
        (
            "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: true}\n",
            at("3:45", "server.listen[0].port", "expected an integer, got a boolean"),
        ),
        (
            "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 70000}\n",
            at("3:45", "server.listen[0].port", "port 70000 is not in 0..65535"),
        ),
        ("server:\n  listen: 5\n", at("2:11", "server.listen", "expected a list, got an integer")),
        ("server:\n  listen: [5]\n", at("2:12", "server.listen[0]", "expected a mapping, got an integer")),
        (LISTEN + "  logging: [json]\n", at("4:12", "server.logging", "expected a mapping, got a list")),
        (
            LISTEN + "  logging: {json: 1}\n",
            at("4:19", "server.logging.json", "expected true or false, got an integer"),
        ),
        (
            LISTEN + "  logging: {level: loud}\n",
            at("4:20", "server.logging.level", "unknown log level 'loud'"),
        ),
        (
            LISTEN + "  logging: {level: debgu}\n",
            at("4:20", "server.logging.level", "unknown log level 'debgu' (did you mean 'debug'?)"),
        ),
        (
            LISTEN + "  http_client: {max_idle_connections: -1}\n",
            at("4:39", "server.http_client.max_idle_connections", "must be between 0 (no limit) and 16384"),
        ),
        (
            LISTEN + "  http_client: {timeout: 2h}\n",
            at("4:26", "server.http_client.timeout", "must not exceed 1h"),
        ),
        (
            LISTEN + "  http_client: {timeout: {s: 1}}\n",
            at("4:26", "server.http_client.timeout", "expected a value such as 10s, got a mapping"),
        ),
        (
            LISTEN + "  socketmap_max_reply_size: 2000000000\n",
            at("4:29", "server.socketmap_max_reply_size", "must not exceed 1000000000"),
        ),
        (
            LISTEN + "socket_maps:\n  m: {target: http://h/, status_code: true}\n",
            at("5:39", "socket_maps.m.status_code", "expected an integer, got a boolean"),
        ),
        (
            LISTEN + "socket_maps:\n  m: {target: http://h/, status_code: 600}\n",
            at("5:39", "socket_maps.m.status_code", "status code 600 is not between 100 and 599"),
        ),
        (
            LISTEN + "socket_maps:\n  m: {target: {url: x}}\n",
            at("5:15", "socket_maps.m.target", "expected a string, got a mapping"),
        ),
        (
            LISTEN + "socket_maps:\n  m: [target]\n",
            at("5:6", "socket_maps.m", "expected a mapping, got a list"),
        ),
        (LISTEN + "socket_maps: [m]\n", at("4:14", "socket_maps", "expected a mapping, got a list")),
        (
            LISTEN + "socket_maps:\n  m: {target: http://h/, custom_headers: {X-A: b}}\n",
            at("5:42", "socket_maps.m.custom_headers", "expected a list, got a mapping"),
        ),
    ],
)
def test_wrong_types_and_ranges(text: str, expected: str) -> None:
    assert errors(text) == [expected]


def test_invalid_duration_shows_the_syntax() -> None:
    (message,) = errors(LISTEN + "  http_client:\n    idle_connection_timeout: 10 seconds\n")
    assert message.startswith(
        at("5:30", "server.http_client.idle_connection_timeout", "invalid duration '10 seconds'")
    )
    assert "500ms, 10s, 1m30s" in message and "plain number meaning seconds" in message
    (message,) = errors(LISTEN + "  http_client:\n    timeout: -1s\n")
    assert message == at("5:14", "server.http_client.timeout", "invalid duration '-1s': must not be negative")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{status_code: 200}",
            at("5:3", "socket_maps.m", "missing required key 'target' (here or in the 'defaults' entry)"),
        ),
        (
            "{target: ftp://h/}",
            at("5:15", "socket_maps.m.target", "target 'ftp://h/' must use http:// or https://"),
        ),
        ("{target: 'http:///path'}", at("5:15", "socket_maps.m.target", "target 'http:///path' has no host")),
        (
            "{target: 'http://h:99999/'}",
            at("5:15", "socket_maps.m.target", "target 'http://h:99999/' has an invalid port"),
        ),
        (
            "{target: 'http://h/a b'}",
            at(
                "5:15",
                "socket_maps.m.target",
                "target 'http://h/a b' must be an http:// or https:// URL without blanks",
            ),
        ),
        (
            "{target: 'http://h/', custom_headers: ['NoColon']}",
            at(
                "5:45",
                "socket_maps.m.custom_headers[0]",
                "custom header must have the form 'Name: value' (this one has no ':')",
            ),
        ),
        (
            "{target: 'http://h/', custom_headers: ['Bad Name: x']}",
            at(
                "5:45",
                "socket_maps.m.custom_headers[0]",
                "custom header name 'Bad Name' is not a valid HTTP field name (RFC 9110 token)",
            ),
        ),
        (
            "{target: 'http://h/', custom_headers: [\"X-A: b\\r\\nX-Evil: 1\"]}",
            at(
                "5:45",
                "socket_maps.m.custom_headers[0]",
                "custom header 'X-A' has CR, LF or NUL in its value",
            ),
        ),
        (
            "{target: 'http://h/', http_auth_basic: token}",
            at("5:45", "socket_maps.m.http_auth_basic", "http_auth_basic must have the form 'user:password'"),
        ),
        (
            "{target: 'http://h/', http_auth_basic: ':pw'}",
            at("5:45", "socket_maps.m.http_auth_basic", "http_auth_basic must have the form 'user:password'"),
        ),
    ],
)
def test_entry_errors(entry: str, expected: str) -> None:
    assert errors(LISTEN + f"socket_maps:\n  m: {entry}\n") == [expected]


@pytest.mark.parametrize("name", ["'a b'", "'a:b'", "''"])
def test_entry_name_must_be_a_socketmap_name(name: str) -> None:
    (message,) = errors(LISTEN + f"socket_maps:\n  {name}: {{target: http://h/}}\n")
    assert message.startswith("pfxhttp.yml:5:3: at key socket_maps.")
    assert "entry name" in message


def test_errors_in_defaults_are_reported_at_defaults() -> None:
    assert errors(LISTEN + "policy_services:\n  defaults: {status_code: 99}\n  p: {target: http://h/}\n") == [
        at("5:27", "policy_services.defaults.status_code", "status code 99 is not between 100 and 599")
    ]


def test_a_broken_defaults_target_is_reported_once() -> None:
    assert errors(LISTEN + "socket_maps:\n  defaults: {target: ftp://h/}\n  a: {}\n  b: {}\n") == [
        at("5:22", "socket_maps.defaults.target", "target 'ftp://h/' must use http:// or https://")
    ]


def test_tls_cert_needs_key_and_key_needs_cert() -> None:
    assert errors(LISTEN + "  tls: {cert: /c.pem}\n") == [
        at("4:9", "server.tls.cert", "'cert' needs 'key' too (a client certificate and its key)")
    ]
    assert errors(LISTEN + "  tls: {key: /k.pem}\n") == [
        at("4:9", "server.tls.key", "'key' needs 'cert' too (a client certificate and its key)")
    ]


def test_recursive_merge_is_an_error_not_a_hang() -> None:
    (message,) = errors("server: &s\n  <<: *s\n  listen: [{type: unix, address: /s}]\n")
    assert message == at("1:9", "server", "recursive '<<' merge")


def test_all_problems_are_collected_in_file_order() -> None:
    result = errors(
        """\
        socket_maps:
          m:
            target: ftp://h/
        server:
          listen:
            - {type: tcp, address: 127.0.0.1, port: x}
          http_client:
            timout: 1s
        policy_services:
          p: {target: http://h/, status_cod: 200}
        """
    )
    assert [message.split(": at key ")[0] for message in result] == [
        "pfxhttp.yml:3:13",
        "pfxhttp.yml:6:45",
        "pfxhttp.yml:8:5",
        "pfxhttp.yml:10:26",
    ]


def test_config_errors_keep_location_and_path() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(LISTEN + "  logging: {levle: x}\n", "f.yml")
    (error,) = info.value.errors
    assert error.location == Location("f.yml", 4, 13)
    assert error.path == "server.logging.levle"
    assert error.suggestion == "level"
    assert info.value.location == error.location
    assert str(info.value) == "f.yml:4:13: at key server.logging.levle: unknown key (did you mean 'level'?)"


def test_deferred_keys_need_no_validation() -> None:
    # Whatever upstream-only keys hold is not checked here: it belongs to a later version.
    config = parse_config(
        LISTEN
        + "  observability: [not, a, mapping]\n  chroot: 12\n"
        + "socket_maps:\n  m: {target: http://h/, sasl_oidc_auth: yes, grpc: {address: x}}\n"
    )
    assert len(config.warnings) == 4
    assert config.warnings[0] == "server.observability (line 4): not supported by this version yet; ignored"
