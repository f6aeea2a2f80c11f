"""The contract table proven through REAL Postfix clients: postmap -q (socketmap) and a private smtpd (policy).

The daemon runs in-process on real sockets in front of a real local HTTP server (tests/conftest.py); Postfix
talks to it exactly as in production. See tests/postfix_harness.py for what postmap's exit codes mean.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conftest import Backend, Daemon, daemon_config, start_daemon, unused_port
from tests.postfix_harness import (
    PostmapOutcome,
    make_postfix_config_dir,
    postfix_available,
    postmap_query,
)
from tests.postfix_smtpd import grant_postfix_access, postfix_reachable_dir, private_smtpd
from tests.smtp_wire import SmtpStep

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        not postfix_available(), reason="Debian's postfix is not installed (./dev test installs it)"
    ),
]


@pytest.fixture
def postfix_dir(tmp_path: Path) -> Path:
    return make_postfix_config_dir(tmp_path)


def specs(daemon: Daemon, name: str) -> list[str]:
    return [
        f"socketmap:inet:{daemon.address('socket_map')}:{name}",
        f"socketmap:unix:{daemon.address('socket_map', 'unix')}:{name}",
    ]


@pytest.mark.parametrize(
    "key",
    [
        "alice@example.com",
        '"john doe"@example.com',
        'quote"and\\backslash@example.com',
        "ünïcødé@exämple.com",
        " leading and trailing ",
        "<>",
    ],
)
async def test_postmap_found_returns_the_exact_key(daemon: Daemon, postfix_dir: Path, key: str) -> None:
    with trio.fail_after(30):
        for spec in specs(daemon, "echo"):
            result = await postmap_query(key, spec, config_dir=postfix_dir)
            assert result.outcome is PostmapOutcome.FOUND, result
            assert result.value == key


@pytest.mark.parametrize(
    ("name", "key", "outcome", "stderr"),
    [
        ("absent", "x@example.com", PostmapOutcome.NOT_FOUND, ""),
        ("fourofour", "x@example.com", PostmapOutcome.NOT_FOUND, ""),
        ("fivehundred", "x@example.com", PostmapOutcome.ERROR, "temporary error: backend status 500"),
        ("notjson", "x@example.com", PostmapOutcome.ERROR, "temporary error: invalid JSON from backend"),
        ("slow", "x@example.com", PostmapOutcome.ERROR, "timeout error: backend timeout"),
        ("nosuchmap", "x@example.com", PostmapOutcome.ERROR, "permanent error: unknown map"),
        ("length", "99998", PostmapOutcome.ERROR, "permanent error: value too long"),
    ],
)
async def test_postmap_contract_rows(
    daemon: Daemon, postfix_dir: Path, name: str, key: str, outcome: PostmapOutcome, stderr: str
) -> None:
    with trio.fail_after(30):
        for spec in specs(daemon, name):
            result = await postmap_query(key, spec, config_dir=postfix_dir)
            assert result.outcome is outcome, result
            assert stderr in result.stderr
            if outcome is PostmapOutcome.NOT_FOUND:
                assert result.stderr == ""


async def test_postmap_largest_value_that_fits(daemon: Daemon, postfix_dir: Path) -> None:
    with trio.fail_after(30):
        result = await postmap_query("99997", specs(daemon, "length")[0], config_dir=postfix_dir)
    assert result.outcome is PostmapOutcome.FOUND
    assert result.value == "v" * 99_997


async def test_postmap_backend_down_is_temporary(nursery: trio.Nursery, postfix_dir: Path) -> None:
    daemon = await start_daemon(nursery, daemon_config(f"http://127.0.0.1:{unused_port()}"))
    with trio.fail_after(30):
        spec = f"socketmap:inet:{daemon.address('socket_map')}:echo"
        result = await postmap_query("x", spec, config_dir=postfix_dir)
    assert result.outcome is PostmapOutcome.ERROR
    assert "temporary error: backend unreachable" in result.stderr


RCPT_CASES = [
    ("reject@example.net", 554, "5.7.1 <reject@example.net>: Recipient address rejected: rejected by policy"),
    ("defer@example.net", 450, "4.7.1 <defer@example.net>: Recipient address rejected: try again later"),
    ("fail@example.net", 450, "4.7.1 <fail@example.net>: Recipient address rejected: Service temporarily"),
    ("slow@example.net", 450, "4.7.1 <slow@example.net>: Recipient address rejected: Service temporarily"),
    ("injection@example.net", 450, "4.7.1 <injection@example.net>: Recipient address rejected: Service"),
    ("dunno@example.net", 250, "2.1.5 Ok"),
    ("ok@example.net", 250, "2.1.5 Ok"),
]


async def test_policy_actions_reach_the_smtp_dialogue(
    daemon: Daemon, backend: Backend, tmp_path: Path
) -> None:
    policy = f"inet:{daemon.address('policy_service')}"
    with trio.fail_after(60):
        async with private_smtpd(tmp_path, policy_service=policy) as smtpd:
            for rcpt, code, text in RCPT_CASES:
                result = await smtpd.send_mail(mail_from="sender@example.org", rcpt_to=[rcpt])
                reply = result.reply(SmtpStep.RCPT)
                assert (reply.code, reply.text[: len(text)]) == (code, text), (rcpt, reply)
                if code == 250:
                    assert result.message is not None, rcpt  # the message really went through
            tagged = await smtpd.send_mail(mail_from="sender@example.org", rcpt_to=["prepend@example.net"])
    assert tagged.reply(SmtpStep.RCPT).code == 250
    assert tagged.message is not None
    assert tagged.message.header("X-Pfxhttp-Policy") == ("tagged",)
    # Postfix sent its real attributes; pfxhttp forwarded them as one JSON object.
    assert backend.count("/policy") == len(RCPT_CASES) + 1


async def test_policy_over_unix_socket_and_daemon_down_is_4xx(
    nursery: trio.Nursery, backend: Backend, tmp_path: Path
) -> None:
    with postfix_reachable_dir() as sock_dir:
        daemon = await start_daemon(nursery, daemon_config(backend.url, sock_dir))
        policy_sock = Path(daemon.address("policy_service", "unix"))
        grant_postfix_access(policy_sock)
        with trio.fail_after(60):
            async with private_smtpd(tmp_path, policy_service=f"unix:{policy_sock}") as smtpd:
                rejected = await smtpd.send_mail(mail_from="s@example.org", rcpt_to=["reject@example.net"])
                assert rejected.codes(SmtpStep.RCPT) == (554,)
                daemon.server.request_stop()
                while policy_sock.exists():
                    await trio.sleep(0.02)
                down = await smtpd.send_mail(mail_from="s@example.org", rcpt_to=["reject@example.net"])
    # pfxhttp gone: Postfix applies smtpd_policy_service_default_action (451 4.3.5): deferred, never bounced.
    assert down.codes(SmtpStep.RCPT) == (451,)
    assert down.reply(SmtpStep.RCPT).text.startswith("4.3.5")


@pytest.mark.parametrize(
    ("name", "key", "outcome", "value", "stderr"),
    [
        ("echo", "alice@example.com", PostmapOutcome.FOUND, "alice@example.com", ""),
        ("echo", "with space % and ünïcødé", PostmapOutcome.FOUND, "with space % and ünïcødé", ""),
        ("absent", "x@example.com", PostmapOutcome.NOT_FOUND, None, ""),
        ("fivehundred", "x@example.com", PostmapOutcome.ERROR, None, "query error"),  # no reason shown
    ],
)
async def test_tcp_table_through_postmap(
    daemon: Daemon,
    postfix_dir: Path,
    name: str,
    key: str,
    outcome: PostmapOutcome,
    value: str | None,
    stderr: str,
) -> None:
    with trio.fail_after(30):
        result = await postmap_query(key, f"tcp:{daemon.tcp_table(name)}", config_dir=postfix_dir)
    assert result.outcome is outcome, result
    assert result.value == value
    assert stderr in result.stderr
