"""Prometheus metrics through the real daemon: every request kind and backend outcome, scraped over HTTP.

Counters are asserted exactly, label sets too: labels carry configured names only, never what a client sent.
The endpoint itself (auth, paths, registries, failures): test_metrics_endpoint.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import h11
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pfxhttp.config.model import (
    MetricsConfig,
)
from pfxhttp.demo.httpd import HttpReply, HttpRequest
from pfxhttp.protocol.netstring import encode as netstring
from pfxhttp.server.metrics import PolicyStatus
from tests.conftest import (
    Backend,
    Daemon,
    connect,
    echo_key,
    json_reply,
    read_netstring,
    read_policy_reply,
    socketmap_exchange,
    start_daemon,
)

METRICS = MetricsConfig(enabled=True, address="127.0.0.1", port=0)
CONFIG = """
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: policy, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: policy_service, name: closing, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: tcp_table, name: echo, type: tcp, address: 127.0.0.1, port: 0,
        worker_pool: {{max_workers: 2, max_queue: 2}}}}
    - {{kind: tcp_table, name: absent, type: tcp, address: 127.0.0.1, port: 0}}
    - {{kind: tcp_table, name: fivehundred, type: tcp, address: 127.0.0.1, port: 0}}
  logging: {{level: debug}}
  http_client: {{timeout: 500ms}}
  worker_pool: {{max_workers: 8, max_queue: 8}}
socket_maps:
  defaults:
    payload: '{{"key": "{{{{ .Key }}}}"}}'
    value_field: data.result
    error_field: error
    no_error_value: not-found
  echo: {{target: "{url}/map"}}
  absent: {{target: "{url}/absent"}}
  error: {{target: "{url}/error"}}
  fivehundred: {{target: "{url}/status500", circuit_breaker: {{failures: 1, cooldown: 1h}}}}
  slow: {{target: "{url}/slow"}}
  cached: {{target: "{url}/flip", cache: {{ttl: 1h}}}}
  stale: {{target: "{url}/flip", cache: {{ttl: 1ms, stale_if_error: 1h}}}}
  gate: {{target: "{url}/gate"}}
policy_services:
  defaults:
    payload: '{{{{ .Key }}}}'
    value_field: policy.result
  policy: {{target: "{url}/policy"}}
  closing: {{target: "{url}/status500", on_error: close}}
"""
SOCKET_MAPS = ("echo", "absent", "error", "fivehundred", "slow", "cached", "stale", "gate")
SM_LISTENER = "tcp:127.0.0.1:0"  # a socket_map listener has no name: its configured address labels it

Labels = tuple[tuple[str, str], ...]


class Flip:
    """A backend route that answers like /map until the test makes it fail."""

    def __init__(self) -> None:
        self.failing = False

    async def __call__(self, request: HttpRequest) -> HttpReply:
        if self.failing:
            return json_reply({"error": "down"}, 503)
        return await echo_key(request)


class Gate:
    """A backend route that holds every request until the test opens it."""

    def __init__(self) -> None:
        self.open = trio.Event()
        self.arrived = trio.Event()

    async def __call__(self, request: HttpRequest) -> HttpReply:
        self.arrived.set()
        await self.open.wait()
        return await echo_key(request)


async def reported_error(_request: HttpRequest) -> HttpReply:
    return json_reply({"error": "boom"})


@pytest.fixture
def routes(backend: Backend) -> tuple[Flip, Gate]:
    flip, gate = Flip(), Gate()
    backend.routes.update({"/flip": flip, "/gate": gate, "/error": reported_error})
    return flip, gate


async def start(nursery: trio.Nursery, backend: Backend, metrics: MetricsConfig = METRICS) -> Daemon:
    return await start_daemon(nursery, CONFIG.format(url=backend.url), metrics=metrics)


def metrics_address(daemon: Daemon) -> str:
    endpoint = daemon.server.metrics_endpoint
    assert endpoint is not None
    return endpoint.addresses[0]


async def http(
    address: str, target: str = "/metrics", method: str = "GET", headers: Sequence[tuple[str, str]] = ()
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with h11 over a fresh connection; (status, lower-cased headers, body)."""
    host, port = address.rsplit(":", 1)
    conn = h11.Connection(h11.CLIENT)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        request = h11.Request(method=method, target=target, headers=[("Host", host), *headers])
        await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
        status, found, body = 0, {}, b""
        while True:  # bounded by the caller's fail_after and by the server's end of message
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                found = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, found, body
            else:
                raise AssertionError(f"unexpected {event!r}")


async def scrape(daemon: Daemon) -> dict[str, dict[Labels, float]]:
    """Every sample of one scrape: sample name -> sorted label pairs -> value."""
    status, headers, body = await http(metrics_address(daemon))
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def nonzero(series: dict[Labels, float]) -> dict[Labels, float]:
    return {labels: value for labels, value in series.items() if value}


def request_labels(kind: str, name: str, status: str) -> Labels:
    return (("listener_kind", kind), ("name", name), ("status", status))


def entry_labels(kind: str, name: str, **extra: str) -> Labels:
    return tuple(sorted({"entry_kind": kind, "entry": name, **extra}.items()))


async def policy_exchange(stream: trio.abc.Stream, recipient: str) -> str:
    await stream.send_all(f"request=smtpd_access_policy\nrecipient={recipient}@example.com\n\n".encode())
    return await read_policy_reply(stream)


async def tcp_get(address: str, key: str) -> bytes:
    async with await connect(address) as stream:
        await stream.send_all(f"get {key}\n".encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = await stream.receive_some(4096)
            assert chunk, "closed before a reply"
            data += chunk
        return data


async def test_every_request_kind_and_backend_outcome_is_counted_with_configured_names_only(
    nursery: trio.Nursery, backend: Backend, routes: tuple[Flip, Gate]
) -> None:
    flip, _gate = routes
    daemon = await start(nursery, backend)
    with trio.fail_after(15):
        async with await connect(daemon.address("socket_map")) as stream:
            answers = [
                await socketmap_exchange(stream, name, key)
                for name, key in [
                    ("echo", "a"),
                    ("echo", "b"),
                    ("absent", "x"),
                    ("error", "x"),
                    ("fivehundred", "x"),  # TEMP; the breaker opens after this one failure
                    ("fivehundred", "y"),  # answered by the open circuit
                    ("slow", "x"),  # the 500 ms client timeout
                    ("cached", "k"),  # a miss, then a hit
                    ("cached", "k"),
                    ("stale", "k"),
                ]
            ]
            await trio.sleep(0.01)  # past the 1 ms ttl of "stale": the next lookup asks the backend
            flip.failing = True
            answers.append(await socketmap_exchange(stream, "stale", "k"))  # fails: the last good answer
            answers.append(await socketmap_exchange(stream, "evil<script>", "k"))
        assert [a.split(" ", 1)[0] for a in answers] == [
            *("OK", "OK", "NOTFOUND", "PERM", "TEMP", "TEMP", "TIMEOUT", "OK", "OK", "OK", "OK", "PERM")
        ]
        async with await connect(daemon.address("policy_service")) as stream:
            for recipient in ("dunno", "ok", "reject", "defer", "prepend", "fail"):
                assert (await policy_exchange(stream, recipient)).startswith("action=")
        closing = next(b for b in daemon.server.bound if b.config.name == "closing").addresses[0]
        async with await connect(closing) as stream:
            await stream.send_all(b"request=smtpd_access_policy\n\n")
            assert await stream.receive_some(100) == b""  # on_error: close
        assert (await tcp_get(daemon.tcp_table("echo"), "a")).startswith(b"200 ")
        assert (await tcp_get(daemon.tcp_table("absent"), "x")).startswith(b"500 ")
        assert (await tcp_get(daemon.tcp_table("fivehundred"), "x")).startswith(b"400 ")
        samples = await scrape(daemon)

    requests = samples["pfxhttp_requests_total"]
    expected_series = {
        request_labels("socket_map", name, status)
        for name in (*SOCKET_MAPS, "(unknown)")
        for status in ("OK", "NOTFOUND", "TEMP", "TIMEOUT", "PERM")
    }
    expected_series |= {
        request_labels("policy_service", name, status.value)
        for name in ("policy", "closing")
        for status in PolicyStatus
    }
    expected_series |= {
        request_labels("tcp_table", name, code)
        for name in ("echo", "absent", "fivehundred")
        for code in ("200", "400", "500")
    }
    assert set(requests) == expected_series
    assert nonzero(requests) == {
        request_labels("socket_map", "echo", "OK"): 2,
        request_labels("socket_map", "absent", "NOTFOUND"): 1,
        request_labels("socket_map", "error", "PERM"): 1,
        request_labels("socket_map", "fivehundred", "TEMP"): 2,
        request_labels("socket_map", "slow", "TIMEOUT"): 1,
        request_labels("socket_map", "cached", "OK"): 2,
        request_labels("socket_map", "stale", "OK"): 2,
        request_labels("socket_map", "(unknown)", "PERM"): 1,
        request_labels("policy_service", "policy", "DUNNO"): 1,
        request_labels("policy_service", "policy", "OK"): 1,
        request_labels("policy_service", "policy", "REJECT"): 1,
        request_labels(
            "policy_service", "policy", "DEFER_IF_PERMIT"
        ): 2,  # "defer", and "fail"'s error action
        request_labels("policy_service", "policy", "PREPEND"): 1,
        request_labels("policy_service", "closing", "(closed)"): 1,
        request_labels("tcp_table", "echo", "200"): 1,
        request_labels("tcp_table", "absent", "500"): 1,
        request_labels("tcp_table", "fivehundred", "400"): 1,
    }
    # No label value anywhere came from a client.
    assert all("evil" not in value for series in samples.values() for labels in series for _, value in labels)

    sm, ps = "socket_map", "policy_service"
    assert nonzero(samples["pfxhttp_backend_outcomes_total"]) == {
        entry_labels(sm, "echo", outcome="found"): 3,  # two socketmap lookups, one tcp_table lookup
        entry_labels(sm, "absent", outcome="not_found"): 2,
        entry_labels(sm, "error", outcome="error"): 1,
        entry_labels(sm, "fivehundred", outcome="temp"): 1,
        entry_labels(sm, "fivehundred", outcome="circuit_open"): 2,
        entry_labels(sm, "slow", outcome="timeout"): 1,
        entry_labels(sm, "cached", outcome="found"): 1,
        entry_labels(sm, "stale", outcome="found"): 1,
        entry_labels(sm, "stale", outcome="temp"): 1,
        entry_labels(ps, "policy", outcome="found"): 5,
        entry_labels(ps, "policy", outcome="temp"): 1,
        entry_labels(ps, "closing", outcome="temp"): 1,
    }
    outcomes = ("found", "not_found", "error", "temp", "timeout", "busy", "circuit_open")
    assert len(samples["pfxhttp_backend_outcomes_total"]) == (len(SOCKET_MAPS) + 2) * len(outcomes)
    # Timed: backend lookups only, not the answers of the open circuit.
    assert nonzero(samples["pfxhttp_backend_request_seconds_count"]) == {
        entry_labels(sm, "echo"): 3,
        entry_labels(sm, "absent"): 2,
        entry_labels(sm, "error"): 1,
        entry_labels(sm, "fivehundred"): 1,
        entry_labels(sm, "slow"): 1,
        entry_labels(sm, "cached"): 1,
        entry_labels(sm, "stale"): 2,
        entry_labels(ps, "policy"): 6,
        entry_labels(ps, "closing"): 1,
    }
    slow_buckets = {
        dict(labels)["le"]: value
        for labels, value in samples["pfxhttp_backend_request_seconds_bucket"].items()
        if ("entry", "slow") in labels
    }
    assert (
        slow_buckets["0.25"] == 0 and slow_buckets["1.0"] == slow_buckets["+Inf"] == 1
    )  # the 500 ms timeout

    assert samples["pfxhttp_cache_hits_total"] == {
        entry_labels(sm, "cached"): 1,
        entry_labels(sm, "stale"): 0,
    }
    assert samples["pfxhttp_cache_misses_total"] == {
        entry_labels(sm, "cached"): 1,
        entry_labels(sm, "stale"): 2,
    }
    assert samples["pfxhttp_cache_stale_served_total"] == {
        entry_labels(sm, "cached"): 0,
        entry_labels(sm, "stale"): 1,
    }
    assert samples["pfxhttp_circuit_breaker_open"] == {entry_labels(sm, "fivehundred"): 1}
    assert samples["pfxhttp_circuit_breaker_opens_total"] == {entry_labels(sm, "fivehundred"): 1}
    pools = {
        (("listener_kind", ""), ("name", ""), ("pool", "server")): 0,
        (("listener_kind", "tcp_table"), ("name", "echo"), ("pool", "listener")): 0,
    }
    assert samples["pfxhttp_worker_pool_in_flight"] == pools
    assert samples["pfxhttp_worker_pool_waiting"] == pools
    assert samples["pfxhttp_token_fetches_total"] == {
        (("result", "failure"),): 0,
        (("result", "success"),): 0,
    }
    assert samples["process_cpu_seconds_total"][()] > 0  # the process collector, in our own registry


async def test_open_connections_and_requests_in_flight(
    nursery: trio.Nursery, backend: Backend, routes: tuple[Flip, Gate]
) -> None:
    _flip, gate = routes
    daemon = await start(nursery, backend)
    connections = ("listener_kind", "socket_map"), ("name", SM_LISTENER)
    with trio.fail_after(10):
        samples = await scrape(daemon)
        assert samples["pfxhttp_open_connections"][connections] == 0
        assert samples["pfxhttp_in_flight_requests"] == {(): 0}
        async with await connect(daemon.address("socket_map")) as stream:
            assert await socketmap_exchange(stream, "echo", "a") == "OK a"
            samples = await scrape(daemon)
            assert samples["pfxhttp_open_connections"][connections] == 1
            assert samples["pfxhttp_in_flight_requests"] == {(): 0}  # open, but waiting for a request

            await stream.send_all(netstring(b"gate k"))
            await gate.arrived.wait()
            samples = await scrape(daemon)
            assert samples["pfxhttp_in_flight_requests"] == {(): 1}
            assert samples["pfxhttp_worker_pool_in_flight"][
                ("listener_kind", ""), ("name", ""), ("pool", "server")
            ]
            gate.open.set()
            assert await read_netstring(stream) == "OK k"
        while (await scrape(daemon))["pfxhttp_open_connections"][connections]:  # the server sees the EOF
            await trio.sleep(0.01)
        samples = await scrape(daemon)
    assert samples["pfxhttp_in_flight_requests"] == {(): 0}
    assert (
        samples["pfxhttp_worker_pool_in_flight"][("listener_kind", ""), ("name", ""), ("pool", "server")] == 0
    )
    policy = ("listener_kind", "policy_service"), ("name", "policy")
    assert samples["pfxhttp_open_connections"][policy] == 0
