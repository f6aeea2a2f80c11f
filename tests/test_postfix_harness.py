"""Prove tests/postfix_harness.py against tiny in-test socketmap and policy servers and real Postfix 3.7."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.postfix_harness import (
    PostmapOutcome,
    make_postfix_config_dir,
    postfix_available,
    postmap_query,
)
from tests.postfix_smtpd import PolicyStage, grant_postfix_access, postfix_reachable_dir, private_smtpd
from tests.smtp_wire import SmtpStep

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        not postfix_available(),
        reason="Debian's postfix binaries are not installed (apt-get install postfix)",
    ),
]

# ------------------------------------------------------------------------------- in-test socketmap server

# The map NAME picks the reply, so one server covers every reply kind.
SOCKETMAP_REPLIES = {
    "found": b"OK the value",
    "empty": b"OK ",
    "nospace": b"OK",
    "notfound": b"NOTFOUND ",
    "temp": b"TEMP backend down",
    "timeout": b"TIMEOUT backend slow",
    "perm": b"PERM bad config",
}


@dataclass
class SocketmapServer:
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, stream: trio.abc.Stream) -> None:
        buffer = b""
        async with stream:
            for _ in range(100):  # one netstring request per round
                while b":" not in buffer or len(buffer) <= buffer.index(b":") + int(buffer.split(b":")[0]):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                length, _, rest = buffer.partition(b":")
                request, buffer = rest[: int(length)], rest[int(length) + 1 :]
                self.requests.append(request)
                name, _, key = request.partition(b" ")
                if name == b"close":
                    return
                if name == b"hang":
                    await trio.sleep_forever()
                reply = b"OK " + key if name == b"echo" else SOCKETMAP_REPLIES[name.decode()]
                await stream.send_all(b"%d:%s," % (len(reply), reply))


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return make_postfix_config_dir(tmp_path)


@pytest.fixture
async def socketmap(nursery: trio.Nursery) -> AsyncIterator[tuple[SocketmapServer, int]]:
    server = SocketmapServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    yield server, listeners[0].socket.getsockname()[1]


def test_make_postfix_config_dir_writes_params(tmp_path: Path) -> None:
    config = make_postfix_config_dir(tmp_path, smtputf8_enable=False, mynetworks=["127.0.0.0/8", "[::1]/128"])
    text = (config / "main.cf").read_text()
    assert "smtputf8_enable = no\n" in text
    assert "mynetworks = 127.0.0.0/8, [::1]/128\n" in text
    with pytest.raises(ValueError):
        make_postfix_config_dir(tmp_path, myhostname="a\nb")


@pytest.mark.parametrize(
    ("name", "returncode", "stdout", "stderr_parts"),
    [
        ("found", 0, "the value\n", []),
        ("empty", 0, "\n", ["empty string result is not allowed", "should return NO RESULT"]),
        ("nospace", 1, "", []),
        ("notfound", 1, "", []),
        ("temp", 1, "", ["socketmap server temporary error: backend down", "fatal: table socketmap:"]),
        ("timeout", 1, "", ["socketmap server timeout error: backend slow", "fatal: table socketmap:"]),
        ("perm", 1, "", ["socketmap server permanent error: bad config", "fatal: table socketmap:"]),
        ("close", 1, "", ["lookup error: unexpected disconnect", "fatal: table socketmap:"]),
    ],
)
async def test_postmap_reply_kinds(
    socketmap: tuple[SocketmapServer, int],
    config_dir: Path,
    name: str,
    returncode: int,
    stdout: str,
    stderr_parts: list[str],
) -> None:
    server, port = socketmap
    with trio.fail_after(15):
        result = await postmap_query("Key", f"socketmap:inet:127.0.0.1:{port}:{name}", config_dir=config_dir)
    assert (result.returncode, result.stdout) == (returncode, stdout)
    for part in stderr_parts:
        assert part in result.stderr
    if not stderr_parts:
        assert result.stderr == ""
    # A server that closes without replying is asked again once (dict_sockmap retries on a new connection).
    assert server.requests == [f"{name} Key".encode()] * (2 if name == "close" else 1)
    expected = {0: PostmapOutcome.FOUND, 1: PostmapOutcome.NOT_FOUND}[returncode]
    assert result.outcome is (PostmapOutcome.ERROR if "fatal:" in "".join(stderr_parts) else expected)


KEYS = [
    "MiXeD@Example.COM",
    '"john doe"@example.com',
    'it\'s a "quoted" \\ key',
    " leading and trailing ",
    "tab\there",
    "Grüße@例え.jp",
    "",
    "<>",
    '""',
    "-starts-with-dash",
    "2001:db8::1",
]


@pytest.mark.parametrize("key", KEYS)
async def test_postmap_passes_keys_unchanged(
    socketmap: tuple[SocketmapServer, int], config_dir: Path, key: str
) -> None:
    server, port = socketmap
    with trio.fail_after(15):
        result = await postmap_query(key, f"socketmap:inet:127.0.0.1:{port}:echo", config_dir=config_dir)
    assert server.requests == [b"echo " + key.encode()]  # no case folding, no trimming, no quoting
    assert result.value == key
    assert result.outcome is PostmapOutcome.FOUND


async def test_postmap_unix_socket(nursery: trio.Nursery, config_dir: Path) -> None:
    server = SocketmapServer()
    with postfix_reachable_dir() as sock_dir, trio.fail_after(15):
        path = sock_dir / "map.sock"
        listener = trio.socket.socket(trio.socket.AF_UNIX)
        await listener.bind(str(path))
        listener.listen()
        nursery.start_soon(trio.serve_listeners, server.handle, [trio.SocketListener(listener)])
        result = await postmap_query("k", f"socketmap:unix:{path}:found", config_dir=config_dir)
        assert (result.returncode, result.value) == (0, "the value")
        absent = f"socketmap:unix:{sock_dir}/absent.sock:found"
        refused = await postmap_query("k", absent, config_dir=config_dir)
        assert refused.outcome is PostmapOutcome.ERROR
        assert "fatal:" in refused.stderr


async def test_postmap_silent_server_is_bounded(
    socketmap: tuple[SocketmapServer, int], config_dir: Path
) -> None:
    _server, port = socketmap
    with trio.fail_after(10), pytest.raises(trio.TooSlowError):
        await postmap_query("k", f"socketmap:inet:127.0.0.1:{port}:hang", config_dir=config_dir, timeout=1)


async def test_postmap_refuses_stdin_key(config_dir: Path) -> None:
    with pytest.raises(ValueError, match="stdin"):
        await postmap_query("-", "socketmap:inet:127.0.0.1:1:x", config_dir=config_dir)


# ---------------------------------------------------------------------------------- in-test policy server

# The recipient's local part picks the action, so one server covers every case.
POLICY_ACTIONS = {
    "reject": "REJECT 5.7.1 harness says no",
    "defer": "DEFER_IF_PERMIT 4.7.1 harness says later",
    "dunno": "DUNNO",
    "ok": "OK",
    "prepend": "PREPEND X-Harness-Policy: tagged by policy",
}


@dataclass
class PolicyServer:
    requests: list[dict[str, str]] = field(default_factory=list)
    connections: int = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        buffer = b""
        async with stream:
            for _ in range(100):  # one attribute block per round, kept open like Postfix expects
                while b"\n\n" not in buffer:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buffer += chunk
                block, _, buffer = buffer.partition(b"\n\n")
                attrs = dict(line.split("=", 1) for line in block.decode().split("\n"))
                self.requests.append(attrs)
                local = attrs.get("recipient", "").split("@")[0]
                if local == "close":
                    return
                if local == "hang":
                    await trio.sleep_forever()
                await stream.send_all(f"action={POLICY_ACTIONS.get(local, 'DUNNO')}\n\n".encode())


@pytest.fixture
async def policy(nursery: trio.Nursery) -> tuple[PolicyServer, str]:
    server = PolicyServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    return server, f"inet:127.0.0.1:{listeners[0].socket.getsockname()[1]}"


def group_alive(pgid: int) -> bool:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, check=False).returncode == 0


async def test_policy_actions_reach_the_smtp_dialogue(
    tmp_path: Path, policy: tuple[PolicyServer, str]
) -> None:
    server, address = policy
    with trio.fail_after(30):
        async with private_smtpd(tmp_path, policy_service=address) as smtpd:
            reject = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["reject@example.net"])
            defer = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["defer@example.net"])
            dunno = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["dunno@example.net"])
            ok = await smtpd.send_mail(mail_from="", rcpt_to=["ok@example.net"], data="Subject: s\n\n.dot\n")
            prepend = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["prepend@example.net"])
            pgid = smtpd.master_pid
            assert group_alive(pgid)
    rcpt = reject.reply(SmtpStep.RCPT)
    assert rcpt.code == 554 and "5.7.1" in rcpt.text and "harness says no" in rcpt.text
    assert reject.message is None and SmtpStep.DATA not in [r.step for r in reject.replies]
    assert defer.codes(SmtpStep.RCPT) == (450,)
    defer_text = defer.reply(SmtpStep.RCPT).text
    assert defer_text.startswith("4.7.1") and defer_text.endswith("harness says later")
    assert defer.message is None
    for accepted in (dunno, ok, prepend):
        assert accepted.codes(SmtpStep.RCPT) == (250,) and accepted.codes(SmtpStep.MESSAGE) == (250,)
        assert accepted.message is not None
    assert dunno.message is not None and dunno.message.rcpt_to == ("dunno@example.net",)
    assert ok.message is not None and ok.message.mail_from == "" and ok.message.data.endswith(b"\r\n.dot\r\n")
    assert prepend.message is not None
    assert prepend.message.header("X-Harness-Policy") == ("tagged by policy",)
    assert prepend.message.headers[0][0] == "X-Harness-Policy"  # PREPEND goes above Received:
    assert dunno.message.header("X-Harness-Policy") == ()
    first = server.requests[0]
    assert (first["request"], first["protocol_state"], first["client_address"]) == (
        "smtpd_access_policy",
        "RCPT",
        "127.0.0.1",
    )
    assert (first["sender"], first["recipient"]) == ("a@example.org", "reject@example.net")
    assert server.connections == 1  # smtpd keeps the policy connection across sessions
    assert not group_alive(pgid)  # every process of the instance is gone
    assert "daemon started" in (tmp_path / "postfix.log").read_text()


async def test_policy_server_closing_without_reply_gives_4xx(
    tmp_path: Path, policy: tuple[PolicyServer, str]
) -> None:
    server, address = policy
    with trio.fail_after(30):
        async with private_smtpd(tmp_path, policy_service=address) as smtpd:
            result = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["close@example.net"])
            log = "\n".join(smtpd.log_lines)
    rcpt = result.reply(SmtpStep.RCPT)
    assert rcpt.code == 451 and rcpt.text.startswith("4.3.5")
    assert result.message is None
    assert len(server.requests) == 2  # smtpd_policy_service_try_limit = 2: asked again on a new connection
    assert "problem talking to server" in log


async def test_policy_server_timeout_gives_4xx(tmp_path: Path, policy: tuple[PolicyServer, str]) -> None:
    server, address = policy
    extra = {"smtpd_policy_service_timeout": "1s"}
    with trio.fail_after(30):
        async with private_smtpd(tmp_path, policy_service=address, extra_main_cf=extra) as smtpd:
            rcpts = ["hang@example.net", "ok@x.test"]
            result = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=rcpts)
    assert result.codes(SmtpStep.RCPT) == (451, 250)
    assert result.reply(SmtpStep.RCPT).text.startswith("4.3.5")
    assert result.message is not None and result.message.rcpt_to == ("ok@x.test",)
    # Two tries for the silent server, then one more for the next recipient on a fresh connection.
    assert [r["recipient"] for r in server.requests] == ["hang@example.net"] * 2 + ["ok@x.test"]


async def test_mixed_recipients_xclient_and_unix_policy_socket(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = PolicyServer()
    with postfix_reachable_dir() as sock_dir, trio.fail_after(30):
        path = sock_dir / "policy.sock"
        listener = trio.socket.socket(trio.socket.AF_UNIX)
        await listener.bind(str(path))
        listener.listen()
        grant_postfix_access(path)
        nursery.start_soon(trio.serve_listeners, server.handle, [trio.SocketListener(listener)])
        async with private_smtpd(tmp_path, policy_service=f"unix:{path}") as smtpd:
            result = await smtpd.send_mail(
                mail_from="a@example.org",
                rcpt_to=["reject@example.net", "ok@example.net"],
                xclient={"ADDR": "192.0.2.7", "NAME": "[UNAVAILABLE]", "LOGIN": "alice+x=y"},
            )
    assert result.codes(SmtpStep.XCLIENT) == (220,)
    assert result.codes(SmtpStep.RCPT) == (554, 250)
    assert result.message is not None and result.message.rcpt_to == ("ok@example.net",)
    assert server.requests[0]["client_address"] == "192.0.2.7"
    assert server.requests[0]["sasl_username"] == "alice+x=y"


async def test_policy_at_end_of_data_stage(tmp_path: Path, policy: tuple[PolicyServer, str]) -> None:
    server, address = policy
    with trio.fail_after(30):
        stage = PolicyStage.END_OF_DATA
        async with private_smtpd(tmp_path, policy_service=address, policy_stage=stage) as smtpd:
            result = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["reject@example.net"])
    assert result.codes(SmtpStep.RCPT) == (250,)  # the policy is not asked at RCPT time
    assert result.codes(SmtpStep.MESSAGE) == (554,)
    assert result.message is None
    assert server.requests[0]["protocol_state"] == "END-OF-MESSAGE"


async def test_instance_is_cleaned_up_when_the_body_fails(tmp_path: Path) -> None:
    pgid = 0
    with trio.fail_after(30), pytest.raises(ZeroDivisionError):
        async with private_smtpd(tmp_path, policy_service=None) as smtpd:
            pgid = smtpd.master_pid
            run_dir = smtpd.run_dir
            result = await smtpd.send_mail(mail_from="a@example.org", rcpt_to=["b@example.net"])
            assert result.codes(SmtpStep.MESSAGE) == (250,)
            _ = 1 / 0
    assert pgid and not group_alive(pgid)
    assert not run_dir.exists()
