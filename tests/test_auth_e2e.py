"""Backend auth end to end: Postfix-side lookups through the daemon to a token-protected local API.

The API and the token endpoints are tests/tokenserver.py (real RS256 JWTs, checked on every API request). Token
requests are counted at the server and compared with what the design predicts: one login, then one renewal per
half-life for short-lived tokens (RENEW at 30 s before expiry otherwise), none after a restart while the stored
token is valid, one after a 401, one per back-off window while the endpoint is down.
"""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import parse_config
from pfxhttp.logsetup import get_logger
from pfxhttp.protocol.socketmap import SocketmapRequest, SocketmapStatus
from tests.conftest import pfxhttp_process, socketmap_query, start_daemon, unused_port
from tests.tokenserver import (
    LOGIN,
    OIDC_TOKEN,
    PM_LOGIN,
    PM_REFRESH,
    REFRESH,
    ClientMethod,
    Fault,
    TokenServer,
)

PASSWORD = "s3cret-Passw0rd"


def pfx_config(server: TokenServer, port: int = 0, db: Path | None = None, extra: str = "") -> str:
    store = f"  jwt_db_path: {db}\n" if db else ""
    return f"""
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: {port}}}
  logging: {{level: debug}}
  http_client: {{timeout: 2s}}
{store}socket_maps:
  users:
    target: {server.url}/api/users
    payload: '{{"key": "{{{{ .Key }}}}"}}'
    value_field: data.result
    jwt_auth:
      enabled: true
      token_endpoint: {server.url}{LOGIN}
      refresh: header  # X-Refresh-Token, as Nauthilus does
      refresh_endpoint: {server.url}{REFRESH}
      credentials:
        username: pfxhttp
        password: {PASSWORD}
{extra}"""


def postfixme_config(server: TokenServer) -> str:
    return f"""
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
socket_maps:
  mailbox:
    target: {server.url}/api/mailbox
    payload: '{{"key": "{{{{ .Key }}}}"}}'
    value_field: data.result
    jwt_auth:
      enabled: true
      token_endpoint: {server.url}{PM_LOGIN}
      content_type: application/json
      credentials:
        mailbox: postmaster@example.org
        password: {PASSWORD}
      token_field: access_token
      expires_in_field: expires_in
      refresh: body
      refresh_endpoint: {server.url}{PM_REFRESH}
"""


def token_requests(server: TokenServer) -> int:
    return sum(server.count(path) for path in (LOGIN, REFRESH, PM_LOGIN, PM_REFRESH, OIDC_TOKEN))


async def lookup(address: str, key: str, name: str = "users") -> str:
    return await socketmap_query(address, name, key)


async def test_answers_across_several_expiries_with_one_renewal_per_half_life(nursery: trio.Nursery) -> None:
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=4)  # renewed at half-life: 2 s
    await server.start(nursery)
    daemon = await start_daemon(nursery, pfx_config(server))
    address = daemon.address("socket_map")
    with trio.fail_after(30):
        assert await lookup(address, "a@example.org") == "OK a@example.org"
        assert (server.count(LOGIN), server.count(REFRESH)) == (1, 0)
        for round_ in range(1, 4):
            await trio.sleep(2.4)  # past the renewal point, before expiry
            # The old token still serves this lookup; the renewal runs beside it (one refresh request).
            assert await lookup(address, f"r{round_}@example.org") == f"OK r{round_}@example.org"
            for _ in range(100):  # bounded: the background renewal lands within a few ms
                if server.count(REFRESH) == round_:
                    break
                await trio.sleep(0.02)
            assert (server.count(LOGIN), server.count(REFRESH)) == (1, round_)
        # 7 s after the login, two token lifetimes later: one API request per lookup, so none was refused.
        assert server.count("/api/users") == 4
    log = daemon.log.getvalue()
    assert "bearer token obtained" in log
    assert PASSWORD not in log
    assert server.last(REFRESH).headers["x-refresh-token"] not in log


async def test_postfixme_style_api_rotates_refresh_tokens(nursery: trio.Nursery) -> None:
    server = TokenServer(users={"postmaster@example.org": PASSWORD}, lifetime=4)
    await server.start(nursery)
    daemon = await start_daemon(nursery, postfixme_config(server))
    address = daemon.address("socket_map")
    with trio.fail_after(30):
        assert await lookup(address, "x@example.org", "mailbox") == "OK x@example.org"
        for round_ in (1, 2):
            await trio.sleep(2.4)
            assert await lookup(address, "y@example.org", "mailbox") == "OK y@example.org"
            for _ in range(100):
                if server.count(PM_REFRESH) == round_:
                    break
                await trio.sleep(0.02)
        # Each refresh used the refresh token of the previous reply (a reused one would be refused with 401
        # and force a login): one login, two refreshes, nothing else.
        assert (server.count(PM_LOGIN), server.count(PM_REFRESH)) == (1, 2)
        assert await lookup(address, "z@example.org", "mailbox") == "OK z@example.org"


async def test_a_401_drops_the_token_and_retries_the_lookup_once(nursery: trio.Nursery) -> None:
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=300)
    await server.start(nursery)
    daemon = await start_daemon(nursery, pfx_config(server))
    address = daemon.address("socket_map")
    with trio.fail_after(20):
        assert await lookup(address, "a@example.org") == "OK a@example.org"
        server.revoke_all()  # the API now refuses the token the daemon holds
        assert await lookup(address, "b@example.org") == "OK b@example.org"
        # One new token (by the refresh token, which survived), one retried API request.
        assert (server.count(LOGIN), server.count(REFRESH)) == (1, 1)
        assert server.count("/api/users") == 3


async def test_a_key_the_api_refuses_costs_one_renewal_not_one_per_lookup(nursery: trio.Nursery) -> None:
    """An API that answers 401 for one key whatever the token: the first such 401 forces one renewal, the fresh
    token's 401 is the answer (PERM, as any other 4xx: never NOTFOUND), and the next lookups of that key send no
    token request while the back-off (2 s after a renewal that did not help) lasts. Other keys keep working."""
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=300)
    server.refused_keys.add("denied@example.org")
    await server.start(nursery)
    daemon = await start_daemon(nursery, pfx_config(server))
    address = daemon.address("socket_map")
    with trio.fail_after(30):
        assert await lookup(address, "a@example.org") == "OK a@example.org"
        started = trio.current_time()
        replies = [await lookup(address, "denied@example.org") for _ in range(21)]
        elapsed = trio.current_time() - started
        assert all(reply.startswith("PERM ") for reply in replies), replies
        # Before the fix: 1 login + 21 forced renewals. Now one forced renewal (by the refresh token), plus at
        # most one per back-off window (2 s, 4 s, ...) should these lookups have taken that long.
        if elapsed < 2.0:
            assert (server.count(LOGIN), server.count(REFRESH)) == (1, 1)
            assert server.count("/api/users") == 1 + 2 + 20  # one retry, for the first refused lookup only
        else:
            assert token_requests(server) <= 2 + int(elapsed).bit_length()
        requests = token_requests(server)
        assert await lookup(address, "b@example.org") == "OK b@example.org"
        assert token_requests(server) == requests
    log = daemon.log.getvalue()
    assert log.count("backend refused a freshly renewed bearer token too") == 1


async def test_a_token_the_api_never_accepts_is_renewed_at_a_falling_rate(nursery: trio.Nursery) -> None:
    """Every key refused (a token meant for another audience): renewals back off 1, 2, 4 s... instead of one per
    lookup; the answers are PERM throughout."""
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=300)
    server.refuse_every_key = True
    await server.start(nursery)
    daemon = await start_daemon(nursery, pfx_config(server))
    address = daemon.address("socket_map")
    with trio.fail_after(30):
        started = trio.current_time()
        replies = []
        for index in range(40):
            replies.append(await lookup(address, f"k{index}@example.org"))
            await trio.sleep(0.1)
        elapsed = trio.current_time() - started
    assert all(reply.startswith("PERM ") for reply in replies), replies
    # 4 s or more of lookups: forced renewals at about 0 s and 2 s (after 1 s + the 2 s back-off); 2 + 1 logins
    # and refreshes at most for that span, where one per lookup made 41.
    assert 2 <= token_requests(server) <= 2 + int(elapsed).bit_length(), (token_requests(server), elapsed)


async def test_one_token_request_for_a_thousand_concurrent_lookups(nursery: trio.Nursery) -> None:
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=300)
    await server.start(nursery)
    runtime = Runtime(parse_config(pfx_config(server), "test.yml"))
    log = get_logger()
    answers: list[str] = []

    async def one(index: int) -> None:
        reply = await runtime.socketmap(SocketmapRequest("users", f"u{index}@example.org"), log)
        answers.append(reply.status.value)

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as lookups:
                for index in range(1000):
                    lookups.start_soon(one, index)
    finally:
        await runtime.aclose()
    assert answers.count(SocketmapStatus.OK.value) == 1000
    assert token_requests(server) == 1


async def test_token_endpoint_outage_answers_temp_and_backs_off(nursery: trio.Nursery) -> None:
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=300)
    await server.start(nursery)
    server.fault = Fault.REFUSE
    daemon = await start_daemon(nursery, pfx_config(server))
    address = daemon.address("socket_map")
    with trio.fail_after(20):
        replies = [await lookup(address, f"k{index}@example.org") for index in range(30)]
        # Never NOTFOUND: the key may well exist. One token request; the other 29 lookups hit the back-off.
        assert all(reply.startswith("TEMP ") for reply in replies), replies
        assert token_requests(server) == 1
        server.fault = Fault.NONE
        await trio.sleep(1.2)  # the first back-off window is 1 s
        assert await lookup(address, "k@example.org") == "OK k@example.org"
        assert token_requests(server) == 2
    for reject in (Fault.REJECT, Fault.FORBID):  # wrong credentials: TEMP as well, never NOTFOUND
        server.fault = reject
        server.revoke_all()
        with trio.fail_after(10):
            reply = await lookup(address, "k@example.org")
        assert reply.startswith("TEMP "), reply


async def test_oidc_client_credentials_through_discovery(nursery: trio.Nursery) -> None:
    server = TokenServer(lifetime=300)
    await server.start(nursery)
    server.add_client("pfxhttp-client", ClientMethod.CLIENT_SECRET_BASIC, secret=PASSWORD)
    config = f"""
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
socket_maps:
  one:
    target: {server.url}/api/one
    value_field: data.result
    backend_oidc_auth: &oidc
      enabled: true
      configuration_uri: {server.url}/.well-known/openid-configuration
      client_id: pfxhttp-client
      client_secret: {PASSWORD}
      scopes: [mail.read]
  two:
    target: {server.url}/api/two
    value_field: data.result
    backend_oidc_auth: *oidc
"""
    daemon = await start_daemon(nursery, config)
    address = daemon.address("socket_map")
    with trio.fail_after(20):
        assert await lookup(address, "a@example.org", "one") == "OK a@example.org"
        assert await lookup(address, "b@example.org", "two") == "OK b@example.org"
    # Two entries with the same client and scopes share one token: one discovery, one token request.
    assert (server.count("/.well-known/openid-configuration"), server.count(OIDC_TOKEN)) == (1, 1)
    assert server.scopes_granted == ["mail.read"]


async def test_restarted_daemon_reuses_the_stored_token(nursery: trio.Nursery, tmp_path: Path) -> None:
    """The issue's "done when": lookups keep answering across token expiries and a real restart of the
    daemon process, and the token requests are exactly the predicted ones."""
    server = TokenServer(users={"pfxhttp": PASSWORD}, lifetime=6)  # renewed at half-life: 3 s
    await server.start(nursery)
    port = unused_port()
    config = tmp_path / "pfxhttp.yml"
    db = tmp_path / "tokens.db"
    config.write_text(pfx_config(server, port=port, db=db))
    address = f"127.0.0.1:{port}"
    with trio.fail_after(60):
        async with pfxhttp_process("run", "--config", str(config), output=tmp_path / "first.log") as first:
            await wait_serving(address)
            assert await lookup(address, "a@example.org") == "OK a@example.org"
            await trio.sleep(3.4)  # past the renewal point
            assert await lookup(address, "b@example.org") == "OK b@example.org"
            await _wait_count(server, REFRESH, 1)
            first.send_signal(signal.SIGTERM)
            assert await first.wait() == 0
        assert (server.count(LOGIN), server.count(REFRESH)) == (1, 1)
        assert db.stat().st_mode & 0o777 == 0o600
        async with pfxhttp_process("run", "--config", str(config), output=tmp_path / "second.log") as second:
            await wait_serving(address)
            # The renewed token (3 s old of 6) is still valid: the restarted daemon asks nobody for a token.
            assert await lookup(address, "c@example.org") == "OK c@example.org"
            assert (server.count(LOGIN), server.count(REFRESH)) == (1, 1)
            await trio.sleep(3.4)  # the stored token expires: the refresh token it kept renews it
            assert await lookup(address, "d@example.org") == "OK d@example.org"
            await _wait_count(server, REFRESH, 2)
            second.send_signal(signal.SIGTERM)
            assert await second.wait() == 0
    assert (server.count(LOGIN), server.count(REFRESH)) == (1, 2)
    logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
    assert PASSWORD not in logs
    assert "bearer token obtained" in logs


async def wait_serving(address: str) -> None:
    host, port = address.rsplit(":", 1)
    for _ in range(200):  # bounded: the daemon binds within a second or two
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except OSError:
            await trio.sleep(0.05)
            continue
        await stream.aclose()
        return
    raise AssertionError(f"nothing listens on {address}")


async def _wait_count(server: TokenServer, path: str, count: int) -> None:
    for _ in range(100):  # bounded: a background renewal lands within a few ms
        if server.count(path) >= count:
            return
        await trio.sleep(0.02)
