"""A backend reply that the configured field paths cannot handle is answered, never dropped.

jsonpath-ng's extensions (``sorted``, ``sub()``) raise on data of a type they do not expect, and a value
nested deeper than the renderer goes raises too. Before, the exception escaped the lookup and the connection
closed without a reply (Postfix then reconnects and asks again: the backend is hit twice). The real daemon in
front of a real local HTTP server, asked by raw clients and by postmap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pfxhttp.demo.httpd import HttpReply, HttpRequest
from tests.conftest import Backend, Daemon, policy_query, socketmap_query, start_daemon
from tests.postfix_harness import PostmapOutcome, make_postfix_config_dir, postfix_available, postmap_query

ERROR_ACTION = "DEFER 4.3.0 try later"
# Written as text: orjson (like the renderer before the fix) refuses to dump more than 255 levels.
ODD_BODY = (
    b'{"items": [1, "a"], "name": 5, "errors": [null, 1], "deep": '
    + b'{"a": ' * 300
    + b"1"
    + b"}" * 300
    + b"}"
)


async def odd_data(request: HttpRequest) -> HttpReply:
    """Lists that cannot be sorted, a number where a string is expected, a value nested 300 deep."""
    return HttpReply(200, ODD_BODY, (("Content-Type", "application/json"),))


CONFIG = """
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: policy, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: tcp_table, name: sorted, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
  http_client: {{timeout: 5s}}
socket_maps:
  defaults:
    target: "{url}/odd"
  sorted:
    value_field: "$.items.`sorted`"
  sub:
    value_field: "$.name.`sub(/x/, y)`"
  deep:
    value_field: deep
  errors:
    value_field: name
    error_field: "$.errors.`sorted`"
policy_services:
  policy:
    target: "{url}/odd"
    value_field: "$.items.`sorted`"
    error_action: "{error_action}"
"""


@pytest.fixture
async def odd(nursery: trio.Nursery, backend: Backend) -> Daemon:
    backend.routes["/odd"] = odd_data
    return await start_daemon(nursery, CONFIG.format(url=backend.url, error_action=ERROR_ACTION))


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("sorted", "PERM value_field failed"),
        ("sub", "PERM value_field failed"),
        ("deep", "PERM value_field failed"),
        ("errors", "PERM error_field failed"),
    ],
)
async def test_socketmap_gets_perm(odd: Daemon, backend: Backend, name: str, reply: str) -> None:
    with trio.fail_after(10):
        assert await socketmap_query(odd.address("socket_map"), name, "k@example.com") == reply
    assert backend.count("/odd") == 1
    assert "value_field failed" in odd.log.getvalue() or "error_field failed" in odd.log.getvalue()


async def test_policy_gets_the_error_action(odd: Daemon, backend: Backend) -> None:
    with trio.fail_after(10):
        assert await policy_query(odd.address("policy_service"), {"sender": "a@b"}) == (
            f"action={ERROR_ACTION}\n\n"
        )
    assert backend.count("/odd") == 1


@pytest.mark.postfix
@pytest.mark.skipif(not postfix_available(), reason="Debian's postfix is not installed")
async def test_postmap_sees_a_lookup_error_asked_once(odd: Daemon, backend: Backend, tmp_path: Path) -> None:
    config_dir = make_postfix_config_dir(tmp_path)
    with trio.fail_after(60):
        result = await postmap_query(
            "k", f"socketmap:inet:{odd.address('socket_map')}:sorted", config_dir=config_dir
        )
        assert result.outcome is PostmapOutcome.ERROR
        assert "permanent error: value_field failed" in result.stderr
        assert backend.count("/odd") == 1  # answered: Postfix did not reconnect to ask again
        tcp = await postmap_query("k", f"tcp:{odd.tcp_table('sorted')}", config_dir=config_dir)
    assert tcp.outcome is PostmapOutcome.ERROR
