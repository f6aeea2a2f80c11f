"""The real daemon (in-process, real listeners) in front of a real local HTTP server, spoken to on the wire."""

from __future__ import annotations

import os
import stat

import orjson
import pytest
import trio

from pfxhttp.protocol.netstring import encode as netstring
from tests.conftest import (
    Backend,
    Daemon,
    connect,
    policy_query,
    read_netstring,
    read_policy_reply,
    socketmap_exchange,
    socketmap_query,
)

KEYS = [
    "alice@example.com",
    '"john doe"@example.com',
    'a"b\\c@example.com',
    "ünïcødé@exämple.com",
    "2001:db8::1",
    "<>",
    '""',
    "with  two  spaces ",
]


async def send_and_drain(address: str, data: bytes) -> bytes:
    """Send hostile bytes, half-close, and collect whatever comes back until the daemon closes."""
    received = b""
    stream = await connect(address)
    assert isinstance(stream, trio.SocketStream)
    try:
        await stream.send_all(data)
        await stream.send_eof()
        while chunk := await stream.receive_some(4096):
            received += chunk
    except trio.BrokenResourceError:
        pass  # the daemon closed while we were still sending: that is a clean refusal too
    finally:
        await stream.aclose()
    return received


@pytest.mark.parametrize("key", KEYS)
async def test_socketmap_key_reaches_backend_exactly(daemon: Daemon, backend: Backend, key: str) -> None:
    with trio.fail_after(10):
        reply = await socketmap_query(daemon.address("socket_map"), "echo", key)
    assert reply == f"OK {key}"
    assert orjson.loads(backend.requests[-1].body) == {"key": key}


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("echo", "x@example.com", "OK x@example.com"),
        ("absent", "x", "NOTFOUND "),
        ("fourofour", "x", "NOTFOUND "),
        ("fivehundred", "x", "TEMP backend status 500"),
        ("notjson", "x", "TEMP invalid JSON from backend"),
        ("slow", "x", "TIMEOUT backend timeout"),
        ("length", "99997", "OK " + "v" * 99_997),
        ("length", "99998", "PERM value too long"),
        ("nosuchmap", "x", "PERM unknown map"),
    ],
)
async def test_socketmap_contract_over_tcp_and_unix(
    daemon: Daemon, name: str, key: str, expected: str
) -> None:
    with trio.fail_after(10):
        for address in (daemon.address("socket_map"), daemon.address("socket_map", "unix")):
            assert await socketmap_query(address, name, key) == expected


async def test_backend_unreachable_is_temp(nursery: trio.Nursery, sock_dir: object) -> None:
    from tests.conftest import daemon_config, start_daemon, unused_port

    daemon = await start_daemon(nursery, daemon_config(f"http://127.0.0.1:{unused_port()}"))
    with trio.fail_after(10):
        assert await socketmap_query(daemon.address("socket_map"), "echo", "x") == "TEMP backend unreachable"
        reply = await policy_query(daemon.address("policy_service"), {"recipient": "ok@example.com"})
    assert reply == "action=DEFER_IF_PERMIT Service temporarily unavailable\n\n"


async def test_many_requests_per_connection_and_pipelining(daemon: Daemon) -> None:
    with trio.fail_after(10):
        async with await connect(daemon.address("socket_map")) as stream:
            for i in range(50):
                assert await socketmap_exchange(stream, "echo", f"k{i}") == f"OK k{i}"
            # Several requests in one write: answered in order, exactly framed.
            await stream.send_all(b"".join(netstring(f"echo p{i}".encode()) for i in range(5)))
            for i in range(5):
                assert await read_netstring(stream) == f"OK p{i}"
            # One byte at a time.
            for byte in netstring(b"echo slow-client"):
                await stream.send_all(bytes([byte]))
            assert await read_netstring(stream) == "OK slow-client"


@pytest.mark.parametrize(
    "garbage",
    [b"-1:x,", b"99999999999999:", b"5:abc", b"3:abc;", b"x" * 100_000, b"\x00\xff\xfe", b"4:nokey,", b"0:,"],
)
async def test_hostile_socketmap_bytes_close_only_that_connection(daemon: Daemon, garbage: bytes) -> None:
    with trio.fail_after(10):
        # The daemon closes the connection without answering; never hangs, never replies.
        assert await send_and_drain(daemon.address("socket_map"), garbage) == b""
        assert await socketmap_query(daemon.address("socket_map"), "echo", "next") == "OK next"
    assert "malformed request" in daemon.log.getvalue()


async def test_policy_actions_and_error_action(daemon: Daemon, backend: Backend) -> None:
    address = daemon.address("policy_service")
    with trio.fail_after(10):
        assert (
            await policy_query(address, {"recipient": "reject@x"})
            == "action=REJECT 5.7.1 rejected by policy\n\n"
        )
        assert (
            await policy_query(address, {"recipient": "prepend@x"})
            == "action=PREPEND X-Pfxhttp-Policy: tagged\n\n"
        )
        error = "action=DEFER_IF_PERMIT Service temporarily unavailable\n\n"
        assert await policy_query(address, {"recipient": "fail@x"}) == error
        assert await policy_query(address, {"recipient": "injection@x"}) == error  # CR/LF never forwarded
        assert await policy_query(address, {"recipient": "slow@x"}) == error
    attrs = orjson.loads(backend.requests[0].body)
    assert attrs == {"recipient": "reject@x"}


async def test_policy_repeated_names_and_equals_in_values(daemon: Daemon, backend: Backend) -> None:
    with trio.fail_after(10):
        async with await connect(daemon.address("policy_service")) as stream:
            await stream.send_all(
                b"request=smtpd_access_policy\nccert_subject=CN=a=b\nrecipient=x@y\nrecipient=dunno@y\n\n"
            )
            assert await read_policy_reply(stream) == "action=DUNNO\n\n"
    assert orjson.loads(backend.requests[-1].body) == {
        "request": "smtpd_access_policy",
        "ccert_subject": "CN=a=b",
        "recipient": "dunno@y",
    }


async def test_policy_close_at_boundary_or_mid_block_makes_no_backend_call(
    daemon: Daemon, backend: Backend
) -> None:
    address = daemon.address("policy_service")
    with trio.fail_after(10):
        async with await connect(address) as stream:
            await stream.send_all(b"recipient=ok@x\n\n")
            assert await read_policy_reply(stream) == "action=OK\n\n"
        async with await connect(address) as stream:  # closed mid-block
            await stream.send_all(b"request=smtpd_access_policy\nrecipient=ok@x\n")
        async with await connect(address) as stream:  # closed without sending anything
            pass
        # Still serving, and exactly two backend calls happened (the two complete blocks).
        assert await policy_query(address, {"recipient": "dunno@x"}) == "action=DUNNO\n\n"
    assert backend.count("/policy") == 2


@pytest.mark.parametrize(
    "garbage", [b"no equals sign\n\n", b"=value\n\n", b"\n", b"a=b\x00\n\n", b"x=" + b"y" * 100_000]
)
async def test_hostile_policy_bytes(daemon: Daemon, backend: Backend, garbage: bytes) -> None:
    address = daemon.address("policy_service")
    with trio.fail_after(10):
        assert await send_and_drain(address, garbage) == b""
        assert await policy_query(address, {"recipient": "dunno@x"}) == "action=DUNNO\n\n"
    assert backend.count("/policy") == 1


async def test_idle_connections_do_not_block_active_ones(daemon: Daemon) -> None:
    address = daemon.address("socket_map")
    with trio.fail_after(20):
        idle = [await connect(address) for _ in range(300)]
        try:
            async with trio.open_nursery() as nursery:
                results: list[str] = []

                async def one(i: int) -> None:
                    results.append(await socketmap_query(address, "echo", f"active{i}"))

                for i in range(20):
                    nursery.start_soon(one, i)
            assert sorted(results) == sorted(f"OK active{i}" for i in range(20))
        finally:
            for stream in idle:
                await stream.aclose()


async def test_unix_socket_mode_applied(daemon: Daemon) -> None:
    path = daemon.address("socket_map", "unix")
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


async def test_graceful_stop_finishes_in_flight_request(nursery: trio.Nursery, backend: Backend) -> None:
    from tests.conftest import daemon_config, start_daemon

    gate = trio.Event()
    reached = trio.Event()

    async def held(_request: object) -> object:
        reached.set()
        await gate.wait()
        return await backend.routes["/map"](backend.requests[-1])

    backend.routes["/held"] = held  # type: ignore[assignment]
    config = daemon_config(backend.url, timeout="10s").replace("/slow", "/held")
    daemon = await start_daemon(nursery, config, grace=5)
    address = daemon.address("socket_map")
    with trio.fail_after(10):
        idle = await connect(address)
        async with await connect(address) as busy:
            await busy.send_all(netstring(b"slow in-flight"))
            await reached.wait()
            daemon.server.request_stop()
            await trio.sleep(0.05)
            assert await idle.receive_some(10) == b""  # idle connection closed at once
            gate.set()
            assert await read_netstring(busy) == "OK in-flight"  # busy one got its answer
            assert await busy.receive_some(10) == b""  # and was closed after it
        with pytest.raises(OSError):
            await connect(address)  # no longer accepting
        await idle.aclose()


async def test_unix_socket_group_applied(nursery: trio.Nursery, backend: Backend, sock_dir: object) -> None:
    import grp

    from tests.conftest import start_daemon

    group = grp.getgrnam("nogroup")
    config = (
        "server:\n  listen:\n"
        f"    - {{kind: socket_map, type: unix, address: {sock_dir}/g.sock, mode: '0640', group: nogroup}}\n"
        f"socket_maps:\n  echo:\n    target: {backend.url}/map\n    value_field: data.result\n"
    )
    daemon = await start_daemon(nursery, config)
    st = os.stat(daemon.address("socket_map", "unix"))
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (group.gr_gid, 0o640)


async def test_logs_carry_ids_and_never_secrets(nursery: trio.Nursery, backend: Backend) -> None:
    from tests.conftest import start_daemon

    config = (
        "server:\n  listen:\n    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}\n"
        "  logging: {level: debug}\n"
        "socket_maps:\n"
        "  secret:\n"
        f"    target: {backend.url}/status500\n"
        "    http_auth_basic: 'pfxuser:Sup3rSecretPassw0rd'\n"
        "    custom_headers: ['Authorization-Extra: Bearer tok3nVALUEnever', 'X-Api-Key: k3yVALUEnever']\n"
        "    value_field: data.result\n"
    )
    daemon = await start_daemon(nursery, config)
    with trio.fail_after(10):
        assert await socketmap_query(daemon.address("socket_map"), "secret", "k") == "TEMP backend status 500"
    assert backend.requests[-1].headers["authorization"].startswith("Basic ")  # it was sent ...
    text = daemon.log.getvalue()
    for secret in ("Sup3rSecretPassw0rd", "tok3nVALUEnever", "k3yVALUEnever", "cGZ4dXNlcjpTdXAzcl"):
        assert secret not in text  # ... and never logged
    connection_lines = [line for line in text.splitlines() if "listening" not in line]
    assert connection_lines and all("session=" in line for line in connection_lines)
    assert any("request=1" in line and "backend failed" in line for line in connection_lines)


async def test_tcp6_listener(nursery: trio.Nursery, backend: Backend) -> None:
    from tests.conftest import start_daemon

    config = (
        "server:\n  listen:\n    - {kind: socket_map, type: tcp6, address: '[::1]', port: 0}\n"
        f"socket_maps:\n  echo:\n    target: {backend.url}/map\n    value_field: data.result\n"
    )
    daemon = await start_daemon(nursery, config)
    address = daemon.address("socket_map", "tcp6")
    assert address.startswith("[::1]:")
    with trio.fail_after(10):
        assert await socketmap_query(address, "echo", "v6@example.com") == "OK v6@example.com"


async def test_random_garbage_never_stops_the_daemon(daemon: Daemon, backend: Backend) -> None:
    import random

    rng = random.Random(20261121)  # fixed seed: a failure is reproducible
    alphabet = b"0123456789:, =\n\r\x00abc\xff"
    with trio.fail_after(60):
        for _ in range(150):
            size = rng.randint(1, 400)
            garbage = bytes(rng.choice(alphabet) for _ in range(size))
            for kind in ("socket_map", "policy_service"):
                await send_and_drain(daemon.address(kind), garbage)
        assert await socketmap_query(daemon.address("socket_map"), "echo", "after") == "OK after"
        assert await policy_query(daemon.address("policy_service"), {"recipient": "ok@x"}) == "action=OK\n\n"


async def test_idle_connections_time_out_active_ones_do_not(nursery: trio.Nursery, backend: Backend) -> None:
    from pfxhttp.config.model import ListenKind
    from tests.conftest import daemon_config, start_daemon

    timeouts = {ListenKind.SOCKET_MAP: 0.4, ListenKind.POLICY_SERVICE: 0.4}
    daemon = await start_daemon(nursery, daemon_config(backend.url), idle_timeouts=timeouts)
    with trio.fail_after(10):
        async with (
            await connect(daemon.address("socket_map")) as idle,
            await connect(daemon.address("socket_map")) as busy,
        ):
            for i in range(12):  # 1.2 s of traffic, each gap well under the idle timeout
                assert await socketmap_exchange(busy, "echo", f"k{i}") == f"OK k{i}"
                await trio.sleep(0.1)
            assert await idle.receive_some(10) == b""  # closed by the daemon meanwhile
            assert await socketmap_exchange(busy, "echo", "still") == "OK still"
