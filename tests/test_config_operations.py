"""The keys of running pfxhttp like a Postfix daemon: run_as_user/run_as_group, server.metrics and a listener's
systemd_socket_name. Loaded into the model, refused with file:line:column and key path when wrong."""

from __future__ import annotations

import textwrap

import pytest

from pfxhttp.config import BasicAuth, Config, parse_config
from pfxhttp.config.model import MetricsConfig
from pfxhttp.errors import ConfigErrors

LISTEN = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 23450}\n"


def parse(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "pfxhttp.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse(text)
    return [error.render() for error in info.value.errors]


def test_every_operations_key_is_loaded() -> None:
    config = parse(
        """\
        server:
          run_as_user: postfix
          run_as_group: 1000
          listen:
            - kind: policy_service
              name: pol
              type: unix
              address: /run/pfxhttp/policy.sock
              systemd_socket_name: "pfxhttp policy"
          metrics:
            enabled: true
            address: "[::1]"
            port: 9200
            path: /internal/metrics
            basic_auth: "prom:se:cret"
        policy_services:
          pol: {target: http://127.0.0.1/}
        """
    )
    assert config.warnings == ()
    assert (config.server.run_as_user, config.server.run_as_group) == ("postfix", "1000")
    assert config.server.listen[0].systemd_socket_name == "pfxhttp policy"
    assert config.server.metrics == MetricsConfig(
        enabled=True,
        address="::1",
        port=9200,
        path="/internal/metrics",
        basic_auth=BasicAuth("prom", "se:cret"),
    )
    assert "se:cret" not in repr(config.server.metrics)


@pytest.mark.parametrize(
    "server",
    [
        "",
        "  metrics:\n",
        "  metrics: {}\n",
        "  run_as_user: ''\n  run_as_group:\n",
        "  metrics: {basic_auth: ''}\n",
    ],
)
def test_absent_null_and_empty_mean_the_defaults(server: str) -> None:
    config = parse(LISTEN + server)
    assert config.server.metrics == MetricsConfig()
    assert config.server.run_as_user is None and config.server.run_as_group is None
    assert config.server.listen[0].systemd_socket_name is None


def test_metrics_keys_alone_keep_the_other_defaults() -> None:
    metrics = parse(LISTEN + "  metrics: {enabled: true}\n").server.metrics
    assert metrics == MetricsConfig(enabled=True, address="127.0.0.1", port=9143, path="/metrics")


@pytest.mark.parametrize(
    "name",
    ["policy", "a", "x" * 255, "with blanks and ~!@#$%^&*()", "123"],
)
def test_systemd_socket_names_systemd_accepts(name: str) -> None:
    config = parse_config(LISTEN.replace("port: 23450}", f"port: 1, systemd_socket_name: '{name}'}}"))
    assert config.server.listen[0].systemd_socket_name == name


def at(place: str, path: str, message: str) -> str:
    return f"pfxhttp.yml:{place}: at key {path}: {message}"


FD_SYNTAX = "must be 1 to 255 printable ASCII characters without ':' (systemd's FileDescriptorName=)"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("'a:b'", f"systemd_socket_name 'a:b' {FD_SYNTAX}"),
        ("''", f"systemd_socket_name '' {FD_SYNTAX}"),
        ("'" + "x" * 256 + "'", f"systemd_socket_name '{'x' * 256}' {FD_SYNTAX}"),
        ('"caf\\u00e9"', f"systemd_socket_name 'caf\u00e9' {FD_SYNTAX}"),
        ('"a\\tb"', f"systemd_socket_name 'a\\tb' {FD_SYNTAX}"),
        ("[a]", "expected a string, got a list"),
    ],
)
def test_systemd_socket_name_errors(name: str, expected: str) -> None:
    text = f"server:\n  listen:\n    - type: unix\n      address: /x\n      systemd_socket_name: {name}\n"
    assert errors(text) == [at("5:28", "server.listen[0].systemd_socket_name", expected)]


ACCOUNT = (
    "must be a name or a numeric id: no blanks, ':', '/' or control characters, and not starting with '-'"
)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "  run_as_user: 'mail user'\n",
            at("4:16", "server.run_as_user", f"run_as_user 'mail user' {ACCOUNT}"),
        ),
        ("  run_as_user: -1\n", at("4:16", "server.run_as_user", f"run_as_user '-1' {ACCOUNT}")),
        ("  run_as_group: a:b\n", at("4:17", "server.run_as_group", f"run_as_group 'a:b' {ACCOUNT}")),
        ("  run_as_group: ../x\n", at("4:17", "server.run_as_group", f"run_as_group '../x' {ACCOUNT}")),
        ("  run_as_user: [a]\n", at("4:16", "server.run_as_user", "expected a string, got a list")),
        ("  metrics: 5\n", at("4:12", "server.metrics", "expected a mapping, got an integer")),
        (
            "  metrics: {enabled: maybe}\n",
            at("4:22", "server.metrics.enabled", "expected true or false, got a string"),
        ),
        (
            "  metrics: {addres: x}\n",
            at("4:13", "server.metrics.addres", "unknown key (did you mean 'address'?)"),
        ),
        ("  metrics: {address: ''}\n", at("4:22", "server.metrics.address", "must not be empty")),
        ("  metrics: {port: 0}\n", at("4:19", "server.metrics.port", "must be between 1 and 65535")),
        ("  metrics: {port: 65536}\n", at("4:19", "server.metrics.port", "must be between 1 and 65535")),
        (
            "  metrics: {port: http}\n",
            at("4:19", "server.metrics.port", "expected an integer, got the string 'http'"),
        ),
        (
            "  metrics: {path: metrics}\n",
            at("4:19", "server.metrics.path", "path 'metrics' must start with '/'"),
        ),
        ("  metrics: {path: ''}\n", at("4:19", "server.metrics.path", "path '' must start with '/'")),
        (
            "  metrics: {path: '/m?x=1'}\n",
            at(
                "4:19",
                "server.metrics.path",
                "path '/m?x=1' must not contain blanks, control characters, '?' or '#'",
            ),
        ),
        (
            "  metrics: {basic_auth: nocolon}\n",
            at("4:25", "server.metrics.basic_auth", "basic_auth must have the form 'user:password'"),
        ),
        (
            "  metrics: {basic_auth: ':pw'}\n",
            at("4:25", "server.metrics.basic_auth", "basic_auth must have the form 'user:password'"),
        ),
        (
            "  metrics: {enabled: true, port: 23450}\n",
            at(
                "4:3",
                "server.metrics",
                "listens on 127.0.0.1:23450, the endpoint of the listener tcp:127.0.0.1:23450",
            ),
        ),
    ],
)
def test_operations_key_errors(server: str, expected: str) -> None:
    assert errors(LISTEN + server) == [expected]


def test_a_disabled_metrics_server_may_name_a_listener_port() -> None:
    # Nothing binds it, so a disabled block written ahead of time is no error.
    assert parse(LISTEN + "  metrics: {port: 23450}\n").server.metrics.port == 23450


def test_upstream_keys_of_later_work_still_warn() -> None:
    config = parse(LISTEN + "  chroot: /var/lib/pfxhttp\n  observability: {prometheus_enabled: true}\n")
    assert config.warnings == (
        "server.chroot (line 4): not supported by this version yet; ignored",
        "server.observability (line 5): not supported by this version yet; ignored",
    )


def test_workers_with_metrics_are_refused_at_the_workers_key() -> None:
    text = (
        "server:\n  workers: 2\n  metrics: {enabled: true}\n"
        "  listen:\n    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 23450}\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        parse_config(text, "pfxhttp.yml")
    (error,) = caught.value.errors
    assert (str(error.location), error.path) == ("pfxhttp.yml:2:12", "server.workers")
    assert "cannot be combined with server.metrics" in error.message
