"""Caching, single-flight, stale answers, circuit breaker and worker pools, through the real daemon."""

from __future__ import annotations

import orjson
import pytest
import trio

from pfxhttp.demo.httpd import HttpReply, HttpRequest
from pfxhttp.protocol.netstring import encode as netstring
from tests.conftest import (
    Backend,
    connect,
    json_reply,
    policy_query,
    read_netstring,
    socketmap_query,
    start_daemon,
)

CONFIG = """
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: senders, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
  http_client: {{timeout: 1s}}
  {server_extra}
socket_maps:
  defaults:
    value_field: data.result
  cached:
    target: "{url}/switch"
    cache: {{ttl: 1h, negative_ttl: 1h, stale_if_error: 1h, max_entries: 100}}
  breaker:
    target: "{url}/switch"
    circuit_breaker: {{failures: 3, cooldown: 1h}}
  plain:
    target: "{url}/switch"
policy_services:
  senders:
    target: "{url}/policy-switch"
    value_field: policy.result
    cache: {{ttl: 1h, key_attributes: [sasl_username, sender]}}
"""


class Switch:
    """A backend whose behaviour the test flips: answer, fail with 503, or hold requests until released."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.calls = 0
        self.release = trio.Event()

    async def __call__(self, request: HttpRequest) -> HttpReply:
        self.calls += 1
        if self.mode == "hold":
            await self.release.wait()
        if self.mode == "fail":
            return json_reply({"error": "down"}, 503)
        key = orjson.loads(request.body)["key"]
        if key.startswith("missing"):
            return json_reply({"data": {}})
        return json_reply({"data": {"result": f"value-of-{key}"}})


@pytest.fixture
def switch(backend: Backend) -> Switch:
    sw = Switch()
    backend.routes["/switch"] = sw

    async def policy(request: HttpRequest) -> HttpReply:
        sw.calls += 1
        return json_reply({"policy": {"result": "DUNNO"}})

    backend.routes["/policy-switch"] = policy
    return sw


async def start(nursery: trio.Nursery, backend: Backend, server_extra: str = "") -> str:
    daemon = await start_daemon(nursery, CONFIG.format(url=backend.url, server_extra=server_extra))
    return daemon.address("socket_map")


async def test_fresh_answers_are_served_without_a_backend_call(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    address = await start(nursery, backend)
    with trio.fail_after(10):
        for _ in range(5):
            assert await socketmap_query(address, "cached", "a@x") == "OK value-of-a@x"
            assert await socketmap_query(address, "cached", "missing@x") == "NOTFOUND "
    assert switch.calls == 2  # one per distinct key, then memory


async def test_stale_found_is_served_when_the_backend_fails_but_never_a_stale_notfound(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    address = await start(nursery, backend, "response_cache: {enabled: true, ttl: 1h}")
    with trio.fail_after(10):
        assert await socketmap_query(address, "plain", "a@x") == "OK value-of-a@x"
        assert await socketmap_query(address, "plain", "missing@x") == "NOTFOUND "
        switch.mode = "fail"
        # plain has no cache of its own: the response cache gives the last good FOUND ...
        assert await socketmap_query(address, "plain", "a@x") == "OK value-of-a@x"
        # ... but a NOTFOUND is never replayed while the backend is down (the key may exist by now)
        assert await socketmap_query(address, "plain", "missing@x") == "TEMP backend status 503"
        assert await socketmap_query(address, "plain", "never-seen@x") == "TEMP backend status 503"


async def test_identical_concurrent_lookups_share_one_backend_request(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    address = await start(nursery, backend)
    switch.mode = "hold"
    replies: list[str] = []

    async def ask() -> None:
        replies.append(await socketmap_query(address, "cached", "same@x"))

    with trio.fail_after(10):
        async with trio.open_nursery() as clients:
            for _ in range(50):
                clients.start_soon(ask)
            while switch.calls == 0:
                await trio.sleep(0.01)
            await trio.sleep(0.1)  # let every client's request reach the daemon
            switch.mode = "answer"
            switch.release.set()
    assert replies == ["OK value-of-same@x"] * 50
    assert switch.calls == 1


async def test_circuit_breaker_opens_after_consecutive_failures(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    address = await start(nursery, backend)
    switch.mode = "fail"
    with trio.fail_after(10):
        for _ in range(3):
            assert await socketmap_query(address, "breaker", "k") == "TEMP backend status 503"
        calls = switch.calls
        for _ in range(5):
            assert await socketmap_query(address, "breaker", "k") == "TEMP backend circuit open"
        assert switch.calls == calls  # open: no backend call at all
        assert await socketmap_query(address, "plain", "k") == "TEMP backend status 503"  # per entry


async def test_worker_pool_back_pressure_answers_temp(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    address = await start(nursery, backend, "worker_pool: {max_workers: 2, max_queue: 1}")
    switch.mode = "hold"
    replies: list[str] = []

    async def ask(i: int) -> None:
        replies.append(await socketmap_query(address, "plain", f"k{i}"))

    with trio.fail_after(10):
        async with trio.open_nursery() as clients:
            for i in range(3):
                clients.start_soon(ask, i)
            while switch.calls < 2:
                await trio.sleep(0.01)
            await trio.sleep(0.1)  # the third waits in the queue
            assert await socketmap_query(address, "plain", "k9") == "TEMP server busy"  # queue full
            assert switch.calls == 2  # never more than max_workers in flight
            switch.mode = "answer"
            switch.release.set()
    assert sorted(replies) == [f"OK value-of-k{i}" for i in range(3)]


async def test_policy_cache_uses_only_key_attributes(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    daemon = await start_daemon(nursery, CONFIG.format(url=backend.url, server_extra=""))
    address = daemon.address("policy_service")
    with trio.fail_after(10):
        for i in range(4):  # instance and queue_id differ per message: still one backend call
            attrs = {"sasl_username": "u", "sender": "u@x", "instance": f"i{i}", "queue_id": f"Q{i}"}
            assert await policy_query(address, attrs) == "action=DUNNO\n\n"
        assert await policy_query(address, {"sasl_username": "u", "sender": "other@x"}) == "action=DUNNO\n\n"
    assert switch.calls == 2


async def test_listener_worker_pool(nursery: trio.Nursery, backend: Backend, switch: Switch) -> None:
    config = CONFIG.format(url=backend.url, server_extra="").replace(
        "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}",
        "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0,"
        " worker_pool: {max_workers: 1, max_queue: 0}}",
    )
    daemon = await start_daemon(nursery, config)
    address = daemon.address("socket_map")
    switch.mode = "hold"
    replies: list[str] = []

    async def ask() -> None:
        replies.append(await socketmap_query(address, "plain", "first"))

    with trio.fail_after(10):
        async with trio.open_nursery() as clients:
            clients.start_soon(ask)
            while switch.calls < 1:
                await trio.sleep(0.01)
            assert await socketmap_query(address, "plain", "second") == "TEMP server busy"
            switch.mode = "answer"
            switch.release.set()
    assert replies == ["OK value-of-first"]
    assert switch.calls == 1


async def test_keys_the_template_cannot_render_do_not_open_the_breaker(
    nursery: trio.Nursery, backend: Backend, switch: Switch
) -> None:
    address = await start(nursery, backend)
    bad_key = b"caf\xe9".decode("utf-8", "surrogateescape")  # not UTF-8: cannot be put into JSON
    with trio.fail_after(10):
        async with await connect(address) as stream:
            for _ in range(5):
                payload = b"breaker " + bad_key.encode("utf-8", "surrogateescape")
                await stream.send_all(netstring(payload))
                assert await read_netstring(stream) == "TEMP invalid request payload"
        assert await socketmap_query(address, "breaker", "good") == "OK value-of-good"  # still closed
    assert switch.calls == 1
