"""The metrics endpoint itself: one registry per daemon, basic authentication, only GET and HEAD of the configured
path, nothing bound without metrics, the closed set of policy action labels, malformed scrapes closing only their
connection, a failing collector answered 500 and logged."""

from __future__ import annotations

import base64

import pytest
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config.model import (
    BasicAuth,
    Config,
    ListenConfig,
    ListenKind,
    ListenType,
    MetricsConfig,
    ServerConfig,
)
from pfxhttp.logsetup import get_logger
from pfxhttp.server.app import Server
from pfxhttp.server.metrics import Metrics, PolicyStatus
from tests.conftest import (
    Backend,
    socketmap_query,
)
from tests.test_metrics import METRICS, http, metrics_address, request_labels, scrape, start


async def test_each_daemon_has_its_own_registry(nursery: trio.Nursery, backend: Backend) -> None:
    first = await start(nursery, backend)
    second = await start(nursery, backend)
    echo_ok = request_labels("socket_map", "echo", "OK")
    with trio.fail_after(10):
        assert await socketmap_query(first.address("socket_map"), "echo", "a") == "OK a"
        assert (await scrape(first))["pfxhttp_requests_total"][echo_ok] == 1
        assert (await scrape(second))["pfxhttp_requests_total"][echo_ok] == 0
    assert metrics_address(first) != metrics_address(second)


async def test_basic_auth_is_required_when_configured(nursery: trio.Nursery, backend: Backend) -> None:
    config = MetricsConfig(enabled=True, port=0, basic_auth=BasicAuth("prometheus", "s3cr\u00e9t"))
    daemon = await start(nursery, backend, config)
    address = metrics_address(daemon)

    def basic(user: str, password: str, scheme: str = "Basic") -> tuple[str, str]:
        return ("Authorization", f"{scheme} {base64.b64encode(f'{user}:{password}'.encode()).decode()}")

    with trio.fail_after(10):
        for headers in (
            [],
            [basic("prometheus", "wrong")],
            [basic("other", "s3cr\u00e9t")],
            [("Authorization", "")],
        ):
            status, found, body = await http(address, headers=headers)
            assert status == 401
            assert found["www-authenticate"].startswith("Basic realm=")
            assert b"pfxhttp_" not in body
        status, _, _ = await http(address, "/elsewhere")
        assert status == 401  # nothing about the paths is told without credentials
        for scheme in ("Basic", "basic"):
            status, _, body = await http(address, headers=[basic("prometheus", "s3cr\u00e9t", scheme)])
            assert status == 200
            assert b"pfxhttp_requests_total" in body


async def test_only_get_and_head_of_the_configured_path(nursery: trio.Nursery, backend: Backend) -> None:
    daemon = await start(nursery, backend, MetricsConfig(enabled=True, port=0, path="/custom"))
    address = metrics_address(daemon)
    with trio.fail_after(10):
        for target in ("/metrics", "/", "/custom/x"):
            assert (await http(address, target))[0] == 404
        status, found, body = await http(address, "/custom", "POST")
        assert (status, found["allow"]) == (405, "GET, HEAD")
        status, found, body = await http(address, "/custom", "HEAD")
        assert status == 200 and body == b""
        assert int(found["content-length"]) > 0  # the GET body's length (RFC 9110 section 9.3.2)
        status, _, body = await http(address, "/custom?name[]=x", "GET")
        assert status == 200 and b"pfxhttp_open_connections" in body
    lines = [
        line for line in daemon.log.getvalue().splitlines() if "listening" in line and "kind=metrics" in line
    ]
    assert len(lines) == 1
    assert f"name=/custom addresses=['{address}']" in lines[0]


async def test_without_metrics_nothing_is_bound_or_counted(nursery: trio.Nursery, backend: Backend) -> None:
    daemon = await start(nursery, backend, MetricsConfig(enabled=False))
    assert daemon.server.metrics_endpoint is None and daemon.server.metrics is None
    assert daemon.server.runtime.meters == {}
    with trio.fail_after(10):
        assert await socketmap_query(daemon.address("socket_map"), "echo", "a") == "OK a"


def test_a_runtime_without_metrics_cannot_serve_enabled_metrics() -> None:
    enabled = Config(server=ServerConfig(metrics=METRICS))
    with pytest.raises(ValueError, match="without metrics"):
        Server(Runtime(enabled), get_logger())


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("DUNNO", "DUNNO"),
        ("dunno", "DUNNO"),  # access(5) actions are case-insensitive
        ("REJECT 5.7.1 no", "REJECT"),
        ("defer_if_permit\tlater", "DEFER_IF_PERMIT"),
        ("450 4.7.1 later", "4NN"),
        ("554 no", "5NN"),
        ("250 ok", "other"),
        ("permit_mynetworks", "other"),
        ("REJECTED", "other"),
        (" ", "other"),
        (None, "(closed)"),
    ],
)
def test_policy_actions_are_reduced_to_a_closed_set(action: str | None, status: str) -> None:
    metrics = Metrics()
    listener = ListenConfig(ListenKind.POLICY_SERVICE, "svc", ListenType.TCP, "127.0.0.1", 0)
    metrics.listener(listener).policy(action)
    text = metrics.exposition().decode()
    counted = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "pfxhttp_requests"
        for sample in family.samples
        if sample.name == "pfxhttp_requests_total" and sample.value
    }
    assert counted == {status: 1}
    assert len(PolicyStatus) == len({s.value for s in PolicyStatus})


async def test_a_malformed_request_closes_only_its_connection(
    nursery: trio.Nursery, backend: Backend
) -> None:
    daemon = await start(nursery, backend)
    host, port = metrics_address(daemon).rsplit(":", 1)
    with trio.fail_after(10):
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            assert await stream.receive_some(100) == b""  # closed, and the endpoint serves on
        assert (await scrape(daemon))["pfxhttp_requests_total"]


class BrokenCollector:
    def collect(self) -> list[Metric]:
        raise RuntimeError("a collector bug")


async def test_a_failing_scrape_is_answered_500_and_logged(nursery: trio.Nursery, backend: Backend) -> None:
    daemon = await start(nursery, backend)
    assert daemon.server.metrics is not None
    daemon.server.metrics.registry.register(BrokenCollector())
    with trio.fail_after(10):
        assert (await http(metrics_address(daemon)))[0] == 500
        assert await socketmap_query(daemon.address("socket_map"), "echo", "a") == "OK a"  # mail goes on
    assert "metrics could not be rendered" in daemon.log.getvalue()
    assert "a collector bug" in daemon.log.getvalue()
