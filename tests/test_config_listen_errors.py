"""Mistakes in server.listen and the server blocks, each at its file:line:col and dotted path: listener keys,
tcp_table and worker_pool listeners, response_cache and worker_pool, and two listeners on one endpoint."""

from __future__ import annotations

import pytest

from tests.test_config_errors import LISTEN, at, errors


@pytest.mark.parametrize(
    ("listener", "expected"),
    [
        (
            "{address: 127.0.0.1, port: 1}",
            at("3:7", "server.listen[0]", "missing required key 'type' (tcp, tcp6 or unix)"),
        ),
        (
            "{type: tcp4, address: 127.0.0.1, port: 1}",
            at("3:14", "server.listen[0].type", "unknown listener type 'tcp4' (did you mean 'tcp'?)"),
        ),
        ("{type: tcp, address: 127.0.0.1}", at("3:7", "server.listen[0]", "a tcp listener needs a 'port'")),
        ("{type: tcp6, port: 1}", at("3:7", "server.listen[0]", "missing required key 'address'")),
        ("{type: unix}", at("3:7", "server.listen[0]", "missing required key 'address'")),
        (
            "{kind: socketmap, type: tcp, address: 127.0.0.1, port: 1}",
            at(
                "3:14",
                "server.listen[0].kind",
                "unknown listener kind 'socketmap' (did you mean 'socket_map'?)",
            ),
        ),
        (
            "{kind: policy_service, type: tcp, address: 127.0.0.1, port: 1}",
            at("3:7", "server.listen[0]", "a policy_service listener needs a 'name' from policy_services"),
        ),
        (
            "{kind: policy_service, name: polcy, type: tcp, address: 127.0.0.1, port: 1}",
            at(
                "3:36",
                "server.listen[0].name",
                "no policy_services entry named 'polcy' (did you mean 'policy'?)",
            ),
        ),
        (
            "{name: 'a:b', type: tcp, address: 127.0.0.1, port: 1}",
            at(
                "3:14",
                "server.listen[0].name",
                "listener name 'a:b' must not contain blanks, control characters or ':'",
            ),
        ),
        (
            "{name: defaults, type: tcp, address: 127.0.0.1, port: 1}",
            at("3:14", "server.listen[0].name", "'defaults' is reserved and cannot name a listener"),
        ),
        (
            "{type: unix, address: /tmp/s, mode: '0999'}",
            at("3:43", "server.listen[0].mode", "mode '0999' must be an octal permission such as \"0660\""),
        ),
        (
            "{type: unix, address: /tmp/s, mode: '017777'}",
            at("3:43", "server.listen[0].mode", "mode '017777' is larger than 07777"),
        ),
    ],
)
def test_listener_errors(listener: str, expected: str) -> None:
    text = f"server:\n  listen:\n    - {listener}\npolicy_services:\n  policy: {{target: http://h/}}\n"
    assert errors(text) == [expected]


@pytest.mark.parametrize(
    ("listener", "expected"),
    [
        (
            "{kind: tcp_table, type: tcp, address: 127.0.0.1, port: 1}",
            at("3:7", "server.listen[0]", "a tcp_table listener needs a 'name' from socket_maps"),
        ),
        (
            "{kind: tcp_table, name: alias, type: tcp, address: 127.0.0.1, port: 1}",
            at(
                "3:31",
                "server.listen[0].name",
                "no socket_maps entry named 'alias' (did you mean 'aliases'?)",
            ),
        ),
        (
            "{kind: tcp_table, name: policy, type: tcp, address: 127.0.0.1, port: 1}",
            at("3:31", "server.listen[0].name", "no socket_maps entry named 'policy'"),
        ),
        (
            "{kind: policy_service, name: aliases, type: tcp, address: 127.0.0.1, port: 1}",
            at("3:36", "server.listen[0].name", "no policy_services entry named 'aliases'"),
        ),
        (
            "{kind: tcp_tabel, type: tcp, address: 127.0.0.1, port: 1}",
            at(
                "3:14",
                "server.listen[0].kind",
                "unknown listener kind 'tcp_tabel' (did you mean 'tcp_table'?)",
            ),
        ),
        (
            "{type: tcp, address: 127.0.0.1, port: 1, worker_pool: {max_workers: 0, max_queue: 1}}",
            at("3:75", "server.listen[0].worker_pool.max_workers", "must be between 1 and 65536"),
        ),
    ],
)
def test_tcp_table_and_worker_pool_listener_errors(listener: str, expected: str) -> None:
    # tcp_table requests carry no map name (tcp_table(5)): the listener names the socket_maps entry it serves.
    text = (
        f"server:\n  listen:\n    - {listener}\n"
        "socket_maps:\n  aliases: {target: http://h/}\n"
        "policy_services:\n  policy: {target: http://h/}\n"
    )
    assert errors(text) == [expected]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("response_cache: [on]", at("4:19", "server.response_cache", "expected a mapping, got a list")),
        (
            "response_cache: {enabled: 1}",
            at("4:29", "server.response_cache.enabled", "expected true or false, got an integer"),
        ),
        (
            "response_cache: {enabled: true, ttl: 0}",
            at("4:40", "server.response_cache.ttl", "must be greater than 0"),
        ),
        (
            "response_cache: {enable: true}",
            at("4:20", "server.response_cache.enable", "unknown key (did you mean 'enabled'?)"),
        ),
        ("worker_pool: 12", at("4:16", "server.worker_pool", "expected a mapping, got an integer")),
        (
            "worker_pool: {max_workers: 1}",
            at("4:16", "server.worker_pool", "missing required key 'max_queue'"),
        ),
        (
            "worker_pool: {max_workers: 0, max_queue: 0}",
            at("4:30", "server.worker_pool.max_workers", "must be between 1 and 65536"),
        ),
        (
            "worker_pool: {max_workers: 1, max_queue: -1}",
            at("4:44", "server.worker_pool.max_queue", "must be between 0 and 1000000"),
        ),
    ],
)
def test_server_response_cache_and_worker_pool_errors(server: str, expected: str) -> None:
    assert errors(LISTEN + f"  {server}\n") == [expected]


def test_a_misspelt_worker_pool_key_is_named_and_the_missing_one_too() -> None:
    assert errors(LISTEN + "  worker_pool: {max_worker: 1, max_queue: 1}\n") == [
        at("4:16", "server.worker_pool", "missing required key 'max_workers'"),
        at("4:17", "server.worker_pool.max_worker", "unknown key (did you mean 'max_workers'?)"),
    ]


def test_listeners_on_the_same_endpoint() -> None:
    assert errors(
        """\
        server:
          listen:
            - {type: tcp, address: 127.0.0.1, port: 23450}
            - {type: tcp, address: 127.0.0.1, port: 23450}
            - {type: tcp, address: 127.0.0.1, port: 23451}
            - {type: unix, address: /run/p.sock}
            - {type: unix, address: /run/p.sock}
        """
    ) == [
        at("4:7", "server.listen[1]", "listens on the same endpoint as server.listen[0]"),
        at("7:7", "server.listen[4]", "listens on the same endpoint as server.listen[3]"),
    ]
