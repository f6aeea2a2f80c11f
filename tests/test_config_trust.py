"""Root never reads a configuration another user could have written: the search path and the file checks.

The attack these tests replay: a local user plants ``./pfxhttp.yml`` (or ``~/.pfxhttp/pfxhttp.yml``) that sends
a root-only file as a login password to their own token endpoint, and waits for root to run ``pfxhttp query``
in that directory. Files are made by root and handed to ``nobody`` with chown: no second account is created.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from pfxhttp.config import find_config, load_config
from pfxhttp.config import loader as loader_module
from pfxhttp.config.trust import read_config_bytes
from pfxhttp.demo.httpd import HttpReply, HttpRequest
from pfxhttp.errors import ConfigError
from tests.conftest import Backend, json_reply

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the rules under test apply to root only")
MINIMAL = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 0}\n"


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def planted_config(token_endpoint: str, secret: Path) -> str:
    """The attacker's config: a map behind a login whose password is a file only root may read."""
    return (
        MINIMAL
        + "socket_maps:\n  aliases:\n    target: http://127.0.0.1:1/map\n    value_field: v\n    jwt_auth:\n"
        + f"      token_endpoint: {token_endpoint}\n"
        + f"      credentials: {{username: root, password_file: {secret}}}\n"
    )


@needs_root
async def test_root_does_not_search_the_working_directory_or_home(backend: Backend, tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    stolen: list[bytes] = []

    async def login(request: HttpRequest) -> HttpReply:
        stolen.append(request.body)
        return json_reply({"token": "t", "expires_in": 60})

    backend.routes["/steal"] = login
    text = planted_config(f"{backend.url}/steal", secret)
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    (home / ".pfxhttp").mkdir(parents=True)
    cwd.mkdir()
    (cwd / "pfxhttp.yml").write_text(text)
    (home / ".pfxhttp" / "pfxhttp.yml").write_text(text)
    uid, gid = nobody()
    for path in (cwd, cwd / "pfxhttp.yml", home, home / ".pfxhttp", home / ".pfxhttp" / "pfxhttp.yml"):
        os.chown(path, uid, gid)
    environ = {**os.environ, "HOME": str(home)}
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "pfxhttp", "query", "aliases", "x@example.com"],
            cwd=cwd,
            env=environ,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert stolen == []
    if not any(p.is_file() for p in loader_module.search_path()):  # no system-wide config on this machine
        assert result.returncode == 78, result.stderr
        assert b"no configuration file found" in result.stderr
        assert str(cwd).encode() not in result.stderr and str(home).encode() not in result.stderr


def test_the_search_path_of_root_has_only_system_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert [str(p) for p in loader_module.search_path(euid=0)] == [
        "/usr/local/etc/pfxhttp/pfxhttp.yml",
        "/etc/pfxhttp/pfxhttp.yml",
    ]
    assert [str(p) for p in loader_module.search_path(euid=1000)] == [
        "/usr/local/etc/pfxhttp/pfxhttp.yml",
        "/etc/pfxhttp/pfxhttp.yml",
        "/home/someone/.pfxhttp/pfxhttp.yml",
        "pfxhttp.yml",
    ]


def test_find_config_as_root_ignores_a_planted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pfxhttp.yml").write_text(MINIMAL)
    (tmp_path / ".pfxhttp").mkdir()
    (tmp_path / ".pfxhttp" / "pfxhttp.yml").write_text(MINIMAL)
    system = tmp_path / "etc" / "pfxhttp.yml"
    monkeypatch.setattr(
        loader_module,
        "DEFAULT_SEARCH_PATH",
        (system, Path("$HOME/.pfxhttp/pfxhttp.yml"), Path("pfxhttp.yml")),
    )
    assert find_config(None, euid=1000) == tmp_path / ".pfxhttp" / "pfxhttp.yml"
    with pytest.raises(ConfigError, match="no configuration file found"):
        find_config(None, euid=0)
    system.parent.mkdir()
    system.write_text(MINIMAL)
    assert find_config(None, euid=0) == system


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.message


@needs_root
def test_root_refuses_a_config_file_others_can_write(tmp_path: Path) -> None:
    uid, _ = nobody()
    config = tmp_path / "pfxhttp.yml"
    config.write_text(MINIMAL)
    config.chmod(0o644)
    assert load_config(config).source == str(config)  # root's, 0644: fine
    os.chown(config, uid, 0)
    assert refusal(config) == f"refusing the configuration file {config} as root: it belongs to uid {uid}"
    os.chown(config, 0, 0)
    config.chmod(0o664)
    assert (
        refusal(config)
        == f"refusing the configuration file {config} as root: group 0 may write it (mode 0664)"
    )
    config.chmod(0o646)
    assert "every user may write it (mode 0646)" in refusal(config)
    config.chmod(0o600)
    assert load_config(config).source == str(config)
    # Explicit --config or the search: the same rule, through the command line too.
    config.chmod(0o666)
    result = subprocess.run(
        [sys.executable, "-m", "pfxhttp", "check", "--config", str(config)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78
    assert b"every user may write it (mode 0666)" in result.stderr


@needs_root
def test_root_refuses_a_config_in_a_directory_others_can_write(tmp_path: Path) -> None:
    uid, gid = nobody()
    directory = tmp_path / "conf"
    directory.mkdir(mode=0o755)
    config = directory / "pfxhttp.yml"
    config.write_text(MINIMAL)
    config.chmod(0o600)
    os.chown(directory, uid, gid)  # nobody could rename another file into its place
    message = refusal(config)
    assert message.startswith(f"refusing the configuration file {config} as root: its directory {directory}")
    assert message.endswith(f"(it belongs to uid {uid})")
    os.chown(directory, 0, 0)
    directory.chmod(0o777)
    assert "every user may write it (mode 0777)" in refusal(config)
    directory.chmod(0o1777)  # sticky, like /tmp: only root may rename root's file there
    assert load_config(config).source == str(config)
    directory.chmod(0o755)
    # A link from an untrusted place to a trusted file is fine: the real path is what is checked and read.
    untrusted = tmp_path / "theirs"
    untrusted.mkdir()
    os.chown(untrusted, uid, gid)
    (untrusted / "link.yml").symlink_to(config)
    assert load_config(untrusted / "link.yml").source == str(untrusted / "link.yml")
    # A link in a trusted place to a file in an untrusted directory is not.
    (untrusted / "real.yml").write_text(MINIMAL)
    (directory / "to-theirs.yml").symlink_to(untrusted / "real.yml")
    assert f"its directory {untrusted} is not root's alone" in refusal(directory / "to-theirs.yml")


def test_other_users_read_their_own_files_as_before(tmp_path: Path) -> None:
    config = tmp_path / "pfxhttp.yml"
    config.write_text(MINIMAL)
    config.chmod(0o666)
    assert read_config_bytes(config, euid=1000) == MINIMAL.encode()  # not root: no ownership rules
    if os.geteuid() == 0:
        with pytest.raises(ConfigError, match="every user may write it"):
            read_config_bytes(config, euid=0)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "pfxhttp.yml"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_config_bytes(fifo, euid=os.geteuid())
