"""Connection limits and the deadlines on clients that stall, through the real daemon on real sockets.

server.max_connections and a listener's max_connections: at the limit a new connection closes the one that has
waited on its client the longest; accepting pauses only while every connection is being answered. A client
trickling a request byte by byte meets the frame deadline; one that never reads its replies, the write
deadline. The metrics port has a cap of its own and closes after a 401. The same through Postfix, with 2,000
hostile connections, is tests/test_connlimit_e2e.py.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

import h11
import pytest
import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import parse_config
from pfxhttp.config.model import BasicAuth, ListenKind, LoggingConfig, LogLevel, MetricsConfig
from pfxhttp.errors import ConfigErrors
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.protocol.netstring import encode as netstring
from pfxhttp.server import limits
from pfxhttp.server.app import Server
from pfxhttp.server.metrics import Metrics
from pfxhttp.server.metrics_http import MAX_CONNECTIONS as METRICS_MAX_CONNECTIONS
from tests.conftest import Backend, Daemon, connect, daemon_config, socketmap_exchange, socketmap_query


def limited_config(
    backend_url: str, server_limit: int | None = None, listener_limit: int | None = None
) -> str:
    """The shared test configuration with the connection limits set (on the first listener: socket_map)."""
    text = daemon_config(backend_url)
    if listener_limit is not None:
        text = text.replace(
            "{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}",
            f"{{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0, max_connections: {listener_limit}}}",
        )
    if server_limit is not None:
        text = text.replace("server:\n", f"server:\n  max_connections: {server_limit}\n", 1)
    return text


async def start(
    nursery: trio.Nursery,
    text: str,
    *,
    frame_timeout: float = 10.0,
    write_timeout: float = 10.0,
    idle_timeout: float = 60.0,
    metrics: MetricsConfig | None = None,
) -> Daemon:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level=LogLevel.DEBUG), stream=stream)
    config = parse_config(text, "test.yml")
    if metrics is not None:
        import dataclasses

        config = dataclasses.replace(config, server=dataclasses.replace(config.server, metrics=metrics))
    server = Server(
        Runtime(config, metrics=Metrics.for_config(config)),
        get_logger(),
        grace=1.0,
        idle_timeouts=dict.fromkeys(ListenKind, idle_timeout),
        frame_timeout=frame_timeout,
        write_timeout=write_timeout,
    )
    await nursery.start(server.serve)
    return Daemon(server, stream)


async def until(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait (polling; bounded) until ``condition()`` holds."""
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)
    assert condition(), what


async def closed_by_peer(stream: trio.abc.Stream) -> bool:
    """True when the daemon has closed ``stream`` (EOF or reset), False when it is open and silent."""
    with trio.move_on_after(0.2):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True
    return False


def counted(daemon: Daemon) -> int:
    return daemon.server.context.registry.counted()


async def test_at_the_server_limit_a_new_connection_closes_the_longest_idle_one(
    nursery: trio.Nursery, backend: Backend
) -> None:
    daemon = await start(nursery, limited_config(backend.url, server_limit=3))
    address, policy = daemon.address("socket_map"), daemon.address("policy_service")
    with trio.fail_after(10):
        oldest = await connect(address)
        await until(lambda: counted(daemon) == 1, "first connection registered")
        middle = await connect(policy)  # the limit counts every listener together
        await until(lambda: counted(daemon) == 2, "second connection registered")
        used = await connect(address)
        assert await socketmap_exchange(used, "echo", "a") == "OK a"  # idle since its reply: the youngest
        assert counted(daemon) == 3
        newcomer = await connect(address)
        assert await socketmap_exchange(newcomer, "echo", "b") == "OK b"
        assert await closed_by_peer(oldest)
        assert counted(daemon) == 3
        assert not await closed_by_peer(middle)
        assert await socketmap_exchange(used, "echo", "c") == "OK c"
        # Postfix's next lookup on a connection closed so simply reconnects: only the limit's count stays.
        assert await socketmap_query(address, "echo", "d") == "OK d"
        assert counted(daemon) <= 3
        assert daemon.server.context.registry.evictions >= 2
        for stream in (oldest, middle, used, newcomer):
            await stream.aclose()


async def test_a_listener_limit_closes_only_that_listeners_connections(
    nursery: trio.Nursery, backend: Backend
) -> None:
    daemon = await start(nursery, limited_config(backend.url, listener_limit=2))
    address, policy = daemon.address("socket_map"), daemon.address("policy_service")
    with trio.fail_after(10):
        other = await connect(policy)  # older than all, but another listener's
        await until(lambda: counted(daemon) == 1, "policy connection registered")
        first = await connect(address)
        await until(lambda: counted(daemon) == 2, "first socketmap connection registered")
        second = await connect(address)
        await until(lambda: counted(daemon) == 3, "second socketmap connection registered")
        third = await connect(address)
        assert await socketmap_exchange(third, "echo", "x") == "OK x"
        assert await closed_by_peer(first)
        assert not await closed_by_peer(other)
        assert not await closed_by_peer(second)
        for stream in (other, first, second, third):
            await stream.aclose()


async def test_accepting_pauses_while_every_connection_is_being_answered(
    nursery: trio.Nursery, backend: Backend
) -> None:
    daemon = await start(nursery, limited_config(backend.url, server_limit=2))
    address = daemon.address("socket_map")
    order: list[str] = []
    most = 0

    async def lookup(name: str, key: str) -> None:
        async with await connect(address) as stream:
            reply = await socketmap_exchange(stream, name, key)
        order.append(f"{key}: {reply}")

    with trio.fail_after(15):
        async with trio.open_nursery() as clients:
            clients.start_soon(lookup, "slow", "s1")  # the backend answers after 5 s; the timeout is 1 s
            clients.start_soon(lookup, "slow", "s2")
            await until(lambda: backend.count("/slow") == 2, "both slow requests with the backend")
            assert daemon.server.context.registry.busy() == 2
            clients.start_soon(lookup, "echo", "late")  # waits in the listen backlog: none can be closed
            while len(order) < 3:
                most = max(most, counted(daemon))
                await trio.sleep(0.01)
    assert sorted(order[:2]) == ["s1: TIMEOUT backend timeout", "s2: TIMEOUT backend timeout"]
    assert order[2] == "late: OK late"
    assert most <= 2
    assert daemon.server.context.registry.evictions == 0


async def test_a_request_trickled_byte_by_byte_meets_the_frame_deadline(
    nursery: trio.Nursery, backend: Backend
) -> None:
    # Each byte comes well within the idle timeout (2 s): only the frame deadline can end the connection.
    daemon = await start(nursery, daemon_config(backend.url), frame_timeout=1.5, idle_timeout=2.0)
    address = daemon.address("socket_map")
    with trio.fail_after(15):
        async with await connect(address) as stream:
            await stream.send_all(b"9000:echo ")
            closed = False
            for _ in range(40):  # up to 8 s of trickling
                try:
                    await stream.send_all(b"k")
                except trio.BrokenResourceError:
                    closed = True
                    break
                if await closed_by_peer(stream):
                    closed = True
                    break
            assert closed, "a trickling client kept its connection"
        assert await socketmap_query(address, "echo", "after") == "OK after"
    assert backend.count("/map") == 1  # the trickled request never reached the backend


async def test_a_client_that_never_reads_its_replies_meets_the_write_deadline(
    nursery: trio.Nursery, backend: Backend
) -> None:
    daemon = await start(nursery, daemon_config(backend.url), write_timeout=1.0)
    host, port = daemon.address("socket_map").rsplit(":", 1)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a reply or two
    with trio.fail_after(15), sock:
        await sock.connect((host, int(port)))
        pipelined = netstring(b"length 90000") * 30  # 2.7 MB of replies
        await sock.send(pipelined)
        await until(lambda: len(daemon.server.context.registry) == 1, "connection registered")
        await until(lambda: len(daemon.server.context.registry) == 0, "never-reading client closed", 10)
        assert backend.count("/length") < 30  # it stopped answering once its replies were not taken
        assert await socketmap_query(daemon.address("socket_map"), "echo", "after") == "OK after"


async def http_exchange(
    stream: trio.abc.Stream, conn: h11.Connection, headers: list[tuple[str, str]]
) -> tuple[int, dict[str, str]]:
    request = h11.Request(method="GET", target="/metrics", headers=[("Host", "localhost"), *headers])
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    status, found = 0, {}
    while True:  # bounded by the caller's fail_after
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status, found = event.status_code, {k.decode().lower(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.EndOfMessage):
            return status, found


async def test_the_metrics_port_caps_its_connections_and_closes_after_a_401(
    nursery: trio.Nursery, backend: Backend
) -> None:
    auth = BasicAuth("prometheus", "secret")
    daemon = await start(
        nursery, daemon_config(backend.url), metrics=MetricsConfig(enabled=True, port=0, basic_auth=auth)
    )
    endpoint = daemon.server.metrics_endpoint
    assert endpoint is not None
    address = endpoint.addresses[0]
    with trio.fail_after(15):
        idle = []
        for _ in range(METRICS_MAX_CONNECTIONS):
            idle.append(await connect(address))
            await trio.sleep(0.01)  # accepted in this order: the first is the oldest
        assert not await closed_by_peer(idle[0])
        newcomer = await connect(address)
        assert await closed_by_peer(idle[0])  # the oldest made room
        assert not await closed_by_peer(idle[-1])
        assert endpoint.open_connections == METRICS_MAX_CONNECTIONS
        # Without credentials: 401 and the connection is closed, not kept for the next guess.
        conn = h11.Connection(h11.CLIENT)
        status, headers = await http_exchange(newcomer, conn, [])
        assert status == 401
        assert headers["connection"] == "close"
        assert await newcomer.receive_some(1) == b""
        for stream in (*idle, newcomer):
            await stream.aclose()


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("  max_connections: 0\n", "server.max_connections"),
        ("  max_connections: many\n", "server.max_connections"),
        ("  max_connections: 2000000\n", "server.max_connections"),
    ],
)
def test_a_bad_max_connections_is_a_config_error_with_its_line(snippet: str, message: str) -> None:
    text = daemon_config("http://127.0.0.1:1").replace("server:\n", "server:\n" + snippet, 1)
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "t.yml")
    assert "t.yml:2:" in str(info.value)
    assert message in str(info.value)


def test_max_connections_defaults_and_listener_limit_above_the_server_one() -> None:
    config = parse_config(daemon_config("http://127.0.0.1:1"), "t.yml")
    assert config.server.max_connections == 1024
    assert all(listen.max_connections is None for listen in config.server.listen)
    config = parse_config(limited_config("http://127.0.0.1:1", server_limit=10, listener_limit=20), "t.yml")
    assert config.server.listen[0].max_connections == 20
    assert any("server.max_connections (10), which applies first" in w for w in config.warnings)
    bad = limited_config("http://127.0.0.1:1", listener_limit=0)
    with pytest.raises(ConfigErrors, match=r"server\.listen\[0\]\.max_connections"):
        parse_config(bad, "t.yml")


async def test_the_connection_limit_stays_below_the_descriptor_limit(
    nursery: trio.Nursery, backend: Backend
) -> None:
    daemon = await start(nursery, limited_config(backend.url, server_limit=1_000_000))
    assert daemon.server.max_connections() == limits.connection_cap() < 1_000_000
    assert "above what RLIMIT_NOFILE allows" in daemon.log.getvalue()
