"""REST-shaped backends: method, templated target and query, status lists, not-found statuses, value_template,
policy error_action and on_error: close. The real daemon in front of a real local HTTP server."""

from __future__ import annotations

from urllib.parse import unquote

import orjson
import pytest
import trio

from pfxhttp.demo.httpd import HttpReply, HttpRequest
from tests.conftest import Backend, connect, json_reply, policy_query, socketmap_query, start_daemon

ALIASES = {"office@example.com": "alice@example.com,bob@example.com", "gone@example.com": None}


async def alias_resource(request: HttpRequest) -> HttpReply:
    """GET /mail/alias/<id>/ : 200 {"to": ...}, 410 for a deleted alias, 404 otherwise."""
    ident = unquote(request.path.split("?", 1)[0].removeprefix("/mail/alias/").removesuffix("/"))
    if ident not in ALIASES:
        return json_reply({"detail": "Not found."}, 404)
    to = ALIASES[ident]
    return json_reply({"detail": "gone"}, 410) if to is None else json_reply({"id": ident, "to": to}, 201)


async def accounts_by_domain(request: HttpRequest) -> HttpReply:
    """GET /mail/account/?domain=D : a list (possibly empty)."""
    query = dict(part.split("=", 1) for part in request.path.split("?", 1)[1].split("&"))
    names = ["alice", "bob"] if unquote(query.get("domain", "")) == "example.com" else []
    return json_reply([{"name": n, "domain": "example.com"} for n in names])


async def echo_request(request: HttpRequest) -> HttpReply:
    return json_reply({"method": request.method, "path": request.path, "body": request.body.decode()})


CONFIG = """
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: strict, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: closer, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
  http_client: {{timeout: 2s}}
socket_maps:
  aliases:
    method: GET
    target: "{url}/mail/alias/{{{{ key }}}}/"
    status_code: [200, 201]
    not_found_status: [404, 410]
    value_field: to
  domains:
    method: GET
    target: "{url}/mail/account/"
    query: {{domain: "{{{{ key }}}}"}}
    value_template: "{{{{ key if response | length > 0 else '' }}}}"
  echo:
    method: PUT
    target: "{url}/echo/{{{{ key }}}}"
    value_template: "{{{{ response.method }}}} {{{{ response.path }}}} {{{{ response.body }}}}"
  shaky:
    target: "{url}/echo/x"
    value_template: "{{{{ response.nope.deeper }}}}"
policy_services:
  strict:
    target: "{url}/status500"
    value_field: policy.result
    error_action: "DEFER 4.3.0 Directory temporarily unavailable"
  closer:
    target: "{url}/status500"
    value_field: policy.result
    on_error: close
"""


@pytest.fixture
async def rest(nursery: trio.Nursery, backend: Backend) -> str:
    backend.routes["/mail/alias/*"] = alias_resource
    backend.routes["/mail/account/"] = accounts_by_domain
    backend.routes["/echo/*"] = echo_request
    daemon = await start_daemon(nursery, CONFIG.format(url=backend.url))
    return daemon.address("socket_map")


async def test_get_with_templated_target_and_status_lists(rest: str, backend: Backend) -> None:
    with trio.fail_after(10):
        assert (
            await socketmap_query(rest, "aliases", "office@example.com")
            == "OK alice@example.com,bob@example.com"
        )  # 201 is in the status list
        assert await socketmap_query(rest, "aliases", "gone@example.com") == "NOTFOUND "  # 410
        assert await socketmap_query(rest, "aliases", "nobody@example.com") == "NOTFOUND "  # 404
    request = backend.requests[0]
    assert (request.method, request.path, request.body) == ("GET", "/mail/alias/office%40example.com/", b"")


@pytest.mark.parametrize("key", ["a/b", "x?y=1#frag", "sp ace", "%2F", "..%2F..%2Fadmin"])
async def test_key_in_path_is_one_encoded_segment(rest: str, backend: Backend, key: str) -> None:
    with trio.fail_after(10):
        reply = await socketmap_query(rest, "echo", key)
    method, path, _body = reply.removeprefix("OK ").split(" ", 2)
    assert method == "PUT"
    assert path.startswith("/echo/") and "/" not in path.removeprefix("/echo/")
    assert unquote(path.removeprefix("/echo/")) == key


async def test_key_climbing_out_of_its_segment_is_not_sent(rest: str, backend: Backend) -> None:
    """Servers that decode %2F before resolving dot segments would route ../../admin elsewhere."""
    with trio.fail_after(10):
        assert await socketmap_query(rest, "echo", "../../admin") == "NOTFOUND "
    assert backend.requests == []


async def test_query_parameters_and_value_template(rest: str, backend: Backend) -> None:
    with trio.fail_after(10):
        assert await socketmap_query(rest, "domains", "example.com") == "OK example.com"
        assert await socketmap_query(rest, "domains", "example.org") == "NOTFOUND "  # empty list -> ""
        assert await socketmap_query(rest, "domains", "a&b=c") == "NOTFOUND "
    assert backend.requests[0].path == "/mail/account/?domain=example.com"
    assert backend.requests[2].path == "/mail/account/?domain=a%26b%3Dc"  # cannot inject parameters


async def test_put_sends_the_payload(rest: str, backend: Backend) -> None:
    with trio.fail_after(10):
        reply = await socketmap_query(rest, "echo", "k@x")
    assert reply.startswith("OK PUT /echo/k%40x ")
    assert orjson.loads(reply.split(" ", 3)[3]) == {"key": "k@x"}


async def test_value_template_failure_is_perm_never_notfound(rest: str) -> None:
    with trio.fail_after(10):
        assert await socketmap_query(rest, "shaky", "x") == "PERM value_template failed"


async def test_policy_error_action_and_on_error_close(nursery: trio.Nursery, backend: Backend) -> None:
    daemon = await start_daemon(nursery, CONFIG.format(url=backend.url))
    strict, closer = [b.addresses[0] for b in daemon.server.bound if b.config.kind.value == "policy_service"]
    with trio.fail_after(10):
        assert (
            await policy_query(strict, {"recipient": "x@y"})
            == "action=DEFER 4.3.0 Directory temporarily unavailable\n\n"
        )
        async with await connect(closer) as stream:
            await stream.send_all(b"recipient=x@y\n\n")
            assert await stream.receive_some(100) == b""  # closed without a reply
