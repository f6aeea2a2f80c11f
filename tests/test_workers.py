"""server.workers > 1: the real daemon as a supervisor with worker processes, a real local HTTP backend, spoken
to on the wire: requests spread over the workers, SIGHUP starts a new generation under load without losing a
request, an invalid file keeps the running workers, a killed worker is replaced, SIGTERM stops everything,
and systemd hears READY=1 from the supervisor only once every worker serves.

Which worker answered is read from the workers' own debug log lines (every line of a worker carries its pid).
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
import trio

from pfxhttp.backend.compile import check_entry
from pfxhttp.config import load_config
from pfxhttp.config.model import LoggingConfig, LogLevel
from pfxhttp.demo.httpd import HttpReply, HttpRequest
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server.supervisor import Supervisor
from tests.conftest import Backend, echo_client, json_reply, pfxhttp_process, socketmap_query, unused_port
from tests.test_systemd import receive, start_socket_activated, stream_listener

CONFIG = """\
server:
  workers: {workers}
  listen:
    - {{kind: socket_map, type: {type}, address: {address}{extra}}}
  logging: {{level: debug}}
  http_client: {{timeout: 2s}}
socket_maps:
  echo:
    target: {url}{path}
    value_field: data.result
"""


def write_config(
    path: Path,
    url: str,
    address: str,
    *,
    workers: int = 2,
    target: str = "/map",
    type_: str = "unix",
    extra: str = "",
) -> None:
    path.write_text(
        CONFIG.format(workers=workers, type=type_, address=address, extra=extra, url=url, path=target)
    )


async def second_version(request: HttpRequest) -> HttpReply:
    return json_reply({"data": {"result": "v2-" + orjson.loads(request.body)["key"]}})


def ready_workers(text: str, generation: int | None = None) -> list[int]:
    """Worker pids the supervisor saw report ready, in order (of one generation if given)."""
    pids = []
    for line in text.splitlines():
        if "] worker ready " not in line:
            continue
        found = re.search(r"generation=(\d+)", line)
        if generation is None or (found is not None and int(found.group(1)) == generation):
            pids.append(int(re.findall(r"pid=(\d+)", line)[0]))
    return pids


class DaemonLog:
    """The daemon's log file (supervisor and workers), read incrementally: it grows by several lines per
    request at debug level, too fast to read whole in a polling loop. Keeps the info-and-above lines and the
    pids on the workers' own 'socketmap request' lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[str] = []
        self.answering: set[int] = set()
        self._offset = 0
        self._partial = b""

    def text(self) -> str:
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            if "socketmap request" in line:
                self.answering.update(int(pid) for pid in re.findall(r"pid=(\d+)", line))
            elif "[debug" not in line:
                self.lines.append(line)
        return "\n".join(self.lines)

    def answered_by(self) -> set[int]:
        self.text()
        return self.answering


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(
    condition: Callable[[], bool], what: str, log: DaemonLog | None = None, timeout: float = 30
) -> None:
    """Poll ``condition`` (bounded by ``timeout``); on failure show the end of the daemon's log."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.02)
        return
    tail = "\n".join(log.text().splitlines()[-40:]) if log is not None else ""
    raise AssertionError(f"never happened: {what}\n{tail}")


async def burst(address: str, clients: int, each: int, tag: str) -> list[str]:
    replies: list[str] = []

    async def client(i: int) -> None:
        for n in range(each):
            replies.append(await socketmap_query(address, "echo", f"{tag}{i}-{n}"))

    async with trio.open_nursery() as nursery:
        for i in range(clients):
            nursery.start_soon(client, i)
    return replies


async def test_spread_reload_under_load_invalid_reload_and_stop(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    backend.routes["/v2"] = second_version
    config, output = tmp_path / "pfxhttp.yml", tmp_path / "daemon.log"
    log = DaemonLog(output)
    address = str(sock_dir / "map.sock")
    write_config(config, backend.url, address, workers=2)
    with trio.fail_after(50):
        async with pfxhttp_process("--config", str(config), output=output) as process:
            await until(lambda: "workers ready" in log.text(), "first generation ready", log)
            first = ready_workers(log.text(), generation=1)
            assert len(first) == 2 and process.pid not in first

            # The kernel spreads connections over the processes waiting in accept() on the shared socket.
            for _ in range(40):
                assert all(r.startswith("OK s") for r in await burst(address, 8, 5, "s"))
                if len(log.answered_by()) >= 2:
                    break
            assert log.answered_by() == set(first)

            # SIGHUP under load: a new generation (3 workers, another target) takes over; nothing fails.
            replies: list[str] = []
            done = trio.Event()

            async with trio.open_nursery() as clients:
                for i in range(8):
                    clients.start_soon(echo_client, address, i, replies, done)
                await until(lambda: len(replies) > 50, "load before the reload", log)
                write_config(config, backend.url, address, workers=3, target="/v2")
                process.send_signal(signal.SIGHUP)
                await until(lambda: "configuration reloaded" in log.text(), "reload", log)
                await until(lambda: not any(alive(pid) for pid in first), "old generation gone", log)
                served = len(replies)
                await until(lambda: len(replies) > served + 50, "load after the switch-over", log)
                done.set()
            failed = [r for r in replies if not re.fullmatch(r"OK (v2-)?c\d+-\d+", r)]
            assert failed == []
            assert any(r.startswith("OK c") for r in replies) and replies[-1].startswith("OK v2-c")
            second = ready_workers(log.text(), generation=2)
            assert len(second) == 3 and not set(second) & set(first)

            # An invalid file: every problem logged, no new generation, the running one serves on.
            config.write_text(config.read_text().replace("value_field", "value_feild"))
            process.send_signal(signal.SIGHUP)
            await until(lambda: "configuration reload failed" in log.text(), "invalid reload refused", log)
            assert await socketmap_query(address, "echo", "after") == "OK v2-after"
            assert ready_workers(log.text(), generation=3) == [] and all(map(alive, second))

            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert not any(alive(pid) for pid in second)
    assert not (sock_dir / "map.sock").exists()
    text = log.text()
    assert "value_feild" in text and "Traceback" not in text


async def test_a_killed_worker_is_restarted(backend: Backend, sock_dir: Path, tmp_path: Path) -> None:
    config, output = tmp_path / "pfxhttp.yml", tmp_path / "daemon.log"
    log = DaemonLog(output)
    address = str(sock_dir / "map.sock")
    write_config(config, backend.url, address, workers=2)
    with trio.fail_after(40):
        async with pfxhttp_process("--config", str(config), output=output) as process:
            await until(lambda: "workers ready" in log.text(), "workers ready", log)
            victim, survivor = ready_workers(log.text())
            os.kill(victim, signal.SIGKILL)
            await until(lambda: len(ready_workers(log.text())) == 3, "a replacement worker", log)
            replacement = ready_workers(log.text())[2]
            assert replacement not in (victim, survivor) and alive(survivor)
            for _ in range(40):  # until the replacement has answered too
                assert all(r.startswith("OK k") for r in await burst(address, 4, 5, "k"))
                if replacement in log.answered_by():
                    break
            assert replacement in log.answered_by()
            assert await socketmap_query(address, "echo", "x") == "OK x"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    text = log.text()
    assert "worker exited unexpectedly, restarting it" in text and "killed by SIGKILL" in text
    assert not alive(replacement) and not alive(survivor)


@pytest.fixture
async def notify_socket(sock_dir: Path) -> AsyncIterator[tuple[trio.socket.SocketType, str]]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    with sock:
        await sock.bind(str(sock_dir / "notify"))
        yield sock, str(sock_dir / "notify")


async def test_socket_activated_supervisor_notifies_once_all_workers_serve(
    backend: Backend, sock_dir: Path, tmp_path: Path, notify_socket: tuple[trio.socket.SocketType, str]
) -> None:
    receiver, notify_path = notify_socket
    config, output = tmp_path / "pfxhttp.yml", tmp_path / "daemon.log"
    log = DaemonLog(output)
    write_config(
        config, backend.url, "127.0.0.1", workers=2, type_="tcp", extra=", port: 0, systemd_socket_name: map"
    )
    with stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as tcp, trio.fail_after(40):
        address = f"127.0.0.1:{tcp.getsockname()[1]}"
        process = await start_socket_activated(config, [tcp], "map", notify_path, output)
        try:
            state, sender = await receive(receiver)
            assert (state, sender) == ("READY=1\nSTATUS=2 workers serving on 1 socket(s)", process.pid)
            text = log.text()  # written before READY=1 was sent: both workers serve already
            workers = ready_workers(text)
            assert len(workers) == 2
            assert {
                int(p)
                for line in text.splitlines()
                if "] listening " in line
                for p in re.findall(r"pid=(\d+)", line)
            } == set(workers)
            for pid in workers:  # only the supervisor may notify (NotifyAccess=main); no LISTEN_* either
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                assert not [v for v in environ if v.startswith((b"NOTIFY_SOCKET=", b"LISTEN_"))]
            assert await socketmap_query(address, "echo", "a@b") == "OK a@b"
            process.send_signal(signal.SIGHUP)
            state, sender = await receive(receiver)
            assert state.startswith("RELOADING=1\nMONOTONIC_USEC=") and sender == process.pid
            assert await receive(receiver) == (
                "READY=1\nSTATUS=2 workers serving on 1 socket(s)",
                process.pid,
            )
            assert len(ready_workers(log.text(), generation=2)) == 2
            assert await socketmap_query(address, "echo", "c@d") == "OK c@d"
            process.send_signal(signal.SIGTERM)
            assert await receive(receiver) == ("STOPPING=1", process.pid)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        # systemd's socket: still listening after the supervisor and its workers are gone
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def in_process_supervisor(config_path: Path) -> tuple[Supervisor, io.StringIO]:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level=LogLevel.INFO), stream=stream)
    config = load_config(config_path, entry_check=check_entry)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PFXHTTP_")}
    return Supervisor(config, get_logger(), environ=environ), stream


FAILING = (sys.executable, "-c", "raise SystemExit(78)")  # a worker that exits at once, as with a bad file


async def test_a_new_generation_that_cannot_start_leaves_the_running_one(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    backend.routes["/v2"] = second_version
    config = tmp_path / "pfxhttp.yml"
    address = str(sock_dir / "map.sock")
    write_config(config, backend.url, address, workers=2)
    supervisor, log = in_process_supervisor(config)
    codes: list[int] = []

    async def run() -> None:
        codes.append(await supervisor.run())

    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await until(lambda: supervisor.current is not None, "workers ready")
            assert await socketmap_query(address, "echo", "before") == "OK before"
            write_config(config, backend.url, address, workers=2, target="/v2")
            supervisor.command = FAILING
            assert not await supervisor.reload(config)
            assert await socketmap_query(address, "echo", "after") == "OK after"  # the old file's target
            supervisor.request_stop()
    assert codes == [0]
    assert "the new workers did not start" in log.getvalue() and "exit status 78" in log.getvalue()
    assert not (sock_dir / "map.sock").exists()


async def test_workers_that_cannot_start_at_all_fail_the_start(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pfxhttp.yml"
    write_config(config, backend.url, str(sock_dir / "map.sock"), workers=3)
    supervisor, log = in_process_supervisor(config)
    supervisor.command = FAILING
    with trio.fail_after(20):
        assert await supervisor.run() == 78
    assert "workers could not start" in log.getvalue()
    assert not (sock_dir / "map.sock").exists()


async def test_metrics_with_workers_are_refused(backend: Backend, sock_dir: Path, tmp_path: Path) -> None:
    config, output = tmp_path / "pfxhttp.yml", tmp_path / "daemon.log"
    write_config(config, backend.url, str(sock_dir / "map.sock"))
    config.write_text(
        config.read_text().replace(
            "  logging:", f"  metrics: {{enabled: true, port: {unused_port()}}}\n  logging:"
        )
    )
    with trio.fail_after(20):
        async with pfxhttp_process("--config", str(config), output=output) as process:
            assert await process.wait() == 78  # EX_CONFIG: each process would count only its own requests
    text = output.read_text()
    assert "server.workers" in text and "workers > 1 cannot be combined with server.metrics" in text
    assert not (sock_dir / "map.sock").exists()  # refused before anything was bound
