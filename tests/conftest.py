"""Shared fixtures: a programmable real HTTP backend on loopback and the real daemon served in-process."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import parse_config
from pfxhttp.config.model import ListenKind, LoggingConfig, LogLevel, MetricsConfig
from pfxhttp.demo.httpd import HttpReply, HttpRequest, serve_http
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.protocol.netstring import NetstringDecoder
from pfxhttp.protocol.netstring import encode as netstring
from pfxhttp.server.app import Server
from pfxhttp.server.metrics import Metrics

Route = Callable[[HttpRequest], Awaitable[HttpReply]]


def json_reply(document: object, status: int = 200) -> HttpReply:
    return HttpReply(status, orjson.dumps(document))


@dataclass
class Backend:
    """A real HTTP server whose answers are set per path by the test; records every request."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[HttpRequest] = field(default_factory=list)
    url: str = ""

    async def __call__(self, request: HttpRequest) -> HttpReply:
        self.requests.append(request)
        path = request.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:  # "PREFIX*" routes match any path starting with PREFIX (REST-style resources)
            matches = [p for p in self.routes if p.endswith("*") and path.startswith(p[:-1])]
            route = self.routes[max(matches, key=len)] if matches else None
        if route is None:
            return HttpReply(404, b'{"error":"no such route"}')
        return await route(request)

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path.split("?", 1)[0] == path)


async def echo_key(request: HttpRequest) -> HttpReply:
    return json_reply({"data": {"result": orjson.loads(request.body)["key"]}})


async def value_of_length(request: HttpRequest) -> HttpReply:
    return json_reply({"data": {"result": "v" * int(orjson.loads(request.body)["key"])}})


async def status_500(_request: HttpRequest) -> HttpReply:
    return json_reply({"error": "internal"}, 500)


async def status_404(_request: HttpRequest) -> HttpReply:
    return json_reply({"error": "not-found"}, 404)


async def not_json(_request: HttpRequest) -> HttpReply:
    return HttpReply(200, b"<html>oops</html>", (("Content-Type", "text/html"),))


async def absent(_request: HttpRequest) -> HttpReply:
    return json_reply({"data": {}})


async def sleepy(_request: HttpRequest) -> HttpReply:
    await trio.sleep(5)
    return json_reply({"data": {"result": "too late"}})


async def policy_by_recipient(request: HttpRequest) -> HttpReply:
    """Action chosen by the recipient's local part (what a private smtpd can steer)."""
    attrs = orjson.loads(request.body)
    local = attrs.get("recipient", "").split("@", 1)[0].lower()
    actions = {
        "reject": "REJECT 5.7.1 rejected by policy",
        "defer": "DEFER_IF_PERMIT 4.7.1 try again later",
        "dunno": "DUNNO",
        "ok": "OK",
        "prepend": "PREPEND X-Pfxhttp-Policy: tagged",
        "injection": "DUNNO\naction=OK",
    }
    if local == "fail":
        return json_reply({"error": "down"}, 503)
    if local == "slow":
        await trio.sleep(5)
    return json_reply({"policy": {"result": actions.get(local, "DUNNO")}})


DEFAULT_ROUTES: dict[str, Route] = {
    "/map": echo_key,
    "/length": value_of_length,
    "/status500": status_500,
    "/status404": status_404,
    "/notjson": not_json,
    "/absent": absent,
    "/slow": sleepy,
    "/policy": policy_by_recipient,
}


@pytest.fixture
async def backend(nursery: trio.Nursery) -> Backend:
    server = Backend(routes=dict(DEFAULT_ROUTES))
    port = await nursery.start(serve_http, server)
    server.url = f"http://127.0.0.1:{port}"
    return server


def daemon_config(backend_url: str, unix_dir: Path | None = None, timeout: str = "1s") -> str:
    """A config exercising every contract row: one socket map per backend behaviour."""
    maps = {
        "echo": "/map",
        "length": "/length",
        "fivehundred": "/status500",
        "fourofour": "/status404",
        "notjson": "/notjson",
        "absent": "/absent",
        "slow": "/slow",
    }
    lines = [
        "server:",
        "  listen:",
        "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}",
        "    - {kind: policy_service, name: policy, type: tcp, address: 127.0.0.1, port: 0}",
        "    - {kind: tcp_table, name: echo, type: tcp, address: 127.0.0.1, port: 0}",
        "    - {kind: tcp_table, name: fivehundred, type: tcp, address: 127.0.0.1, port: 0}",
        "    - {kind: tcp_table, name: absent, type: tcp, address: 127.0.0.1, port: 0}",
    ]
    if unix_dir is not None:
        lines.append(f"    - {{kind: socket_map, type: unix, address: {unix_dir}/map.sock, mode: '0660'}}")
        lines.append(
            f"    - {{kind: policy_service, name: policy, type: unix, address: {unix_dir}/policy.sock}}"
        )
    lines += [
        "  logging: {level: debug}",
        f"  http_client: {{timeout: {timeout}}}",
        "socket_maps:",
        "  defaults:",
        '    payload: \'{"key": "{{ .Key }}"}\'',
        "    value_field: data.result",
        "    error_field: error",
        "    no_error_value: not-found",
    ]
    for name, path in maps.items():
        lines += [f"  {name}:", f"    target: {backend_url}{path}"]
    lines += [
        "policy_services:",
        "  policy:",
        f"    target: {backend_url}/policy",
        "    payload: '{{ .Key }}'",
        "    value_field: policy.result",
    ]
    return "\n".join(lines) + "\n"


def unused_port() -> int:
    """A loopback TCP port nobody listens on right now (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Daemon:
    server: Server
    log: io.StringIO

    def address(self, kind: str, type_: str = "tcp") -> str:
        for bound in self.server.bound:
            if bound.config.kind.value == kind and bound.config.type.value == type_:
                return bound.addresses[0]
        raise KeyError((kind, type_))

    def tcp_table(self, name: str) -> str:
        for bound in self.server.bound:
            if bound.config.kind.value == "tcp_table" and bound.config.name == name:
                return bound.addresses[0]
        raise KeyError(name)

    def port(self, kind: str) -> int:
        return int(self.address(kind).rsplit(":", 1)[1])


async def start_daemon(
    nursery: trio.Nursery,
    config_text: str,
    grace: float = 2.0,
    idle_timeouts: dict[ListenKind, float] | None = None,
    metrics: MetricsConfig | None = None,  # replaces server.metrics of config_text
) -> Daemon:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level=LogLevel.DEBUG), stream=stream)
    config = parse_config(config_text, "test.yml")
    if metrics is not None:
        config = dataclasses.replace(config, server=dataclasses.replace(config.server, metrics=metrics))
    runtime = Runtime(config, metrics=Metrics.for_config(config))
    server = Server(runtime, get_logger(), grace=grace, idle_timeouts=idle_timeouts)
    await nursery.start(server.serve)
    return Daemon(server, stream)


@dataclass
class Captured:
    """Log lines written by the real structlog set-up (JSON), as the daemon would write them."""

    stream: io.StringIO
    log: Any

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["level"] == "error"]


@pytest.fixture
def captured() -> Iterator[Captured]:
    stream = io.StringIO()
    configure_logging(LoggingConfig(json=True, level=LogLevel.DEBUG), stream=stream)
    yield Captured(stream, get_logger())
    structlog.reset_defaults()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path holds at most 107 bytes; pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="pfx-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def daemon(nursery: trio.Nursery, backend: Backend, sock_dir: Path) -> Daemon:
    return await start_daemon(nursery, daemon_config(backend.url, sock_dir))


@contextlib.asynccontextmanager
async def pfxhttp_process(
    *args: str, output: Path, merge_stdout: bool = False
) -> AsyncIterator[trio.Process]:
    """``python -m pfxhttp ARGS`` as a real process, its stderr (and stdout if asked) in ``output``; killed on
    the way out if the test did not stop it itself."""
    with output.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "pfxhttp", *args], stderr=sink, stdout=sink if merge_stdout else None
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def pfxhttp_check(config: Path, *, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """``python -m pfxhttp check --config CONFIG`` run to its end (within ``timeout``), output captured."""
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, "-m", "pfxhttp", "check", "--config", str(config)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def connect(address: str) -> trio.abc.Stream:
    if address.startswith("/"):
        return await trio.open_unix_socket(address)
    host, port = address.rsplit(":", 1)
    return await trio.open_tcp_stream(host.strip("[]"), int(port))


async def socketmap_exchange(stream: trio.abc.Stream, name: str, key: str) -> str:
    """Send one request on an open connection and return the reply payload."""
    await stream.send_all(netstring(f"{name} {key}".encode()))
    return await read_netstring(stream)


async def read_netstring(stream: trio.abc.Stream) -> str:
    decoder = NetstringDecoder(max_length=10_000_000)
    while (payload := decoder.next()) is None:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("connection closed before a reply")
        decoder.feed(data)
    return payload.decode()


async def socketmap_query(address: str, name: str, key: str) -> str:
    async with await connect(address) as stream:
        return await socketmap_exchange(stream, name, key)


async def echo_client(
    address: str, index: int, replies: list[str], done: trio.Event, most: int = 100_000
) -> None:
    """One client of a test load: lookups of ``c<index>-<n>`` in the map "echo" until ``done`` is set (at most
    ``most``: every loop bounded), each reply appended to ``replies``."""
    for n in range(most):
        if done.is_set():
            return
        replies.append(await socketmap_query(address, "echo", f"c{index}-{n}"))


async def read_policy_reply(stream: trio.abc.Stream) -> str:
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise EOFError("connection closed before a reply")
        data += chunk
    return data.decode()


async def policy_query(address: str, attrs: dict[str, str]) -> str:
    async with await connect(address) as stream:
        await stream.send_all("".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n")
        return await read_policy_reply(stream)
