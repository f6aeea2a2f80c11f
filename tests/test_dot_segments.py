"""A key that renders an empty, ``.`` or ``..`` URL path segment names no resource: not found, never sent.

Percent-encoding keeps ``/`` out of a templated segment but leaves ``.`` and ``..`` as they are, and servers
resolve dot segments (RFC 3986 section 5.2.4) and often merge ``//`` (nginx ``merge_slashes``) BEFORE they
route: ``/api/helo/../info`` would ask ``/api/info``, ANOTHER resource. The backend here routes like such a
server; the lookups come from real Postfix clients (postmap -q, a private smtpd with check_helo_access
socketmap:... and with check_policy_service), and no request with such a segment may ever reach it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urljoin

import pytest
import trio

from pfxhttp.config import parse_config
from pfxhttp.demo.httpd import HttpReply, HttpRequest
from pfxhttp.errors import ConfigError
from tests.conftest import (
    Backend,
    Daemon,
    json_reply,
    policy_query,
    socketmap_query,
    start_daemon,
    status_500,
)
from tests.postfix_harness import PostmapOutcome, make_postfix_config_dir, postfix_available, postmap_query
from tests.postfix_smtpd import private_smtpd
from tests.smtp_wire import SmtpStep

HELO_ACTIONS = {"bad.example": "REJECT 5.7.1 go away", "good.example": "OK"}
SENDERS = {"alice": "OK"}
HELO_ROUTE = re.compile(r"^/api/helo/([^/]+)/info$")
ACCOUNT_ROUTE = re.compile(r"^/account/([^/]+)/policy$")
UNNAMED = {"", ".", ".."}


def normalised(path: str) -> str:
    """What a typical server routes: dot segments resolved (RFC 3986 5.2.4, ``%2E`` left alone) and
    repeated slashes merged."""
    return re.sub(
        "/{2,}", "/", urljoin("http://backend/", path.split("?", 1)[0]).removeprefix("http://backend")
    )


async def normalising_api(request: HttpRequest) -> HttpReply:
    """``/api/helo/NAME/info`` and ``/account/NAME/policy`` answer per NAME; ``/api/info`` and
    ``/account/policy``, the resources a dot or empty segment lands on, answer "OK"."""
    path = normalised(request.path)
    if match := HELO_ROUTE.match(path):
        action = HELO_ACTIONS.get(unquote(match[1]))
    elif match := ACCOUNT_ROUTE.match(path):
        action = SENDERS.get(unquote(match[1]))
    elif path in ("/api/info", "/account/policy"):
        action = "OK"  # a service-status resource: never meant as a verdict on a HELO name or a user
    else:
        action = None
    return json_reply({"action": action}) if action else json_reply({"detail": "Not found."}, 404)


CONFIG = """
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: sender_login, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: tcp_table, name: helo, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
  http_client: {{timeout: 5s}}
socket_maps:
  helo:
    method: GET
    target: "{url}/api/helo/{{{{ key }}}}/info"
    value_field: action
  prefixed:
    method: GET
    target: "{url}/api/helo/.{{{{ key }}}}/info"
    value_field: action
  joined:
    method: GET
    target: "{url}/api/helo/{{{{ key }}}}{{{{ key }}}}/info"
    value_field: action
  guarded:
    method: GET
    target: "{url}/flaky/{{{{ key }}}}"
    value_field: action
    circuit_breaker: {{failures: 2, cooldown: 1h}}
  byquery:
    method: GET
    target: "{url}/api/helo/?name={{{{ key }}}}"
    query: {{also: "{{{{ key }}}}"}}
    value_field: action
policy_services:
  sender_login:
    method: GET
    target: "{url}/account/{{{{ attrs.sasl_username }}}}/policy"
    value_field: action
"""


def sent_segments(backend: Backend) -> list[list[str]]:
    """The raw path segments of every request the backend received."""
    return [request.path.split("?", 1)[0].split("/")[1:] for request in backend.requests]


def assert_nothing_unnamed_sent(backend: Backend) -> None:
    for segments in sent_segments(backend):
        assert not UNNAMED.intersection(segments), segments


@pytest.fixture
async def api(nursery: trio.Nursery, backend: Backend) -> Daemon:
    backend.routes["/api/*"] = normalising_api
    backend.routes["/account/*"] = normalising_api
    backend.routes["/flaky/*"] = status_500
    return await start_daemon(nursery, CONFIG.format(url=backend.url))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("helo", ".."),
        ("helo", "."),
        ("helo", ""),
        ("prefixed", "."),
        ("prefixed", ""),
        ("joined", ""),
        # servers that decode %2F (nginx) or take "\\" for "/" (IIS) before resolving dot segments
        ("helo", "../x"),
        ("helo", "x/.."),
        ("helo", "..\\x"),
        ("helo", "/"),
        ("helo", "//"),
    ],
)
async def test_socketmap_key_naming_no_resource_is_notfound_and_not_sent(
    api: Daemon, backend: Backend, name: str, key: str
) -> None:
    with trio.fail_after(10):
        assert await socketmap_query(api.address("socket_map"), name, key) == "NOTFOUND "
    assert backend.requests == []


@pytest.mark.parametrize(
    ("name", "key", "reply", "path"),
    [
        ("helo", "bad.example", "OK REJECT 5.7.1 go away", "/api/helo/bad.example/info"),
        ("helo", "...", "NOTFOUND ", "/api/helo/.../info"),  # three dots name something: asked
        ("helo", "a/b", "NOTFOUND ", "/api/helo/a%2Fb/info"),  # stays below /api/helo/ even decoded
        ("helo", "%2E%2E", "NOTFOUND ", "/api/helo/%252E%252E/info"),  # decoded once it is no dot segment
        ("prefixed", "x", "NOTFOUND ", "/api/helo/.x/info"),  # a literal dot next to a non-empty value
        ("byquery", "..", "NOTFOUND ", "/api/helo/?name=..&also=.."),  # query values are no path segments
        ("byquery", "", "NOTFOUND ", "/api/helo/?name=&also="),  # and the template's own trailing "/" stays
    ],
)
async def test_keys_that_name_something_are_still_asked(
    api: Daemon, backend: Backend, name: str, key: str, reply: str, path: str
) -> None:
    with trio.fail_after(10):
        assert await socketmap_query(api.address("socket_map"), name, key) == reply
    assert [r.path for r in backend.requests] == [path]


async def test_joined_expressions_judged_as_one_segment(api: Daemon, backend: Backend) -> None:
    """Two expressions in one segment: "." twice is "..", one segment that names no resource."""
    with trio.fail_after(10):
        assert await socketmap_query(api.address("socket_map"), "joined", ".") == "NOTFOUND "
        assert await socketmap_query(api.address("socket_map"), "joined", "a") == "NOTFOUND "
    assert [r.path for r in backend.requests] == ["/api/helo/aa/info"]


async def test_policy_empty_attribute_is_dunno_and_not_sent(api: Daemon, backend: Backend) -> None:
    address = api.address("policy_service")
    with trio.fail_after(10):
        assert (
            await policy_query(address, {"sender": "a@example.com", "sasl_username": ""})
            == "action=DUNNO\n\n"
        )
        assert (
            await policy_query(address, {"sender": "a@example.com"}) == "action=DUNNO\n\n"
        )  # not sent at all
        assert await policy_query(address, {"sasl_username": ".."}) == "action=DUNNO\n\n"
        assert await policy_query(address, {"sasl_username": "alice"}) == "action=OK\n\n"
    assert [r.path for r in backend.requests] == ["/account/alice/policy"]


@pytest.mark.postfix
@pytest.mark.skipif(not postfix_available(), reason="Debian's postfix is not installed")
async def test_postmap_and_tcp_table(api: Daemon, backend: Backend, tmp_path: Path) -> None:
    config_dir = make_postfix_config_dir(tmp_path)
    socketmap = f"socketmap:inet:{api.address('socket_map')}:helo"
    tcp = f"tcp:{api.tcp_table('helo')}"
    with trio.fail_after(60):
        for spec in (socketmap, tcp):
            for key in ("..", ".", ""):
                result = await postmap_query(key, spec, config_dir=config_dir)
                assert (result.outcome, result.stderr) == (PostmapOutcome.NOT_FOUND, ""), (spec, key, result)
            found = await postmap_query("bad.example", spec, config_dir=config_dir)
            assert (found.outcome, found.value) == (PostmapOutcome.FOUND, "REJECT 5.7.1 go away")
    assert [r.path for r in backend.requests] == ["/api/helo/bad.example/info"] * 2


@pytest.mark.postfix
@pytest.mark.skipif(not postfix_available(), reason="Debian's postfix is not installed")
async def test_smtpd_check_helo_access(api: Daemon, backend: Backend, tmp_path: Path) -> None:
    """``HELO ..`` must not borrow the verdict of /api/info: its lookups (smtpd asks ``..``, then ``.``) are
    not found, so reject_invalid_helo_hostname decides, as for any HELO name the API does not know."""
    helo_access = f"socketmap:inet:{api.address('socket_map')}:helo"
    restrictions = f"check_helo_access {helo_access}, reject_invalid_helo_hostname, permit"
    with trio.fail_after(60):
        async with private_smtpd(
            tmp_path, policy_service=None, extra_main_cf={"smtpd_helo_restrictions": restrictions}
        ) as smtpd:
            results = {
                helo: await smtpd.send_mail(mail_from="s@example.org", rcpt_to=["r@example.net"], helo=helo)
                for helo in ("bad.example", "good.example", "..", ".")
            }
    assert results["bad.example"].codes(SmtpStep.RCPT) == (554,)
    assert results["good.example"].codes(SmtpStep.RCPT) == (250,)
    assert results["good.example"].message is not None
    for helo in ("..", "."):
        rcpt = results[helo].reply(SmtpStep.RCPT)
        assert rcpt.code == 501 and "Helo command rejected: Invalid name" in rcpt.text, (helo, rcpt)
        assert results[helo].message is None
    assert_nothing_unnamed_sent(backend)


@pytest.mark.postfix
@pytest.mark.skipif(not postfix_available(), reason="Debian's postfix is not installed")
async def test_smtpd_policy_for_unauthenticated_client(api: Daemon, backend: Backend, tmp_path: Path) -> None:
    """An unauthenticated client has an empty sasl_username: /account//policy is never asked (a server that
    merges slashes would answer for /account/policy); the policy answers DUNNO and ``reject`` decides."""
    policy = f"inet:{api.address('policy_service')}"
    with trio.fail_after(60):
        async with private_smtpd(
            tmp_path,
            policy_service=None,
            extra_main_cf={"smtpd_recipient_restrictions": f"check_policy_service {policy}, reject"},
        ) as smtpd:
            anonymous = await smtpd.send_mail(mail_from="s@example.org", rcpt_to=["r@example.net"])
            alice = await smtpd.send_mail(
                mail_from="s@example.org", rcpt_to=["r@example.net"], xclient={"LOGIN": "alice"}
            )
    assert anonymous.codes(SmtpStep.RCPT) == (554,)
    assert anonymous.message is None
    assert alice.codes(SmtpStep.RCPT) == (250,)
    assert alice.message is not None
    assert [r.path for r in backend.requests] == ["/account/alice/policy"]


async def test_not_asking_is_no_verdict_for_the_circuit_breaker(api: Daemon, backend: Backend) -> None:
    """A key that names no resource never reaches the backend, so it must not count as a success that resets
    the failures in a row (or closes a half-open breaker without a probe)."""
    address = api.address("socket_map")
    with trio.fail_after(10):
        assert await socketmap_query(address, "guarded", "a") == "TEMP backend status 500"
        assert await socketmap_query(address, "guarded", "..") == "NOTFOUND "
        assert await socketmap_query(address, "guarded", "b") == "TEMP backend status 500"
        assert await socketmap_query(address, "guarded", "c") == "TEMP backend circuit open"
    assert [r.path for r in backend.requests] == ["/flaky/a", "/flaky/b"]


def test_a_target_the_load_check_renders_empty_still_loads() -> None:
    """The load-time sample lacks most attributes (``ccert_subject`` here): its empty segment is no config
    error, the URL is checked all the same."""
    extra = (
        "  by_cert:\n    method: GET\n    value_field: action\n"
        '    target: "http://127.0.0.1:9/cert/{{ attrs.ccert_subject }}/"\n'
    )
    config = parse_config(CONFIG.format(url="http://127.0.0.1:9") + extra, "test.yml")
    assert "by_cert" in config.policy_services
    with pytest.raises(ConfigError, match="port"):
        parse_config(CONFIG.format(url="http://127.0.0.1:9") + extra.replace(":9/", ":99999/"), "test.yml")
