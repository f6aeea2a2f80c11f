"""SIGHUP reload: validated first, listeners added/removed, in-flight requests finish, no request fails."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from pfxhttp.backend.compile import check_entry
from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import load_config
from pfxhttp.config.model import Config, LoggingConfig, LogLevel
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server.app import Server
from pfxhttp.server.daemon import reload_configuration, restart_keys
from tests.conftest import Backend, echo_client, pfxhttp_process, socketmap_query

BASE = """
server:
  listen:
    - {{kind: socket_map, type: unix, address: {sock}/map.sock}}
{extra_listener}
  logging: {{level: {level}}}
  http_client: {{timeout: 2s}}
socket_maps:
  echo:
    target: {url}/map
    value_field: data.result
    custom_headers: ["X-Generation: {generation}"]
{extra_map}
"""


def write_config(
    path: Path, url: str, sock: Path, generation: int, *, second: bool = False, level: str = "info"
) -> None:
    path.write_text(
        BASE.format(
            url=url,
            sock=sock,
            generation=generation,
            level=level,
            extra_listener=f"    - {{kind: socket_map, type: unix, address: {sock}/second.sock}}"
            if second
            else "",
            extra_map=f"  later:\n    target: {url}/map\n    value_field: data.result\n" if second else "",
        )
    )


async def test_twenty_reloads_under_load_lose_no_request(
    nursery: trio.Nursery, backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "pfxhttp.yml"
    write_config(config_path, backend.url, sock_dir, 0)
    configure_logging(LoggingConfig(level=LogLevel.ERROR))
    config = load_config(config_path, entry_check=check_entry)
    server = Server(Runtime(config), get_logger(), grace=2)
    await nursery.start(server.serve)
    address = str(sock_dir / "map.sock")
    replies: list[str] = []
    done = trio.Event()

    with trio.fail_after(60):
        async with trio.open_nursery() as clients:
            for i in range(16):
                clients.start_soon(echo_client, address, i, replies, done, 2000)
            for generation in range(1, 21):
                write_config(config_path, backend.url, sock_dir, generation, second=generation % 2 == 1)
                assert await reload_configuration(server, config_path, {})
                await trio.sleep(0.02)
            done.set()
    assert len(replies) > 100
    failed = [r for r in replies if not r.startswith("OK c")]
    assert failed == []
    generations = {r.headers.get("x-generation") for r in backend.requests}
    assert generations >= {"0", "20"}  # requests really went out under the old and the new configurations


async def test_listeners_added_removed_and_invalid_file_keeps_serving(
    nursery: trio.Nursery, backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "pfxhttp.yml"
    write_config(config_path, backend.url, sock_dir, 0)
    configure_logging(LoggingConfig(level=LogLevel.ERROR))
    server = Server(Runtime(load_config(config_path, entry_check=check_entry)), get_logger(), grace=2)
    await nursery.start(server.serve)
    with trio.fail_after(20):
        assert await socketmap_query(str(sock_dir / "map.sock"), "later", "x") == "PERM unknown map"
        write_config(config_path, backend.url, sock_dir, 1, second=True)
        assert await reload_configuration(server, config_path, {})
        assert (
            await socketmap_query(str(sock_dir / "second.sock"), "later", "x") == "OK x"
        )  # new listener, map
        write_config(config_path, backend.url, sock_dir, 2)
        assert await reload_configuration(server, config_path, {})
        assert not (sock_dir / "second.sock").exists()  # removed listener: socket gone
        assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "y") == "OK y"
        config_path.write_text(config_path.read_text().replace("value_field", "value_feild"))
        assert not await reload_configuration(server, config_path, {})  # invalid: refused ...
        assert await socketmap_query(str(sock_dir / "map.sock"), "echo", "z") == "OK z"  # ... old one serves


async def test_sighup_reloads_a_running_daemon(backend: Backend, sock_dir: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "pfxhttp.yml"
    write_config(config_path, backend.url, sock_dir, 0)
    log = tmp_path / "daemon.log"
    with trio.fail_after(30):
        async with pfxhttp_process("--config", str(config_path), output=log) as process:
            while not (sock_dir / "map.sock").exists():
                await trio.sleep(0.02)
            write_config(config_path, backend.url, sock_dir, 1, second=True, level="debug")
            process.send_signal(signal.SIGHUP)
            while not (sock_dir / "second.sock").exists():
                await trio.sleep(0.02)
            assert await socketmap_query(str(sock_dir / "second.sock"), "later", "k") == "OK k"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    text = log.read_text()
    assert "configuration reloaded" in text
    assert "socketmap request" in text  # the reload switched the log level to debug
    assert os.path.exists(sock_dir) and not (sock_dir / "map.sock").exists()


def parsed(path: Path, url: str, sock: Path, server_extra: str) -> Config:
    write_config(path, url, sock, 0)
    text = path.read_text().replace(
        "  logging:", f"{server_extra}  logging:" if server_extra else "  logging:"
    )
    path.write_text(text)
    return load_config(path, entry_check=check_entry)


def test_restart_keys_single_process_and_supervisor(tmp_path: Path, sock_dir: Path) -> None:
    file = tmp_path / "pfxhttp.yml"
    url = "http://127.0.0.1:9"
    plain = parsed(file, url, sock_dir, "")
    metrics = parsed(file, url, sock_dir, "  metrics: {enabled: true, port: 9}\n")
    workers = parsed(file, url, sock_dir, "  workers: 3\n")
    user = parsed(file, url, sock_dir, "  run_as_user: nobody\n")
    assert restart_keys(plain, plain, supervised=False) == []
    assert restart_keys(plain, metrics, supervised=False) == ["server.metrics"]
    assert restart_keys(plain, workers, supervised=False) == ["server.workers"]
    assert restart_keys(plain, user, supervised=False) == ["server.run_as_user/run_as_group"]
    # The supervisor starts a generation of the new size, and refuses metrics before it gets here.
    assert restart_keys(workers, plain, supervised=True) == []
    assert restart_keys(workers, user, supervised=True) == ["server.run_as_user/run_as_group"]


async def test_sighup_names_what_only_a_restart_applies(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "pfxhttp.yml"
    write_config(config_path, backend.url, sock_dir, 0)
    log = tmp_path / "daemon.log"
    with trio.fail_after(30):
        async with pfxhttp_process("--config", str(config_path), output=log) as process:
            while not (sock_dir / "map.sock").exists():
                await trio.sleep(0.02)
            write_config(config_path, backend.url, sock_dir, 1, second=True)
            config_path.write_text(config_path.read_text().replace("  logging:", "  workers: 2\n  logging:"))
            process.send_signal(signal.SIGHUP)
            while not (sock_dir / "second.sock").exists():  # the rest of the file applies
                await trio.sleep(0.02)
            assert await socketmap_query(str(sock_dir / "second.sock"), "later", "k") == "OK k"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    lines = log.read_text().splitlines()
    restart = [line for line in lines if "restart to apply" in line]
    assert len(restart) == 1 and "server.workers" in restart[0]
    assert not any("worker=" in line or '"worker"' in line for line in lines)  # still one process


async def test_a_sighup_as_soon_as_a_socket_exists_reloads_and_never_kills(
    backend: Backend, sock_dir: Path, tmp_path: Path
) -> None:
    # The first socket file appears while the daemon still binds the other listeners (each a thread hop for its
    # staging directory) and drops privileges: a SIGHUP then used to meet its default action and kill it.
    config_path = tmp_path / "pfxhttp.yml"
    extra = "".join(
        f"    - {{kind: socket_map, type: unix, address: {sock_dir}/extra{i}.sock, mode: '0660'}}\n"
        for i in range(12)
    )
    log = tmp_path / "daemon.log"
    for attempt in range(3):
        write_config(config_path, backend.url, sock_dir, attempt)
        config_path.write_text(config_path.read_text().replace("  logging:", extra + "  logging:"))
        with trio.fail_after(30):
            async with pfxhttp_process("--config", str(config_path), output=log) as process:
                while not (sock_dir / "map.sock").exists():
                    await trio.sleep(0.001)
                process.send_signal(signal.SIGHUP)
                while "configuration reloaded" not in log.read_text():
                    assert process.poll() is None, log.read_text()
                    await trio.sleep(0.02)
                assert await socketmap_query(str(sock_dir / "extra11.sock"), "echo", "k") == "OK k"
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
