"""Loading valid pfxhttp configurations: every key, defaults, immutability, defaults merging, YAML anchors and
scalar leniency. Upstream formats: test_config_upstream.py; files, durations, search path: test_config_files.py."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from pfxhttp.config import (
    BasicAuth,
    Config,
    EntryKind,
    HttpClientConfig,
    ListenKind,
    ListenType,
    LogLevel,
    parse_config,
)
from pfxhttp.errors import Location

REPO = Path(__file__).resolve().parent.parent
MINIMAL = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 0}\n"


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "pfxhttp.yml")


FULL = """\
server:
  listen:
    - kind: socket_map
      name: demo
      type: tcp
      address: "127.0.0.1"
      port: 23450
    - kind: policy_service
      name: pol
      type: unix
      address: /run/pfxhttp/policy.sock
      mode: "0660"
      user: postfix
      group: mail
    - kind: socket_map
      type: tcp6
      address: "[::1]"
      port: 23452
  logging:
    json: true
    level: debug
    use_systemd: true
  http_client:
    timeout: 1m30s
    max_connections_per_host: 7
    max_idle_connections: 8
    max_idle_connections_per_host: 9
    idle_connection_timeout: 500ms
  tls:
    enabled: true
    skip_verify: true
    root_ca: /etc/ssl/ca.pem
    cert: /etc/pfxhttp/c.pem
    key: /etc/pfxhttp/k.pem
  socketmap_max_reply_size: 5000
socket_maps:
  demo:
    target: https://api.example.com/map
    custom_headers:
      - "X-One: 1"
      - "X-Two:two words "
    payload: '{"k": "{{ .Key }}"}'
    status_code: 201
    value_field: data.result
    error_field: error
    no_error_value: not-found
    http_auth_basic: "user:pa:ss"
policy_services:
  pol:
    target: http://127.0.0.1:8080/policy
"""


def test_every_supported_key_is_loaded() -> None:
    config = parse(FULL)
    assert config.source == "pfxhttp.yml"
    assert config.warnings == ()
    first, second, third = config.server.listen
    assert (first.kind, first.name, first.type, first.address, first.port) == (
        ListenKind.SOCKET_MAP,
        "demo",
        ListenType.TCP,
        "127.0.0.1",
        23450,
    )
    assert (first.mode, first.user, first.group) == (None, None, None)
    assert first.location == Location("pfxhttp.yml", 3, 7)
    assert first.describe() == "tcp:127.0.0.1:23450"
    assert (second.kind, second.name, second.type, second.address, second.port) == (
        ListenKind.POLICY_SERVICE,
        "pol",
        ListenType.UNIX,
        "/run/pfxhttp/policy.sock",
        None,
    )
    assert (second.mode, second.user, second.group) == (0o660, "postfix", "mail")
    assert (third.type, third.address, third.name) == (ListenType.TCP6, "::1", "")
    logging = config.server.logging
    assert (logging.json, logging.level, logging.use_systemd) == (True, LogLevel.DEBUG, True)
    assert config.server.http_client == HttpClientConfig(
        timeout=90.0,
        max_connections_per_host=7,
        max_idle_connections=8,
        max_idle_connections_per_host=9,
        idle_connection_timeout=0.5,
    )
    tls = config.server.tls
    assert (tls.enabled, tls.skip_verify, tls.root_ca, tls.cert, tls.key) == (
        True,
        True,
        "/etc/ssl/ca.pem",
        "/etc/pfxhttp/c.pem",
        "/etc/pfxhttp/k.pem",
    )
    assert config.server.socketmap_max_reply_size == 5000
    demo = config.socket_maps["demo"]
    assert demo.kind is EntryKind.SOCKET_MAP
    assert demo.target == "https://api.example.com/map"
    assert demo.custom_headers == (("X-One", "1"), ("X-Two", "two words"))
    assert demo.payload == '{"k": "{{ .Key }}"}'
    assert (demo.status_code, demo.value_field, demo.error_field, demo.no_error_value) == (
        (201,),
        "data.result",
        "error",
        "not-found",
    )
    assert demo.http_auth_basic == BasicAuth("user", "pa:ss")  # split at the first ':' (RFC 7617)
    assert demo.locations["target"] == Location("pfxhttp.yml", 38, 13)
    assert demo.location_of("") == Location("pfxhttp.yml", 37, 3)
    assert demo.key_path("payload") == "socket_maps.demo.payload"
    pol = config.policy_services["pol"]
    assert pol.kind is EntryKind.POLICY_SERVICE
    assert (pol.payload, pol.status_code, pol.value_field, pol.http_auth_basic) == (None, (200,), None, None)
    assert pol.location_of("payload") == Location("pfxhttp.yml", 49, 3)  # absent: the entry's own key


def test_defaults_when_keys_are_absent() -> None:
    config = parse_config(MINIMAL)
    server = config.server
    assert server.listen[0].kind is ListenKind.SOCKET_MAP and server.listen[0].port == 0
    assert server.logging.level is LogLevel.INFO and not server.logging.json
    assert server.http_client == HttpClientConfig()
    assert server.http_client.timeout == 10.0
    assert not server.tls.enabled and not server.tls.skip_verify
    assert server.socketmap_max_reply_size == 100_000
    assert dict(config.socket_maps) == {} and dict(config.policy_services) == {}
    assert config.source == "<string>"


def test_config_is_immutable() -> None:
    config = parse(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = config.server  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.socket_maps["x"] = config.socket_maps["demo"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.socket_maps["demo"].locations["x"] = Location("f", 1, 1)  # type: ignore[index]
    assert "pa:ss" not in repr(config)


def test_zero_means_no_limit_and_default() -> None:
    config = parse(
        """\
        server:
          listen: [{type: tcp, address: 127.0.0.1, port: 1}]
          http_client:
            timeout: 0
            max_connections_per_host: 0
            max_idle_connections: 0
            max_idle_connections_per_host: 0
            idle_connection_timeout: 0s
          socketmap_max_reply_size: -1
        """
    )
    assert config.server.http_client == HttpClientConfig(
        timeout=10.0,
        max_connections_per_host=0,
        max_idle_connections=0,
        max_idle_connections_per_host=0,
        idle_connection_timeout=0.0,
    )
    assert config.server.socketmap_max_reply_size == 100_000


def test_defaults_entry_is_merged_into_every_entry() -> None:
    config = parse(
        """\
        server:
          listen: [{type: tcp, address: 127.0.0.1, port: 0}]
        socket_maps:
          defaults:
            target: https://api.example.com/postfix/map
            http_auth_basic: "user:secret"
            custom_headers: ["X-Common: yes", "X-Two: 2"]
            payload: '{"key": "{{ .Key }}"}'
            status_code: 200
            value_field: result
            error_field: error
          relay_domains:
            custom_headers:
              - "X-Pfx-Name: relay_domains"
          transport_maps:
            target: https://other.example.com/api
            status_code: 201
            value_field: ""
          bare:
        """
    )
    assert "defaults" not in config.socket_maps
    relay = config.socket_maps["relay_domains"]
    assert relay.custom_headers == (("X-Common", "yes"), ("X-Two", "2"), ("X-Pfx-Name", "relay_domains"))
    assert relay.target == "https://api.example.com/postfix/map"
    assert relay.http_auth_basic == BasicAuth("user", "secret")
    assert (relay.payload, relay.status_code, relay.value_field) == (
        '{"key": "{{ .Key }}"}',
        (200,),
        "result",
    )
    assert relay.locations["target"] == Location("pfxhttp.yml", 5, 13)  # where defaults wrote it
    assert relay.locations["custom_headers"] == Location("pfxhttp.yml", 14, 7)  # the entry's own list
    assert relay.locations[""] == Location("pfxhttp.yml", 12, 3)
    transport = config.socket_maps["transport_maps"]
    assert transport.target == "https://other.example.com/api"
    assert transport.locations["target"] == Location("pfxhttp.yml", 16, 13)
    assert transport.status_code == (201,)
    assert transport.value_field == "result"  # "" counts as not written, as upstream's zero value
    assert transport.custom_headers == (("X-Common", "yes"), ("X-Two", "2"))
    assert config.socket_maps["bare"].target == "https://api.example.com/postfix/map"


@pytest.mark.parametrize(
    ("written", "loaded"),
    [("0", "0"), ("true", "true"), ("False", "false"), ("yes", "yes"), ("1.5", "1.5"), ('"OK"', "OK")],
)
def test_no_error_value_scalars_are_text(written: str, loaded: str) -> None:
    config = parse_config(
        MINIMAL + f"socket_maps:\n  m:\n    target: http://h/\n    no_error_value: {written}\n"
    )
    assert config.socket_maps["m"].no_error_value == loaded


def test_anchors_aliases_and_merge_keys() -> None:
    config = parse(
        """\
        socket_maps:
          one:
            <<: &common
              target: https://api.example.com/map
              status_code: 200
            custom_headers: &headers ["X-A: 1"]
          two:
            <<: *common
            status_code: 202
            custom_headers: *headers
        server:
          listen:
            - &tcp {type: tcp, address: 127.0.0.1, port: 23450}
            - <<: *tcp
              port: 23451
            - <<: [{type: tcp, port: 1}, {type: unix, port: 2}]
              address: 127.0.0.2
        """
    )
    ports = [(listener.address, listener.port) for listener in config.server.listen]
    assert ports == [("127.0.0.1", 23450), ("127.0.0.1", 23451), ("127.0.0.2", 1)]
    one, two = config.socket_maps["one"], config.socket_maps["two"]
    assert (one.target, one.status_code, one.custom_headers) == (
        "https://api.example.com/map",
        (200,),
        (("X-A", "1"),),
    )
    assert (two.status_code, two.custom_headers) == ((202,), (("X-A", "1"),))


@pytest.mark.parametrize("written", ['"0660"', "0660", "660", '"0o660"', '"660"'])
def test_unix_mode_is_always_octal(written: str) -> None:
    config = parse_config(f"server:\n  listen:\n    - {{type: unix, address: /tmp/s, mode: {written}}}\n")
    assert config.server.listen[0].mode == 0o660


def test_scalar_leniency_matching_upstream_decoding() -> None:
    config = parse(
        """\
        server:
          listen:
            - {type: tcp, address: 127.0.0.1, port: "23450", name: 123}
          logging: {level: DEBUG, json: "true"}
        """
    )
    assert config.server.listen[0].port == 23450
    assert config.server.listen[0].name == "123"
    assert config.server.logging.level is LogLevel.DEBUG
    assert config.server.logging.json


def test_keys_of_the_other_socket_family_are_ignored_with_a_warning() -> None:
    config = parse(
        """\
        server:
          listen:
            - {type: tcp, address: 127.0.0.1, port: 1, mode: "0600", user: postfix}
            - {type: unix, address: /tmp/s, port: 25}
        """
    )
    tcp, unix = config.server.listen
    assert (tcp.mode, tcp.user, unix.port) == (None, None, None)
    assert config.warnings == (
        "server.listen[0].mode (line 3): only used by unix listeners; ignored",
        "server.listen[0].user (line 3): only used by unix listeners; ignored",
        "server.listen[1].port (line 4): only used by tcp/tcp6 listeners; ignored",
    )


def test_same_port_zero_twice_is_not_a_clash() -> None:
    config = parse_config(MINIMAL + "    - {type: tcp, address: 127.0.0.1, port: 0}\n")
    assert len(config.server.listen) == 2
