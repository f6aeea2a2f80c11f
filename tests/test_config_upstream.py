"""Configurations written for the Go pfxhttp load unchanged: the old upstream format, the upstream README's example
(with its warnings) and the packaged upstream configuration."""

from __future__ import annotations

from pathlib import Path

from pfxhttp.config import (
    ListenKind,
    ListenType,
    ResponseCacheConfig,
    WorkerPoolConfig,
)
from tests.test_config import parse


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
