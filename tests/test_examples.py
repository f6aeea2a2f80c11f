"""The shipped examples (etc/examples/) work as documented: `pfxhttp check` accepts each file, and the mail
controller example answers real Postfix (postmap -q, a private smtpd) in front of tests/mailcontroller.py.

The example's API base URL ``http://127.0.0.1:8000`` is replaced by the local server's, and its listener
ports by 0 (any free port): nothing else of the file is changed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import trio

from pfxhttp.demo.httpd import serve_http
from tests.conftest import Daemon, pfxhttp_check, policy_query, start_daemon
from tests.mailcontroller import Account, MailController
from tests.postfix_harness import PostmapOutcome, make_postfix_config_dir, postfix_available, postmap_query
from tests.postfix_smtpd import PolicyStage, private_smtpd
from tests.smtp_wire import SmtpStep

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "etc" / "examples").glob("*.yml"))
MAILCONTROLLER = ROOT / "etc" / "examples" / "mailcontroller.yml"
PLACEHOLDER_URL = "http://127.0.0.1:8000"

requires_postfix = pytest.mark.skipif(
    not postfix_available(), reason="Debian's postfix is not installed (./dev test installs it)"
)


def example_config(path: Path, api_url: str) -> str:
    """The example's text with the test API's URL and free listener ports substituted."""
    text = path.read_text()
    assert PLACEHOLDER_URL in text
    return re.sub(r"(?m)^(\s+port:) \d+$", r"\1 0", text.replace(PLACEHOLDER_URL, api_url))


@dataclass
class RunningApi:
    controller: MailController
    url: str
    port: int
    _scope: trio.CancelScope

    async def stop(self) -> None:
        """Take the API down (its listener closed, its connections dropped): the outage case."""
        self._scope.cancel()
        with trio.fail_after(5):
            while True:  # bounded by fail_after: until a connect is refused
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    return
                await stream.aclose()
                await trio.sleep(0.01)


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[RunningApi]:
    controller = MailController.seeded()
    scope = trio.CancelScope()

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve_http(controller, task_status=task_status)

    port = await nursery.start(serve)
    yield RunningApi(controller, f"http://127.0.0.1:{port}", port, scope)


@pytest.fixture
async def daemon(nursery: trio.Nursery, api: RunningApi) -> Daemon:
    return await start_daemon(nursery, example_config(MAILCONTROLLER, api.url))


# ------------------------------------------------------------------------------------------ pfxhttp check


def test_there_are_examples() -> None:
    assert MAILCONTROLLER in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_pfxhttp_check_accepts_the_example(path: Path) -> None:
    result = await pfxhttp_check(path)
    assert result.returncode == 0, result.stderr.decode()
    assert b": OK: " in result.stdout
    assert result.stderr == b""  # no warnings either


# ------------------------------------------------------------------------------------ the maps, via postmap

MAP_CASES = [
    # virtual_alias_maps: the alias's comma-separated "to"
    ("virtual_alias_maps", "team@example.com", "alice@example.com,bob@example.com,carol@example.com"),
    ("virtual_alias_maps", "Postmaster@Example.COM", "alice@example.com"),
    ("virtual_alias_maps", "info@example.org", "bob@example.com"),
    ("virtual_alias_maps", "nobody@example.com", None),
    ("virtual_alias_maps", "@example.com", None),  # Postfix's catch-all lookup
    ("virtual_alias_maps", "alice@example.com", None),  # an account, not an alias
    # virtual_mailbox_maps: the account exists
    ("virtual_mailbox_maps", "alice@example.com", "example.com/alice/"),
    ("virtual_mailbox_maps", "ERIN@example.net", "example.net/erin/"),
    ("virtual_mailbox_maps", "team@example.com", None),  # an alias, not an account
    ("virtual_mailbox_maps", "a/../b@example.com", None),  # climbs out of its segment once decoded: not asked
    ("virtual_mailbox_maps", "a/b@example.com", None),  # one encoded path segment: no such account
    # virtual_mailbox_domains: the domain has accounts
    ("virtual_mailbox_domains", "example.com", "example.com"),
    ("virtual_mailbox_domains", "Example.NET", "example.net"),
    ("virtual_mailbox_domains", "example.org", None),  # aliases only, no accounts
    ("virtual_mailbox_domains", "unknown.test", None),
]


@pytest.mark.postfix
@requires_postfix
async def test_maps_through_postmap(daemon: Daemon, api: RunningApi, tmp_path: Path) -> None:
    config_dir = make_postfix_config_dir(tmp_path)
    address = daemon.address("socket_map")
    with trio.fail_after(40):
        for name, key, expected in MAP_CASES:
            result = await postmap_query(key, f"socketmap:inet:{address}:{name}", config_dir=config_dir)
            if expected is None:
                assert (result.outcome, result.stderr) == (PostmapOutcome.NOT_FOUND, ""), (name, key, result)
            else:
                assert (result.outcome, result.value) == (PostmapOutcome.FOUND, expected), (name, key, result)
        paths = api.controller.paths()
        assert "/mail/alias/postmaster%40example.com/" in paths  # lower-cased, one encoded segment
        assert "/mail/account/a%2Fb%40example.com/" in paths
        assert not [path for path in paths if "..%2F" in path]
        assert "/mail/account/?domain=example.net" in paths

        # The API goes down: answers already known come from the cache, anything else is a temporary error
        # (Postfix defers; never "not found", which would bounce mail).
        await api.stop()
        spec = f"socketmap:inet:{address}:virtual_alias_maps"
        cached = await postmap_query("team@example.com", spec, config_dir=config_dir)
        assert cached.value == "alice@example.com,bob@example.com,carol@example.com"
        down = await postmap_query("new@example.com", spec, config_dir=config_dir)
    assert down.outcome is PostmapOutcome.ERROR
    assert "temporary error: backend unreachable" in down.stderr


# -------------------------------------------------------------------------- the sender policy, via smtpd

# (SASL login or None, MAIL FROM, SMTP reply code at MAIL FROM, reply text starts with)
SENDER_CASES = [
    ("alice@example.com", "alice@example.com", 250, "2.1.0 Ok"),  # its own address
    ("Alice@Example.com", "ALICE@example.COM", 250, "2.1.0 Ok"),  # case-insensitive
    ("bob@example.com", "sales@example.com", 250, "2.1.0 Ok"),  # whitelisted address
    ("bob@example.com", "anyone@Example.org", 250, "2.1.0 Ok"),  # whitelisted "@example.org"
    ("bob@example.com", "x@example.net", 250, "2.1.0 Ok"),  # whitelisted "example.net"
    ("carol@example.com", "ceo@elsewhere.test", 250, "2.1.0 Ok"),  # "*"
    (None, "anyone@elsewhere.test", 250, "2.1.0 Ok"),  # unauthenticated: DUNNO
    (
        "alice@example.com",
        "bob@example.com",
        554,
        "5.7.1 <bob@example.com>: Sender address rejected: Not allowed to send as this address",
    ),
    ("bob@example.com", "x@sub.example.org", 554, "5.7.1 <x@sub.example.org>: Sender address rejected: Not"),
    ("bob@example.com", "alice@example.com", 554, "5.7.1 <alice@example.com>: Sender address rejected: Not"),
    ("alice@example.com", "", 554, "5.7.1 <>: Sender address rejected: Not allowed"),  # null sender
    (
        "dave@example.com",
        "dave@example.com",
        554,
        "5.7.1 <dave@example.com>: Sender address rejected: Submission is disabled for this account",
    ),
    (
        "ghost@example.com",
        "ghost@example.com",
        554,
        "5.7.1 <ghost@example.com>: Sender address rejected: No mail account for this login",
    ),
]


@pytest.mark.postfix
@requires_postfix
async def test_sender_policy_through_smtpd(daemon: Daemon, api: RunningApi, tmp_path: Path) -> None:
    policy = f"inet:{daemon.address('policy_service')}"
    with trio.fail_after(50):
        async with private_smtpd(
            tmp_path,
            policy_service=policy,
            policy_stage=PolicyStage.SENDER,
            extra_main_cf={"smtpd_delay_reject": False},  # the verdict at MAIL FROM itself
        ) as smtpd:
            for login, sender, code, text in SENDER_CASES:
                xclient = {"LOGIN": login} if login else None
                result = await smtpd.send_mail(
                    mail_from=sender, rcpt_to=["rcpt@example.net"], xclient=xclient
                )
                reply = result.reply(SmtpStep.MAIL)
                assert (reply.code, reply.text[: len(text)]) == (code, text), (login, sender, reply)
                if code == 250:
                    assert result.message is not None, (login, sender)  # the mail really went through
            assert "/mail/account/alice%40example.com/" in api.controller.paths()

            # The API goes down: the error action, a temporary 4xx, never a 5xx (the client retries later).
            await api.stop()
            down = await smtpd.send_mail(
                mail_from="erin@example.net",
                rcpt_to=["rcpt@example.net"],
                xclient={"LOGIN": "erin@example.net"},
            )
    # DEFER_IF_PERMIT: smtpd applies it once the recipient restrictions would permit, i.e. at RCPT TO.
    assert [r.code // 100 for r in down.replies if r.code >= 400] == [4]
    reply = down.reply(SmtpStep.RCPT)
    assert (reply.code, reply.text) == (
        450,
        "4.3.0 <erin@example.net>: Sender address rejected: Sender check temporarily unavailable",
    )
    assert down.message is None


@pytest.mark.parametrize(
    "record",
    [
        Account("mallory", "example.com", submission_disabled=cast(bool, "false")),
        Account("mallory", "example.com", spoofing_whitelist=cast(str, ["*"])),
    ],
)
async def test_sender_policy_malformed_account_is_the_error_action(
    daemon: Daemon, api: RunningApi, record: Account
) -> None:
    """A record breaking the contract is a backend failure: the error action, neither DUNNO nor REJECT."""
    api.controller.accounts[record.id] = record
    with trio.fail_after(10):
        reply = await policy_query(
            daemon.address("policy_service"),
            {"request": "smtpd_access_policy", "sasl_username": record.id, "sender": record.id},
        )
    assert reply == "action=DEFER_IF_PERMIT 4.3.0 Sender check temporarily unavailable\n\n"
