"""Loading valid pfxhttp configurations: every key, defaults merging, upstream formats, search path."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.config import (
    DEFAULT_SEARCH_PATH,
    BasicAuth,
    Config,
    EntryKind,
    HttpClientConfig,
    ListenKind,
    ListenType,
    LogLevel,
    ResponseCacheConfig,
    WorkerPoolConfig,
    blocks,
    entries,
    find_config,
    listen,
    load_config,
    loader,
    parse_config,
    parse_duration,
    serversection,
)
from pfxhttp.errors import ConfigError, ConfigErrors, Location

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


def test_old_upstream_format_loads() -> None:
    # The shape of upstream's first pfxhttp.yml: one listener as a mapping without kind, a bare integer
    # duration, and the older tls spelling http_client_skip_verify.
    config = parse(
        """\
        ---
        # pfxhttp config file
        server:
          listen:
            type: "tcp"
            address: "[::]"
            port: 23450
          http_client:
            max_connections_per_host: 10
            max_idle_connections: 4
            max_idle_connections_per_host: 1
            idle_connection_timeout: 10
          tls:
            enabled: true
            http_client_skip_verify: true
          socketmap_max_reply_size: 100000
        socket_maps:
          demo:
            target: https://127.0.0.1:9443/api/v1/custom/demo
            custom_headers:
              - "Authorization: Basic dGVzdDp0ZXN0"
            payload: >
              {
                "key": "{{ .Key }}"
              }
            status_code: 200
            value_field: "demo_value"
        """
    )
    (listener,) = config.server.listen
    assert (listener.kind, listener.type, listener.address, listener.port) == (
        ListenKind.SOCKET_MAP,
        ListenType.TCP,
        "::",
        23450,
    )
    assert config.server.http_client.idle_connection_timeout == 10.0  # bare number = seconds
    assert config.server.tls.skip_verify
    assert config.socket_maps["demo"].payload == '{\n  "key": "{{ .Key }}"\n}\n'
    assert config.warnings == ()


UPSTREAM_README = """\
server:
  run_as_user: "pfxhttp"
  run_as_group: "pfxhttp"
  listen:
    - kind: "socket_map"
      name: "demo_map"
      type: "tcp"
      address: "[::]"
      port: 23450
      worker_pool:
        max_workers: 5
        max_queue: 20
    - kind: "policy_service"
      name: "example_policy"
      type: "tcp"
      address: "[::]"
      port: 23451
      systemd_socket_name: "example_policy"
    - kind: "dovecot_sasl"
      name: "dovecot_sasl"
      type: "tcp"
      address: "0.0.0.0"
      port: 23453
  logging:
    json: true
    level: info
    use_systemd: false
  tls:
    enabled: true
    skip_verify: true
    root_ca: "/etc/ssl/certs/ca-certificates.crt"
  http_client:
    timeout: 30s
    max_connections_per_host: 100
    max_idle_connections: 20
    max_idle_connections_per_host: 20
    idle_connection_timeout: 90s
    proxy: "http://proxy.example.com:8080"
  response_cache:
    enabled: true
    ttl: 5m
  worker_pool:
    max_workers: 10
    max_queue: 100
  jwt_db_path: "/var/lib/pfxhttp/jwt.db"
  observability:
    prometheus_enabled: false
    otel_sample_ratio: 1.0
socket_maps:
  demo_map:
    target: "https://127.0.0.1:9443/api/v1/custom/map"
    custom_headers:
      - "Authorization: Bearer <token>"
    payload: >
      {
        "key": "{{ .Key }}"
      }
    status_code: 200
    value_field: "data.result"
    error_field: "error"
    no_error_value: "not-found"
  oidc_demo_map:
    target: "https://127.0.0.1:9443/api/v1/custom/map"
    backend_oidc_auth:
      enabled: true
      configuration_uri: "https://example.com/.well-known/openid-configuration"
      client_id: "foobar"
      client_secret: "secret"
    http_request_compression: true
    http_response_compression: true
  jwt_demo_map:
    target: "https://your-api.example.com/api/v1/map"
    jwt_auth:
      enabled: true
      token_endpoint: "https://your-auth.example.com/token"
      credentials:
        username: "username"
        password: "password"
policy_services:
  example_policy:
    target: "https://127.0.0.1:9443/api/v1/custom/policy"
    custom_headers:
      - "Authorization: Bearer <token>"
    payload: "{{ .Key }}"
    status_code: 200
    value_field: "policy.result"
    error_field: "policy.error"
    no_error_value: "OK"
dovecot_sasl:
  dovecot_sasl:
    target: https://127.0.0.1:9443/api/v1/auth/json
    sasl_oidc_auth:
      enabled: true
"""


def test_upstream_readme_config_loads_with_warnings(tmp_path: Path) -> None:
    # jwt_db_path's directory must exist: the README's /var/lib/pfxhttp stands for one that does.
    config = parse(UPSTREAM_README.replace("/var/lib/pfxhttp/jwt.db", str(tmp_path / "jwt.db")))
    assert [listener.name for listener in config.server.listen] == ["demo_map", "example_policy"]
    assert config.server.listen[0].address == "::"
    assert config.server.http_client.timeout == 30.0
    assert config.server.tls.root_ca == "/etc/ssl/certs/ca-certificates.crt"
    assert set(config.socket_maps) == {"demo_map", "oidc_demo_map", "jwt_demo_map"}
    assert config.policy_services["example_policy"].payload == "{{ .Key }}"
    # Keys of the backends work that upstream has too now load instead of warning.
    assert config.server.listen[0].worker_pool == WorkerPoolConfig(max_workers=5, max_queue=20)
    assert config.server.response_cache == ResponseCacheConfig(enabled=True, ttl=300.0)
    assert config.server.worker_pool == WorkerPoolConfig(max_workers=10, max_queue=100)
    oidc = config.socket_maps["oidc_demo_map"]
    assert oidc.http_request_compression and oidc.http_response_compression
    # ... and so do those of the operations work: privilege dropping and systemd socket activation.
    assert (config.server.run_as_user, config.server.run_as_group) == ("pfxhttp", "pfxhttp")
    assert config.server.listen[1].systemd_socket_name == "example_policy"
    # ... and backend authentication with its token store.
    assert config.server.jwt_db_path == str(tmp_path / "jwt.db")
    assert oidc.backend_oidc_auth is not None and oidc.backend_oidc_auth.client_id == "foobar"
    assert oidc.backend_oidc_auth.configuration_uri == "https://example.com/.well-known/openid-configuration"
    jwt = config.socket_maps["jwt_demo_map"].jwt_auth
    assert jwt is not None and jwt.token_endpoint == "https://your-auth.example.com/token"
    assert [(name, secret.value) for name, secret in jwt.credentials] == [
        ("username", "username"),
        ("password", "password"),
    ]
    assert config.warnings == (
        "server.listen[2] (line 19): listener kind 'dovecot_sasl' is not supported by this version yet; "
        "skipped",
        "server.http_client.proxy (line 38): not supported by this version yet; ignored",
        "server.observability (line 46): not supported by this version yet; ignored",
        "dovecot_sasl (line 89): not supported by this version yet; ignored",
    )


def test_packaged_upstream_config_loads() -> None:
    # Upstream's packaging default: systemd socket, privilege drop, observability; loads with warnings only.
    config = parse(
        """\
        server:
          run_as_user: "pfxhttp"
          listen:
            - kind: "policy_service"
              name: "policy"
              type: "unix"
              address: "/var/spool/postfix/private/pfxhttp-policy"
              systemd_socket_name: "policy"
          logging: {json: false, level: info, use_systemd: true}
          chroot: /var/lib/pfxhttp
        policy_services:
          policy:
            target: http://127.0.0.1:8080/pfxhttp/policy_service
            payload: "{{ .Key }}"
            status_code: 200
            value_field: "result"
            error_field: "error"
            no_error_value: "OK"
        """
    )
    assert config.server.listen[0].name == "policy"
    assert config.server.listen[0].systemd_socket_name == "policy"
    assert config.server.run_as_user == "pfxhttp"
    assert config.server.logging.use_systemd
    assert config.warnings == ("server.chroot (line 10): not supported by this version yet; ignored",)


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


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "pfxhttp.yml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).server.listen[0].port == 0


def test_same_port_zero_twice_is_not_a_clash() -> None:
    config = parse_config(MINIMAL + "    - {type: tcp, address: 127.0.0.1, port: 0}\n")
    assert len(config.server.listen) == 2


def test_example_config_loads_cleanly_and_documents_every_key() -> None:
    path = REPO / "etc" / "pfxhttp.yml"
    config = load_config(path)
    assert config.warnings == ()
    assert config.source == str(path)
    assert config.socket_maps and config.policy_services and len(config.server.listen) == 3
    text = path.read_text()
    documented = (
        *loader.TOP_KEYS,
        *loader.TOP_DEFERRED,
        *serversection.SERVER_KEYS,
        *serversection.SERVER_DEFERRED,
        *serversection.LOGGING_KEYS,
        *serversection.HTTP_CLIENT_KEYS,
        *serversection.HTTP_CLIENT_DEFERRED,
        *serversection.TLS_KEYS,
        *listen.LISTEN_KEYS,
        *listen.LISTEN_DEFERRED,
        *entries.ENTRY_KEYS,
        *blocks.WORKER_POOL_KEYS,
        *blocks.RESPONSE_CACHE_KEYS,
        *blocks.CACHE_KEYS,
        *blocks.CIRCUIT_BREAKER_KEYS,
        *blocks.METRICS_KEYS,
        *(kind.value for kind in ListenKind),
    )
    missing = [key for key in documented if key not in text]
    assert missing == []


def test_load_config_reports_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yml")
    bad = tmp_path / "bad.yml"
    bad.write_bytes(b"server:\n  x: \xff\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(bad)
    assert info.value.errors[0].location == Location(str(bad), 2, 6)


# Durations: Go's time.ParseDuration syntax, plus bare numbers meaning seconds.
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h2m3.5s", 3723.5),
        ("250us", 250e-6),
        ("250\u00b5s", 250e-6),
        ("10ns", 10e-9),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("0", 0.0),
        ("+3s", 3.0),
        (" 2m ", 120.0),
        (10, 10.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "10", "s", "1x", "1s2", "-5s", "1 s", ".s", True, None, [1], float("nan")]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"duration|negative"):
        parse_duration(value)


@given(
    st.integers(0, 1000),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
    st.integers(0, 999),
)
def test_parse_duration_sums_its_parts(h: int, m: int, s: int, ms: int, us: int) -> None:
    expected = h * 3600 + m * 60 + s + ms / 1000 + us / 1_000_000
    assert parse_duration(f"{h}h{m}m{s}s{ms}ms{us}us") == pytest.approx(expected)


# find_config: explicit path, else the search order.
def test_find_config_explicit(tmp_path: Path) -> None:
    path = tmp_path / "my.yml"
    path.write_text(MINIMAL)
    assert find_config(str(path)) == path
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(str(tmp_path / "missing.yml"))
    with pytest.raises(ConfigError, match="not a file"):
        find_config(str(tmp_path))


def test_default_search_path_matches_upstream() -> None:
    assert [str(p) for p in DEFAULT_SEARCH_PATH] == [
        "/usr/local/etc/pfxhttp/pfxhttp.yml",
        "/etc/pfxhttp/pfxhttp.yml",
        "$HOME/.pfxhttp/pfxhttp.yml",
        "pfxhttp.yml",
    ]


def test_find_config_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The order for any user but root (for root, see tests/test_config_trust.py). 1000: some user, not root.
    system = tmp_path / "usr-local" / "pfxhttp.yml"
    etc = tmp_path / "etc" / "pfxhttp.yml"
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    for directory in (system.parent, etc.parent, home / ".pfxhttp", cwd):
        directory.mkdir(parents=True)
    search = (system, etc, Path("$HOME/.pfxhttp/pfxhttp.yml"), Path("pfxhttp.yml"))
    monkeypatch.setattr(loader, "DEFAULT_SEARCH_PATH", search)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)

    with pytest.raises(ConfigError) as info:
        find_config(None, euid=1000)
    assert str(home / ".pfxhttp" / "pfxhttp.yml") in str(info.value)  # lists the expanded paths
    assert str(etc) in str(info.value)

    (cwd / "pfxhttp.yml").write_text(MINIMAL)
    assert find_config(None, euid=1000) == Path("pfxhttp.yml")
    (home / ".pfxhttp" / "pfxhttp.yml").write_text(MINIMAL)
    assert find_config(None, euid=1000) == home / ".pfxhttp" / "pfxhttp.yml"
    etc.write_text(MINIMAL)
    assert find_config(None, euid=1000) == etc
    system.write_text(MINIMAL)
    assert find_config(None, euid=1000) == system

    monkeypatch.delenv("HOME")  # no HOME: that entry is skipped, not searched as a literal "$HOME"
    assert all("$HOME" not in str(p) for p in loader.search_path(euid=1000))
