"""systemd integration: sd_notify to real datagram sockets, sd_listen_fds parsing, inherited listeners, the
daemon started exactly as systemd starts it (descriptors from 3, LISTEN_PID = its pid, NOTIFY_SOCKET), and the
unit files through ``systemd-analyze verify``."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import parse_config
from pfxhttp.config.model import Config, ListenConfig, ListenKind, ListenType, LoggingConfig, LogLevel
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server import systemd
from pfxhttp.server.app import Server
from pfxhttp.server.listeners import BindError, BoundListener, bind
from tests.conftest import Backend, echo_client, policy_query, socketmap_query

ROOT = Path(__file__).resolve().parent.parent
PID = 4242  # a LISTEN_PID for the pure parsing tests; never compared with a real process


# --- sd_notify -----------------------------------------------------------------------------------------------


@pytest.fixture
async def notify_socket() -> AsyncIterator[trio.socket.SocketType]:
    """The receiving end systemd would hold: an AF_UNIX datagram socket that asks for the sender's credentials."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    with sock:
        yield sock


async def receive(sock: trio.socket.SocketType) -> tuple[str, int]:
    """One notification and the pid of its sender (what NotifyAccess=main checks)."""
    data, ancillary, _flags, _address = await sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
    pids = [
        struct.unpack("3i", payload)[0]
        for level, kind, payload in ancillary
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    ]
    assert len(pids) == 1
    return data.decode(), pids[0]


async def test_notify_reaches_a_path_socket(notify_socket: trio.socket.SocketType, sock_dir: Path) -> None:
    path = str(sock_dir / "notify")
    await notify_socket.bind(path)
    with trio.fail_after(5):
        assert systemd.notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": path})
        assert await receive(notify_socket) == ("READY=1\nSTATUS=serving", os.getpid())  # one datagram


async def test_notify_reaches_an_abstract_socket(notify_socket: trio.socket.SocketType) -> None:
    name = f"pfxhttp-test-{uuid.uuid4().hex}"
    await notify_socket.bind("\0" + name)
    with trio.fail_after(5):
        assert systemd.notify(systemd.STOPPING, {"NOTIFY_SOCKET": "@" + name})
        assert (await receive(notify_socket))[0] == "STOPPING=1"


@pytest.mark.parametrize(
    "target",
    [None, "", "relative/notify", "vsock:2:1234", "/nonexistent/dir/notify", "/dev/null", "@", "/x\0y"],
)
def test_notify_without_a_reachable_socket_is_false_and_never_raises(target: str | None) -> None:
    environ = {} if target is None else {"NOTIFY_SOCKET": target}
    assert systemd.notify("READY=1", environ) is False


def test_notify_to_a_stream_socket_is_false(sock_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wrong:
        wrong.bind(str(sock_dir / "stream"))
        wrong.listen()
        assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(sock_dir / "stream")}) is False


async def test_notify_reloading_carries_the_monotonic_clock(
    notify_socket: trio.socket.SocketType, sock_dir: Path
) -> None:
    path = str(sock_dir / "notify")
    await notify_socket.bind(path)
    with trio.fail_after(5):
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert systemd.notify_reloading({"NOTIFY_SOCKET": path})
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        text, _pid = await receive(notify_socket)
    first, second = text.split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=")
    assert before <= int(second.removeprefix("MONOTONIC_USEC=")) <= after


def test_ready_state_keeps_status_on_one_line() -> None:
    assert systemd.ready_state() == "READY=1"
    assert systemd.ready_state("two\nlines\n") == "READY=1\nSTATUS=two lines"


# --- sd_listen_fds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {}),  # not socket-activated
        ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}, {}),  # no LISTEN_PID: not ours
        ({"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "2"}, {}),  # another process's descriptors
        ({"LISTEN_PID": str(PID + 1), "LISTEN_FDS": "garbage"}, {}),  # not ours: not even parsed
        ({"LISTEN_PID": str(PID)}, {}),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "0"}, {}),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "2"}, {"unknown": [3, 4]}),  # no names
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}, {"a": [3], "b": [4]}),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a:b:a"}, {"a": [3, 5], "b": [4]}),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a"}, {"a": [3], "unknown": [4]}),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b:c"}, {"a": [3], "b": [4]}),
        (
            {"LISTEN_PID": str(PID), "LISTEN_FDS": "3", "LISTEN_FDNAMES": "a::c"},
            {"a": [3], "unknown": [4], "c": [5]},
        ),
        ({"LISTEN_PID": str(PID), "LISTEN_FDS": "1", "LISTEN_FDNAMES": ""}, {"unknown": [3]}),
    ],
)
def test_parse_listen_env(environ: dict[str, str], expected: dict[str, list[int]]) -> None:
    assert systemd.parse_listen_env(environ, PID) == expected


@pytest.mark.parametrize(
    ("pid", "fds"),
    [
        ("", "1"),
        ("abc", "1"),
        ("-1", "1"),
        (f" {PID}", "1"),
        (f"+{PID}", "1"),
        ("٤٢٤٢", "1"),  # Arabic-Indic digits: int() takes them, systemd never writes them
        (str(PID), ""),
        (str(PID), "x"),
        (str(PID), "-1"),
        (str(PID), "1.5"),
        (str(PID), "1_0"),
        (str(PID), str(systemd.MAX_LISTEN_FDS + 1)),
        (str(PID), "99999999999999999999"),
        ("9" * 5000, "1"),
    ],
)
def test_malformed_listen_env_is_a_bind_error(pid: str, fds: str) -> None:
    with pytest.raises(BindError, match="socket activation"):
        systemd.parse_listen_env({"LISTEN_PID": pid, "LISTEN_FDS": fds}, PID)


@pytest.mark.parametrize("pid", [PID + 1, "garbage"])
def test_listen_fds_unsets_the_variables_whatever_the_outcome(pid: int | str) -> None:
    environ = {"LISTEN_PID": str(pid), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a", "NOTIFY_SOCKET": "/run/n"}
    if pid == "garbage":
        with pytest.raises(BindError):
            systemd.listen_fds(environ, pid=PID)
    else:
        assert systemd.listen_fds(environ, pid=PID) == {}
    assert environ == {"NOTIFY_SOCKET": "/run/n"}  # LISTEN_* gone, NOTIFY_SOCKET kept for later notifications


# A process that receives the given descriptors at 3.. with LISTEN_PID = its own pid, as systemd starts a
# service; it then runs ``sys.argv[3:]`` with ``python -c`` (pfxhttp.server.systemd calls) or execs pfxhttp.
_SYSTEMD_LIKE = r"""
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
names = sys.argv[2]
# Out of the way first: an inherited descriptor may already sit where another one must go.
high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index, inheritable=True)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=names)
if sys.argv[3] == "-c":
    exec(sys.argv[4])
    sys.exit(0)
try:  # what MemoryDenyWriteExecute=yes enforces, as a kernel >= 6.3 does (PR_SET_MDWE, kept across exec)
    import ctypes
    print("PR_SET_MDWE:", ctypes.CDLL(None).prctl(65, 1, 0, 0, 0), file=sys.stderr)  # 0: enforced
except Exception:
    pass
os.execv(sys.executable, [sys.executable, *sys.argv[3:]])
"""


async def test_listen_fds_in_a_socket_activated_process() -> None:
    probe = r"""
import fcntl, json, os
from pfxhttp.server import systemd
found = systemd.listen_fds()
print(json.dumps({
    "found": found,
    "cloexec": [bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC) for fds in found.values() for fd in fds],
    "left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
}))
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="400", LISTEN_FDNAMES="")
try:
    systemd.listen_fds()
except Exception as exc:
    print(type(exc).__name__, exc)
"""
    with socket.socket() as first, socket.socket() as second:
        fds = f"{first.fileno()},{second.fileno()}"
        with trio.fail_after(30):
            result = await trio.run_process(
                [sys.executable, "-c", _SYSTEMD_LIKE, fds, "map:policy", "-c", probe],
                pass_fds=(first.fileno(), second.fileno()),
                capture_stdout=True,
                capture_stderr=True,
                cwd=ROOT,
            )
    first_line, second_line = result.stdout.decode().splitlines()
    assert json.loads(first_line) == {
        "found": {"map": [3], "policy": [4]},
        "cloexec": [True, True],
        "left": [],
    }
    assert second_line.startswith("BindError socket activation: descriptor 5 is not open")


# --- inherited listeners -------------------------------------------------------------------------------------


def listen(
    kind: ListenKind, type_: ListenType, address: str, fd_name: str | None, name: str = ""
) -> ListenConfig:
    port = 0 if type_ is not ListenType.UNIX else None
    return ListenConfig(kind, name, type_, address, port=port, systemd_socket_name=fd_name)


def stream_listener(family: int, address: str | tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen()
    return sock


async def close_bound(bound: BoundListener) -> None:
    for lst in bound.listeners:
        await lst.aclose()


async def test_bind_adopts_every_descriptor_of_the_name(sock_dir: Path) -> None:
    config = listen(ListenKind.SOCKET_MAP, ListenType.TCP, "127.0.0.1", "map")
    with (
        stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as a,
        stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as b,
    ):
        bound = await bind(config, {"map": [a.fileno(), b.fileno()], "other": [0]})
        try:
            assert bound.inherited
            assert bound.addresses == [f"127.0.0.1:{s.getsockname()[1]}" for s in (a, b)]
        finally:
            await close_bound(bound)
        # The listener closed its own duplicates; systemd's descriptors stay open and listening.
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


async def test_abstract_unix_socket_is_named_as_systemd_writes_it() -> None:
    name = f"pfxhttp-test-{uuid.uuid4().hex}"
    config = listen(ListenKind.SOCKET_MAP, ListenType.UNIX, "/unused.sock", "map")
    with stream_listener(socket.AF_UNIX, "\0" + name) as sock:
        bound = await bind(config, {"map": [sock.fileno()]})
        await close_bound(bound)
    assert bound.addresses == ["@" + name]


async def test_not_socket_activated_binds_the_address(sock_dir: Path) -> None:
    config = listen(ListenKind.SOCKET_MAP, ListenType.UNIX, str(sock_dir / "own.sock"), "map")
    bound = await bind(config, {})
    await close_bound(bound)
    assert not bound.inherited and bound.addresses == [str(sock_dir / "own.sock")]


@pytest.fixture
def odd_descriptors(sock_dir: Path) -> Iterator[dict[str, int]]:
    """Descriptors systemd could be misconfigured to pass, by what is wrong with them."""
    read_end, write_end = os.pipe()
    closed_fd = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1  # the last one: never handed out here
    with pytest.raises(OSError):
        os.fstat(closed_fd)
    socks = {
        "datagram": socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        "not_listening": socket.socket(socket.AF_INET, socket.SOCK_STREAM),
        "inet": stream_listener(socket.AF_INET, ("127.0.0.1", 0)),
        "unix": stream_listener(socket.AF_UNIX, str(sock_dir / "u.sock")),
    }
    try:
        yield {"pipe": read_end, "closed": closed_fd, **{k: s.fileno() for k, s in socks.items()}}
    finally:
        for sock in socks.values():
            sock.close()
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize(
    ("type_", "fd_name", "message"),
    [
        (ListenType.TCP, "datagram", "not a stream socket"),
        (ListenType.TCP, "not_listening", "not listening"),
        (ListenType.TCP, "unix", "AF_UNIX, which a tcp listener cannot serve"),
        (ListenType.TCP6, "inet", "AF_INET, which a tcp6 listener cannot serve"),
        (ListenType.UNIX, "inet", "AF_INET, which a unix listener cannot serve"),
        (ListenType.TCP, "pipe", "is not a socket"),
        (ListenType.TCP, "closed", "is not open"),
        (ListenType.TCP, "missing", "systemd passed no socket named 'missing'"),
    ],
)
async def test_bind_refuses_what_a_listener_cannot_serve(
    odd_descriptors: dict[str, int], type_: ListenType, fd_name: str, message: str
) -> None:
    config = listen(ListenKind.SOCKET_MAP, type_, "127.0.0.1", fd_name)
    inherited = {name: [fd] for name, fd in odd_descriptors.items()}
    with pytest.raises(BindError, match=message):
        await bind(config, inherited)
    for fd in odd_descriptors.values():  # nothing of systemd's was closed by the refusal
        if fd != odd_descriptors["closed"]:
            os.fstat(fd)


# --- the server in-process: inherited sockets and sd_notify --------------------------------------------------

SMALL_CONFIG = """\
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
socket_maps:
  echo:
    target: {url}/map
    payload: '{{"key": "{{{{ .Key }}}}"}}'
    value_field: data.result
policy_services:
  policy:
    target: {url}/policy
    payload: '{{{{ .Key }}}}'
    value_field: policy.result
"""


def config_with(backend_url: str, listeners: Sequence[ListenConfig]) -> Config:
    """The small config with listeners built directly (independent of how the loader spells the key)."""
    base = parse_config(SMALL_CONFIG.format(url=backend_url), "test.yml")
    return dataclasses.replace(base, server=dataclasses.replace(base.server, listen=tuple(listeners)))


def in_process_server(
    config: Config, inherited: Mapping[str, Sequence[int]], notify_environ: Mapping[str, str] | None
) -> tuple[Server, io.StringIO]:
    stream = io.StringIO()
    configure_logging(LoggingConfig(level=LogLevel.DEBUG), stream=stream)
    return Server(
        Runtime(config), get_logger(), grace=1, inherited=inherited, notify_environ=notify_environ
    ), stream


async def test_server_serves_inherited_sockets_and_notifies(
    backend: Backend, sock_dir: Path, notify_socket: trio.socket.SocketType
) -> None:
    notify_path = str(sock_dir / "notify")
    await notify_socket.bind(notify_path)
    unix_path = sock_dir / "policy.sock"
    listeners = [
        listen(ListenKind.SOCKET_MAP, ListenType.TCP, "127.0.0.1", "map"),
        listen(ListenKind.POLICY_SERVICE, ListenType.UNIX, str(unix_path), "policy", name="policy"),
    ]
    with (
        stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as tcp,
        stream_listener(socket.AF_UNIX, str(unix_path)) as unix,
    ):
        server, _log = in_process_server(
            config_with(backend.url, listeners),
            {"map": [tcp.fileno()], "policy": [unix.fileno()]},
            {"NOTIFY_SOCKET": notify_path},
        )
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                assert await receive(notify_socket) == ("READY=1\nSTATUS=serving on 2 socket(s)", os.getpid())
                address = f"127.0.0.1:{tcp.getsockname()[1]}"
                assert await socketmap_query(address, "echo", "inherited@x") == "OK inherited@x"
                assert await policy_query(str(unix_path), {"recipient": "reject@x"}) == (
                    "action=REJECT 5.7.1 rejected by policy\n\n"
                )
                with server.systemd_reloading():
                    assert (await receive(notify_socket))[0].startswith("RELOADING=1\nMONOTONIC_USEC=")
                assert (await receive(notify_socket))[0].startswith("READY=1")
                server.request_stop()
                server.request_stop()  # a second request neither notifies again nor fails
                assert (await receive(notify_socket))[0] == "STOPPING=1"
        assert unix_path.is_socket()  # systemd's socket file: never removed by pfxhttp


async def test_failing_notify_is_logged_and_the_daemon_serves_on(backend: Backend, sock_dir: Path) -> None:
    listeners = [listen(ListenKind.SOCKET_MAP, ListenType.TCP, "127.0.0.1", None)]
    server, log = in_process_server(
        config_with(backend.url, listeners), {}, {"NOTIFY_SOCKET": str(sock_dir / "nobody-listens")}
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            assert await socketmap_query(server.bound[0].addresses[0], "echo", "k") == "OK k"
            server.request_stop()
    text = log.getvalue()
    assert "cannot notify systemd" in text and "READY=1" in text and "STOPPING=1" in text


# --- the daemon as systemd starts it -------------------------------------------------------------------------


async def start_socket_activated(
    config: Path, sockets: Sequence[socket.socket], names: str, notify_path: str, log: Path
) -> trio.Process:
    fds = [s.fileno() for s in sockets]
    env = {**os.environ, "NOTIFY_SOCKET": notify_path}
    with log.open("wb") as err:
        return await trio.lowlevel.open_process(
            [
                sys.executable,
                "-c",
                _SYSTEMD_LIKE,
                ",".join(map(str, fds)),
                names,
                "-m",
                "pfxhttp",
                "--config",
                str(config),
            ],
            pass_fds=fds,
            env=env,
            cwd=ROOT,
            stderr=err,
        )


async def test_daemon_socket_activated_end_to_end(
    backend: Backend, sock_dir: Path, tmp_path: Path, notify_socket: trio.socket.SocketType
) -> None:
    notify_path = str(sock_dir / "notify")
    await notify_socket.bind(notify_path)
    unix_path = sock_dir / "policy.sock"
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        SMALL_CONFIG.format(url=backend.url).replace(
            "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}\n",
            "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0, systemd_socket_name: map}\n"
            "    - {kind: policy_service, name: policy, type: unix, "
            f"address: {unix_path}, systemd_socket_name: policy}}\n",
        )
    )
    loaded = parse_config(config.read_text(), str(config))
    assert [lst.systemd_socket_name for lst in loaded.server.listen] == ["map", "policy"], (
        "the config loader does not load systemd_socket_name",
        loaded.warnings,
    )
    log = tmp_path / "daemon.log"
    with (
        stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as tcp1,
        stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as tcp2,  # one unit, two ListenStream=: one name
        stream_listener(socket.AF_UNIX, str(unix_path)) as unix,
    ):
        inode = unix_path.stat().st_ino
        with trio.fail_after(30):
            process = await start_socket_activated(
                config, [tcp1, tcp2, unix], "map:map:policy", notify_path, log
            )
            try:
                assert await receive(notify_socket) == ("READY=1\nSTATUS=serving on 3 socket(s)", process.pid)
                for tcp in (tcp1, tcp2):
                    address = f"127.0.0.1:{tcp.getsockname()[1]}"
                    assert await socketmap_query(address, "echo", "a@b") == "OK a@b"
                reply = await policy_query(str(unix_path), {"recipient": "dunno@x"})
                assert reply == "action=DUNNO\n\n"
                process.send_signal(signal.SIGTERM)
                assert await receive(notify_socket) == ("STOPPING=1", process.pid)
                assert await process.wait() == 0
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        assert unix_path.is_socket() and unix_path.stat().st_ino == inode, log.read_text()
    text = log.read_text()
    assert "cannot notify" not in text and "stopped" in text


async def test_daemon_refuses_to_start_when_a_named_socket_was_not_passed(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        SMALL_CONFIG.format(url=backend.url).replace("port: 0}", "port: 0, systemd_socket_name: map}")
    )
    log = tmp_path / "daemon.log"
    with stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as other, trio.fail_after(30):
        process = await start_socket_activated(config, [other], "policy", str(sock_dir / "notify"), log)
        try:
            assert await process.wait() == 71  # EX_OSERR, as for any listener that cannot be bound
        finally:
            if process.returncode is None:
                process.kill()
    assert "systemd passed no socket named 'map'" in log.read_text()


# --- unit files ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (package systemd)"
)
async def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart= binaries exist: point them at the one this checkout installed.
    pfxhttp = shutil.which("pfxhttp", path=str(Path(sys.executable).parent)) or "/bin/true"
    for unit in (ROOT / "systemd").iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/local/bin/pfxhttp", pfxhttp))
    with trio.fail_after(60):
        result = await trio.run_process(
            # An instance name for the template: verify loads pfxhttp@.socket for it.
            [
                "systemd-analyze",
                "verify",
                "--man=no",
                "pfxhttp.service",
                "pfxhttp.socket",
                "pfxhttp@policy.socket",
            ],
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        )
    # verify exits 0 even for unknown keys or bad values: any message at all is a finding.
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_unit_files_carry_the_settings_pfxhttp_relies_on() -> None:
    service = (ROOT / "systemd" / "pfxhttp.service").read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=pfxhttp",
    ):
        assert f"\n{line}\n" in service
    template = (ROOT / "systemd" / "pfxhttp@.socket").read_text()
    assert "\nFileDescriptorName=%i\n" in template and "\nService=pfxhttp.service\n" in template
    assert "\nFileDescriptorName=socketmap\n" in (ROOT / "systemd" / "pfxhttp.socket").read_text()


async def test_systemd_start_reload_under_load_and_stop_lose_no_request(
    backend: Backend, sock_dir: Path, tmp_path: Path, notify_socket: trio.socket.SocketType
) -> None:
    """The issue's 'done when': started as systemd does (descriptors, NOTIFY_SOCKET), reloaded 20 times by
    SIGHUP while clients keep asking, stopped: every request answered, every reload announced and finished."""
    notify_path = str(sock_dir / "notify")
    await notify_socket.bind(notify_path)
    config = tmp_path / "pfxhttp.yml"
    config.write_text(
        SMALL_CONFIG.format(url=backend.url).replace(
            "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}\n",
            "    - {kind: socket_map, type: tcp, address: 127.0.0.1, port: 0, systemd_socket_name: map}\n",
        )
    )
    replies: list[str] = []
    log = tmp_path / "daemon.log"
    with stream_listener(socket.AF_INET, ("127.0.0.1", 0)) as tcp, trio.fail_after(60):
        address = f"127.0.0.1:{tcp.getsockname()[1]}"
        process = await start_socket_activated(config, [tcp], "map", notify_path, log)
        try:
            assert (await receive(notify_socket))[0].startswith("READY=1")
            done = trio.Event()

            async with trio.open_nursery() as clients:
                for i in range(8):
                    clients.start_soon(echo_client, address, i, replies, done)
                for _ in range(20):
                    process.send_signal(signal.SIGHUP)
                    state, pid = await receive(notify_socket)
                    assert state.startswith("RELOADING=1\nMONOTONIC_USEC=") and pid == process.pid
                    assert (await receive(notify_socket))[0].startswith("READY=1")
                done.set()
            process.send_signal(signal.SIGTERM)
            assert await receive(notify_socket) == ("STOPPING=1", process.pid)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert len(replies) > 100
    assert [r for r in replies if not r.startswith("OK c")] == []
    assert log.read_text().count("configuration reloaded") == 20
