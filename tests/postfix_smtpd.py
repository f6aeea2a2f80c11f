"""A private Postfix 3.7 master + smtpd on 127.0.0.1, for policy servers under test (postmap,
``postfix_available`` and ``HarnessError`` are in tests/postfix_harness.py).

API:

* ``async with private_smtpd(tmp_path, policy_service="inet:127.0.0.1:PORT", extra_main_cf={...},
  policy_stage=PolicyStage.RECIPIENT) as smtpd:`` runs a private master + smtpd on 127.0.0.1;
  ``await smtpd.send_mail(mail_from=..., rcpt_to=[...], data=..., helo=..., xclient={...})`` returns an
  ``SmtpTransaction``: ``replies`` (step, command, code, text) and ``message`` (the ``ReceivedMessage``
  that reached the sink through ``smtpd_proxy_filter``, headers included, or None).
* ``postfix_reachable_dir()`` / ``grant_postfix_access(path)`` for unix-socket servers that smtpd must reach.

The SMTP client and the sink are in tests/smtp_wire.py.

smtpd, observed: REJECT text -> ``554 5.7.1 <rcpt>: Recipient address rejected: text``; DEFER_IF_PERMIT ->
450 4.7.1; DUNNO and OK -> 250 and the message reaches the sink; PREPEND puts the header above Received:. A
policy server that closes without replying is asked twice (``smtpd_policy_service_try_limit = 2``, 1 s
apart), then ``451 4.3.5 ... Server configuration problem``; a silent one likewise after 2 x
``smtpd_policy_service_timeout`` (2 s here) + 1 s. With try_limit = 1, after one failure every later request
of that smtpd process fails at once ("Application error") and the connection is never re-opened: do not use
it. One policy connection serves many SMTP sessions of the same smtpd process.

Why a private master, not ``smtpd -S`` (stand-alone on stdin): smtpd needs the trivial-rewrite service
(``private/rewrite``) at MAIL FROM, which only master can run (stand-alone trivial-rewrite answers one
request and skips its handshake); and smtpd run as root without ``-u`` counts as "stand-alone" and skips all
restrictions. ``master -d`` with a two-service master.cf starts in ~10 ms; accepted mail goes to the
in-harness sink via ``smtpd_proxy_filter``, so no cleanup, qmgr or queue file is involved.

Gotchas handled (see postfix_templates/ for the config): config files are written dated a minute back,
because Postfix re-reads a file changed within the last ~2 s, napping 300 ms each time; master runs in its
own session and, on exit, its daemons are stopped while master still runs so that it reaps them (orphans
would be reaped by PID 1, which here takes seconds: ``pgrep`` would still list them); the runtime directory
is a short 0755 one under /tmp, since daemons run as ``postfix`` and use absolute socket paths (pytest's
tmp_path lies under a 0700 directory); logs are ``maillog_file`` datagrams that the harness receives on
``public/postlog`` itself (no postlogd, no syslog; kept in ``smtpd.log_lines`` and ``tmp_path/postfix.log``);
rate limits are 0 so anvil is never called; ``relay_domains = static:ALL`` stops the mandatory relay check
from masking policy answers. Client/helo/sender-stage replies come at RCPT time (``smtpd_delay_reject``).
No SASL server is configured: ``xclient={"LOGIN": name}`` gives policy requests a ``sasl_username``.
Needs root (master refuses otherwise).
"""

from __future__ import annotations

import contextlib
import enum
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from tests.postfix_harness import MASTER, HarnessError, ParamValue, _write_aged, make_postfix_config_dir
from tests.smtp_wire import (
    ReceivedMessage,
    SmtpReply,
    SmtpSink,
    SmtpStep,
    SmtpTransaction,
    dot_stuff,
    run_dialogue,
)

MAX_LOG_LINES = 5000
TEMPLATES = Path(__file__).parent / "postfix_templates"


class PolicyStage(enum.Enum):
    """Where ``check_policy_service`` is placed; the value is the main.cf restriction list."""

    CLIENT = "smtpd_client_restrictions"
    HELO = "smtpd_helo_restrictions"
    SENDER = "smtpd_sender_restrictions"
    RECIPIENT = "smtpd_recipient_restrictions"
    DATA = "smtpd_data_restrictions"
    END_OF_DATA = "smtpd_end_of_data_restrictions"


def _template(name: str, **fill: object) -> str:
    text = (TEMPLATES / name).read_text()
    for key, value in fill.items():
        text = text.replace(f"@{key.upper()}@", str(value))
    return text


def _smtpd_params(run_dir: Path, sink_port: int) -> dict[str, ParamValue]:
    """postfix_templates/main.cf as a dict, so that overrides replace lines instead of repeating them
    (a repeated parameter makes every Postfix program warn "overriding earlier entry")."""
    params: dict[str, ParamValue] = {}
    for line in _template("main.cf", run_dir=run_dir, sink_port=sink_port).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            params[name.strip()] = value.strip()
    return params


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _owner_ids(mail_owner: str) -> tuple[int, int]:
    entry = pwd.getpwnam(mail_owner)
    return entry.pw_uid, entry.pw_gid


def _make_queue_skeleton(run_dir: Path, mail_owner: str) -> None:
    """The directories master and its daemons use; private/ holds their sockets and belongs to mail_owner."""
    for sub in ("queue/pid", "queue/public", "queue/private", "data"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    uid, gid = _owner_ids(mail_owner)
    for sub in ("queue/private", "data"):
        os.chown(run_dir / sub, uid, gid)
    os.chmod(run_dir / "queue/private", 0o700)


def _write_configs(run_dir: Path, params: Mapping[str, ParamValue], smtpd_port: int) -> None:
    make_postfix_config_dir(run_dir, **params)
    _write_aged(run_dir / "postfix/master.cf", _template("master.cf", smtpd_port=smtpd_port))


@contextlib.contextmanager
def postfix_reachable_dir(prefix: str = "pfxh-") -> Iterator[Path]:
    """A short 0755 directory under /tmp for unix sockets that Postfix daemons (user postfix) must reach."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short, world-searchable (docstring)
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def grant_postfix_access(socket_path: Path) -> None:
    """Let user postfix connect to a unix socket: every parent directory must be searchable (o+x), and
    connect(2) needs write permission on the socket file itself."""
    os.chmod(socket_path, 0o666)
    for parent in socket_path.parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


class _PostfixLog:
    """Bounded log of the instance; tasks can wait for the next line."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=MAX_LOG_LINES)
        self._changed = trio.Event()

    def append(self, line: str) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = trio.Event()

    async def next_line(self) -> None:
        await self._changed.wait()

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def receive(self, sock: trio.socket.SocketType) -> None:
        """Collect maillog datagrams from public/postlog; ends by cancellation when the instance stops."""
        while True:
            self.append((await sock.recv(65536)).decode("utf-8", "replace").rstrip("\n"))

    async def watch(self, proc: trio.Process) -> None:
        await proc.wait()
        self.append(f"harness: master pid {proc.pid} exited with status {proc.returncode}")


@dataclass
class PrivateSmtpd:
    """A running private Postfix smtpd; see :func:`private_smtpd`."""

    port: int
    run_dir: Path
    config_dir: Path
    master_pid: int
    _sink: SmtpSink
    _log: _PostfixLog
    _lock: trio.Lock = field(default_factory=trio.Lock)
    host: str = "127.0.0.1"

    @property
    def log_lines(self) -> list[str]:
        """Postfix's log so far (master, smtpd, trivial-rewrite), oldest first."""
        return list(self._log.lines)

    @property
    def sink_messages(self) -> list[ReceivedMessage]:
        return list(self._sink.messages)

    async def send_mail(
        self,
        *,
        mail_from: str,
        rcpt_to: Sequence[str],
        data: str | bytes = "Subject: harness\r\n\r\nhello\r\n",
        helo: str = "client.harness.test",
        mail_params: str = "",
        xclient: Mapping[str, str] | None = None,
    ) -> SmtpTransaction:
        """One SMTP session: EHLO, [XCLIENT + EHLO], MAIL, each RCPT, DATA if any RCPT got 2xx, QUIT.

        Stops early when the greeting, EHLO or MAIL is refused or smtpd closes the connection. Addresses are
        sent inside <>; ``mail_params`` is appended to MAIL FROM (e.g. "SMTPUTF8"). Sessions on one instance
        run one at a time so each message can be matched to its transaction. Bound it with trio.fail_after.
        """
        body = dot_stuff(data.encode() if isinstance(data, str) else data)
        replies: list[SmtpReply] = []
        async with self._lock:
            before = len(self._sink.messages)
            async with await trio.open_tcp_stream(self.host, self.port) as stream:
                await run_dialogue(stream, replies, mail_from, rcpt_to, body, helo, mail_params, xclient)
            received = self._sink.messages[before:]
        accepted = any(r.step is SmtpStep.MESSAGE and r.code // 100 == 2 for r in replies)
        return SmtpTransaction(tuple(replies), received[-1] if accepted and received else None)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc (Linux)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _signal_all(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def _stop_master(proc: trio.Process, log: _PostfixLog) -> None:
    """Stop the daemons while master still runs, so that master reaps them; then stop master.

    master's own SIGTERM handler signals its group and exits at once (master(8)); the daemons it leaves
    are reparented to PID 1, which in this sandbox reaps zombies only every few seconds.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for _ in range(100):  # bounded: 1 s per signal
            daemons = [pid for pid in group_members(proc.pid) if pid != proc.pid]
            if not daemons:
                break
            _signal_all(daemons, sig)
            await trio.sleep(0.01)
    _signal_all([proc.pid], signal.SIGTERM)
    with trio.move_on_after(5):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    leftovers = group_members(proc.pid)  # only if master died early and orphaned its daemons
    _signal_all(leftovers, signal.SIGKILL)
    if leftovers:
        log.append(f"harness: killed orphaned Postfix daemons {leftovers}")


@dataclass
class _Processes:
    """The master processes started for one instance (several when a port race forced a retry)."""

    started: list[trio.Process] = field(default_factory=list)


@contextlib.asynccontextmanager
async def private_smtpd(
    tmp_path: Path,
    *,
    policy_service: str | None,
    extra_main_cf: Mapping[str, ParamValue] | None = None,
    policy_stage: PolicyStage = PolicyStage.RECIPIENT,
    startup_timeout: float = 20,
) -> AsyncIterator[PrivateSmtpd]:
    """Run a private master + smtpd on 127.0.0.1 (a free port) until the block exits.

    ``policy_service`` is what follows ``check_policy_service`` (``inet:127.0.0.1:PORT``, ``unix:/PATH``, or
    the ``{ inet:..., timeout=1s, default_action=DUNNO }`` form); the restriction list of ``policy_stage``
    becomes ``check_policy_service SERVICE, permit``. ``extra_main_cf`` overrides any parameter last.
    Runtime files live in a short world-searchable dir under /tmp (see the module docstring); on exit the
    Postfix log is written to ``tmp_path/postfix.log`` and every process of the instance is gone.
    """
    if os.geteuid() != 0:
        raise HarnessError("private_smtpd needs root: master(8) refuses to run otherwise")
    log = _PostfixLog()
    sink = SmtpSink(log.append)
    processes = _Processes()
    params_extra = dict(extra_main_cf or {})
    try:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, sink.handle, 0, host="127.0.0.1"))
            sink_port = listeners[0].socket.getsockname()[1]
            with postfix_reachable_dir() as run_dir, contextlib.ExitStack() as stack:
                try:
                    params = _smtpd_params(run_dir, sink_port)
                    if policy_service is not None:
                        params[policy_stage.value] = f"check_policy_service {policy_service}, permit"
                    params.update(params_extra)
                    await trio.to_thread.run_sync(_make_queue_skeleton, run_dir, str(params["mail_owner"]))
                    log_sock = stack.enter_context(trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
                    await log_sock.bind(str(run_dir / "queue/public/postlog"))
                    os.chmod(run_dir / "queue/public/postlog", 0o666)  # daemons log as mail_owner
                    nursery.start_soon(log.receive, log_sock)
                    yield await _start_master(nursery, run_dir, params, sink, log, processes, startup_timeout)
                finally:
                    with trio.CancelScope(shield=True):
                        for proc in processes.started:
                            await _stop_master(proc, log)
                        log_text = "\n".join(log.lines) + "\n"
                        await trio.Path(tmp_path / "postfix.log").write_text(log_text)
                        nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps the body's own exception; hand it back as raised, so that pytest.raises(...)
        # around the block behaves as if there were no nursery.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _start_master(
    nursery: trio.Nursery,
    run_dir: Path,
    params: dict[str, ParamValue],
    sink: SmtpSink,
    log: _PostfixLog,
    processes: _Processes,
    startup_timeout: float,
) -> PrivateSmtpd:
    for _ in range(3):  # the free port can be taken between the probe and master's bind: retry
        port = _free_loopback_port()
        await trio.to_thread.run_sync(_write_configs, run_dir, params, port)
        with open(run_dir / "master.stderr", "ab") as errfile:
            proc = await trio.lowlevel.open_process(
                [str(MASTER), "-c", str(run_dir / "postfix"), "-d"],
                stdin=subprocess.DEVNULL,
                stdout=errfile,
                stderr=errfile,
                start_new_session=True,
            )
        processes.started.append(proc)
        nursery.start_soon(log.watch, proc)
        # master logs "daemon started" after it has bound every master.cf socket.
        with trio.move_on_after(startup_timeout):
            while proc.returncode is None and not log.has("daemon started"):
                await log.next_line()
        if proc.returncode is None and log.has("daemon started"):
            return PrivateSmtpd(port, run_dir, run_dir / "postfix", proc.pid, sink, log)
        await _stop_master(proc, log)
    stderr = (run_dir / "master.stderr").read_text(errors="replace")
    raise HarnessError("private Postfix did not start:\n" + "\n".join(log.lines) + "\n" + stderr)
