"""Process plumbing of the benchmark runner (bench/run.py): the daemon, the backend, the idle helper, /proc.

Every process started here is stopped on the way out of its context manager, whatever happens (and
bench/run.sh's trap catches a runner killed hard, through the pid and marker files in the state directory).
Every wait is bounded. Subprocesses get fixed argument lists built here, never a shell.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KIT = Path(os.environ.get("KIT", ROOT.parent / "shared" / "bench"))
PY = os.environ.get("PY", str(ROOT / ".venv" / "bin" / "python"))
MAP_PORT, POLICY_PORT = 23460, 23461  # as in bench/pfxhttp-bench.yml
BACKEND = "http://127.0.0.1:18080/health"
# nginx.sh keeps its pid file there ($RUNDIR, else $TMPDIR/pfxhttp-bench-nginx); bench/run.sh sets RUNDIR.
NGINX_RUNDIR = Path(os.environ.get("RUNDIR") or Path(tempfile.gettempdir()) / "pfxhttp-bench-nginx")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
MAX_RUN_SECONDS = 1800  # pfxload's -maxdur; the runner waits a minute longer before killing it


# --- the daemon's processes ------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(session id, CPU ticks utime+stime, RSS in KiB) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()  # fields[0] is field 3 (state) of proc(5)
    return int(fields[3]), int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE_KB


def session_usage(sid: int) -> tuple[float, int, list[int]]:
    """CPU seconds and RSS (KiB) summed over the processes of session ``sid`` (the daemon and its workers)."""
    ticks = rss = 0
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat is not None and stat[0] == sid:
            ticks += stat[1]
            rss += stat[2]
            pids.append(int(entry.name))
    return ticks / CLK_TCK, rss, sorted(pids)


def pss_kb(pids: list[int]) -> int | None:
    """Summed PSS (KiB) of ``pids``: with pre-forked workers, summed RSS counts each shared page per process."""
    total = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            return None
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total


def wait_for_port(port: int, daemon: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(150):  # 15 s
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited ({daemon.returncode}):\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"the daemon does not listen on 127.0.0.1:{port}:\n{tail(log)}")


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def daemon_running(config: Path, state: Path) -> Iterator[int]:
    """Start the daemon in its own session (its workers share it); stop the whole session on the way out."""
    for port in (MAP_PORT, POLICY_PORT):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            raise SystemExit(f"127.0.0.1:{port} is already taken (another pfxhttp on the benchmark ports?)")
    log = state / "daemon.log"
    with log.open("wb") as stderr:
        daemon = subprocess.Popen(  # noqa: S603
            [PY, "-m", "pfxhttp", "--config", str(config), "run"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )
    pid_file = state / "daemon.pid"
    pid_file.write_text(str(daemon.pid))  # for bench/run.sh's trap, should this process be killed hard
    try:
        wait_for_port(MAP_PORT, daemon, log)
        wait_for_port(POLICY_PORT, daemon, log)
        yield daemon.pid
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon died during the benchmark:\n{tail(log)}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=15)
        for _ in range(50):  # workers may outlive the master briefly
            if not session_usage(daemon.pid)[2]:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def nginx_master() -> int | None:
    """The pid in the benchmark nginx's pid file (nginx.sh keeps it in RUNDIR), if any."""
    with contextlib.suppress(OSError, ValueError):
        return int((NGINX_RUNDIR / "nginx.pid").read_text().strip())
    return None


@contextlib.contextmanager
def backend_running(state: Path) -> Iterator[None]:
    """The fixed-JSON nginx of ../shared/bench. Stopped afterwards only if this run started it and it is
    still the same nginx (someone else may have restarted the shared one meanwhile)."""
    nginx = [str(KIT / "nginx.sh")]
    status = subprocess.run([*nginx, "status"], capture_output=True, check=False, timeout=30)  # noqa: S603
    ours: int | None = None
    marker = state / "nginx.started"  # for bench/run.sh's trap: the master pid this run started
    if status.returncode != 0:
        marker.write_text("")
        subprocess.run([*nginx, "start"], check=True, capture_output=True, timeout=60)  # noqa: S603
        ours = nginx_master()
        marker.write_text(str(ours or ""))
    try:
        for _ in range(50):
            with contextlib.suppress(OSError), urllib.request.urlopen(BACKEND, timeout=2) as reply:
                if reply.status == 200:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"the backend does not answer at {BACKEND}")
        yield
    finally:
        if ours is not None and nginx_master() == ours:
            subprocess.run([*nginx, "stop"], capture_output=True, check=False, timeout=60)  # noqa: S603
        marker.unlink(missing_ok=True)


@contextlib.contextmanager
def idle_connections(count: int, state: Path) -> Iterator[dict[str, Any]]:
    """bench/idle_conns.py holding ``count`` connections on the policy listener; its summary at the end."""
    summary: dict[str, Any] = {}
    if count <= 0:
        yield summary
        return
    command = [PY, str(HERE / "idle_conns.py"), "--addr", f"127.0.0.1:{POLICY_PORT}", "--count", str(count)]
    helper = subprocess.Popen(  # noqa: S603
        [*command, "--max-seconds", str(MAX_RUN_SECONDS + 120)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    (state / "idle.pid").write_text(str(helper.pid))
    try:
        assert helper.stdout is not None
        ready = helper.stdout.readline().split()  # "ready N"; EOF if it failed
        if len(ready) != 2 or ready[0] != "ready":
            raise SystemExit("bench/idle_conns.py could not open its connections")
        summary["opened"] = int(ready[1])
        # "ready" means connected, not accepted: let the daemon take them all in before anything is measured.
        settle(POLICY_PORT)
        yield summary
        helper.send_signal(signal.SIGTERM)
        out, _ = helper.communicate(timeout=30)
        settle(POLICY_PORT)  # and let it close them before the next run
        with contextlib.suppress(ValueError):
            summary.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        if helper.poll() is None:
            helper.kill()
            helper.wait(timeout=10)
        (state / "idle.pid").unlink(missing_ok=True)


SETTLE_SECONDS = 1.0


def accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the loopback listener on ``port`` (/proc/net/tcp: for a
    LISTEN socket, rx_queue is the accept-queue length)."""
    waiting = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                waiting += int(fields[4].split(":")[1], 16)
    return waiting


def settle(port: int) -> None:
    """Wait (bounded) until the daemon has accepted every queued connection on ``port``, then SETTLE_SECONDS
    more for it to finish with them (accept, first receive, or close)."""
    deadline = time.monotonic() + 30
    while accept_queue(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(SETTLE_SECONDS)


def git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)  # noqa: S603, S607
        if done.returncode == 0:
            return done.stdout.strip()
    return ""
