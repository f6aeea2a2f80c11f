"""Prometheus metrics: one registry per daemon, cheap on the request path, served over HTTP by trio.

Labels only ever carry configured names, never a value a client sent: a socketmap request for a map that is
not configured counts as ``name="(unknown)"``, and a policy reply counts by its action word reduced to the
closed set of access(5) actions (:class:`PolicyStatus`). So the configuration alone fixes the number of series;
no client can grow it.

Cost on the request path: every label child is bound once (``labels()`` takes a lock and builds a key tuple,
several times the cost of an increment), so a request costs one ``inc()`` on a pre-bound child, a backend
call one ``observe()`` and one ``inc()``. Numbers the daemon keeps anyway (cache statistics, circuit breaker
state, worker pool occupancy, busy connections) are not counted a second time: :class:`_StateCollector` reads
them when Prometheus scrapes.

The scrape endpoint is :mod:`pfxhttp.server.metrics_http`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from pfxhttp.backend.guard import BreakerState
from pfxhttp.backend.mapping import Outcome, OutcomeKind
from pfxhttp.backend.runtime import BUSY, CIRCUIT_OPEN, Runtime
from pfxhttp.config.model import Config, EntryKind, ListenConfig, ListenKind
from pfxhttp.protocol.socketmap import SocketmapStatus
from pfxhttp.protocol.tcptable import TcpTableStatus

UNKNOWN_NAME = "(unknown)"  # the name label of a socketmap request for a map that is not configured
# Backend request durations from 1 ms (a cache-warm local API) to 10 s (the default http_client timeout).
BACKEND_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_ENTRY_KIND = {EntryKind.SOCKET_MAP: "socket_map", EntryKind.POLICY_SERVICE: "policy_service"}


class PolicyStatus(enum.Enum):
    """The status label of a policy request: the first word of the action (access(5), case-insensitive as
    Postfix reads it), a numeric ``4NN``/``5NN`` reply, ``other`` (restriction names, typos), or ``(closed)``
    when the connection was closed without a reply (``on_error: close``)."""

    OK = "OK"
    DUNNO = "DUNNO"
    REJECT = "REJECT"
    DEFER = "DEFER"
    DEFER_IF_REJECT = "DEFER_IF_REJECT"
    DEFER_IF_PERMIT = "DEFER_IF_PERMIT"
    BCC = "BCC"
    DISCARD = "DISCARD"
    FILTER = "FILTER"
    HOLD = "HOLD"
    PREPEND = "PREPEND"
    REDIRECT = "REDIRECT"
    INFO = "INFO"
    WARN = "WARN"
    CODE_4NN = "4NN"
    CODE_5NN = "5NN"
    OTHER = "other"
    CLOSED = "(closed)"


_ACTION_WORDS = frozenset(
    s.value for s in PolicyStatus if s.value.replace("_", "").isalpha() and s.value.isupper()
)


class EntryMeter:
    """One entry's backend metrics, bound once; ``record`` is what the runtime calls per backend lookup."""

    __slots__ = ("_busy", "_circuit_open", "_outcomes", "_seconds")

    def __init__(self, metrics: Metrics, kind: EntryKind, name: str) -> None:
        labels = (_ENTRY_KIND[kind], name)
        self._seconds = metrics.backend_seconds.labels(*labels)
        self._outcomes = {k: metrics.backend_outcomes.labels(*labels, k.value) for k in OutcomeKind}
        self._busy = metrics.backend_outcomes.labels(*labels, "busy")
        self._circuit_open = metrics.backend_outcomes.labels(*labels, "circuit_open")

    def record(self, outcome: Outcome, seconds: float) -> None:
        # Answers given without a backend request are outcomes of their own, and not timed.
        if outcome is BUSY:
            self._busy.inc()
        elif outcome is CIRCUIT_OPEN:
            self._circuit_open.inc()
        else:
            self._seconds.observe(seconds)
            self._outcomes[outcome.kind].inc()


class ListenerMeter:
    """One listener's request counters and open-connection gauge, bound once; used by the connection loops."""

    __slots__ = ("_maps", "_policy", "_tcp_table", "_unknown_map", "connections")

    def __init__(self, metrics: Metrics, listener: ListenConfig) -> None:
        kind = listener.kind.value
        # socket_map listeners have no name of their own (they serve every map): their address stands in.
        self.connections = metrics.open_connections.labels(kind, listener.name or listener.describe())
        # Only this kind's children: a bound child is a series (at 0) even before anything counts it.
        self._maps = metrics.socket_map_requests  # shared, so a map added by a reload is known everywhere
        self._unknown_map: dict[SocketmapStatus, Counter] = {}
        self._policy: dict[str, Counter] = {}
        self._tcp_table: dict[TcpTableStatus, Counter] = {}
        count, name = metrics.requests, listener.name
        if listener.kind is ListenKind.SOCKET_MAP:
            self._unknown_map = metrics.socket_map_requests_for(UNKNOWN_NAME)
        elif listener.kind is ListenKind.POLICY_SERVICE:
            self._policy = {s.value: count.labels(kind, name, s.value) for s in PolicyStatus}
        else:
            self._tcp_table = {s: count.labels(kind, name, str(s.value)) for s in TcpTableStatus}

    def socketmap(self, name: str, status: SocketmapStatus) -> None:
        self._maps.get(name, self._unknown_map)[status].inc()

    def policy(self, action: str | None) -> None:
        """Count one policy reply by its action; None: closed without a reply."""
        if action is None:
            self._policy[PolicyStatus.CLOSED.value].inc()
            return
        child = self._policy.get(action) if action in _ACTION_WORDS else None  # a bare "DUNNO", "OK"
        if child is None:
            words = action.split(None, 1)
            word = words[0].upper() if words else ""
            if word in _ACTION_WORDS:
                child = self._policy[word]
            elif len(word) == 3 and word.isdigit() and word[0] in "45":
                child = self._policy[f"{word[0]}NN"]
            else:
                child = self._policy[PolicyStatus.OTHER.value]
        child.inc()

    def tcp_table(self, status: TcpTableStatus) -> None:
        self._tcp_table[status].inc()


class Metrics:
    """Every metric of one daemon in its own registry (no global state: two daemons in a process share none).

    ``configure`` (the Runtime calls it) binds the children for a configuration's names; it only adds, so the
    counters of a name survive a reload. ``attach`` (the Server calls it) names where the scrape-time values
    come from.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "pfxhttp_requests",
            "Requests answered, by listener kind, configured map/service/listener name and reply status "
            "(socketmap status word; policy action class; tcp_table code).",
            ("listener_kind", "name", "status"),
            registry=registry,
        )
        self.backend_seconds = Histogram(
            "pfxhttp_backend_request_seconds",
            "Backend lookups (cache misses) from their start to their outcome, waiting for a worker pool slot "
            "included; answers given without a backend request (busy, circuit_open) are not timed.",
            ("entry_kind", "entry"),
            buckets=BACKEND_SECONDS_BUCKETS,
            registry=registry,
        )
        self.backend_outcomes = Counter(
            "pfxhttp_backend_outcomes",
            "Backend lookup outcomes: found, not_found, error, temp, timeout, or busy (worker pool full) and "
            "circuit_open (answered at once by an open circuit breaker).",
            ("entry_kind", "entry", "outcome"),
            registry=registry,
        )
        self.open_connections = Gauge(
            "pfxhttp_open_connections",
            "Open Postfix connections, by listener kind and listener name (socket_map listeners: address).",
            ("listener_kind", "name"),
            registry=registry,
        )
        self.token_fetches = Counter(
            "pfxhttp_token_fetches",
            "Bearer token requests to token endpoints (jwt_auth, backend_oidc_auth), by result.",
            ("result",),
            registry=registry,
        )
        for result in ("success", "failure"):  # exported as 0 from the start, so rates work at once
            self.token_fetches.labels(result)
        self.state = _StateCollector()
        registry.register(self.state)
        ProcessCollector(registry=registry)
        self.socket_map_requests: dict[str, dict[SocketmapStatus, Counter]] = {}
        self._entries: dict[tuple[EntryKind, str], EntryMeter] = {}
        self._listeners: dict[ListenConfig, ListenerMeter] = {}

    @classmethod
    def for_config(cls, config: Config) -> Metrics | None:
        """A Metrics for ``config`` if ``server.metrics.enabled``, else None (no metrics, no cost)."""
        if not config.server.metrics.enabled:
            return None
        metrics = cls()
        metrics.configure(config)
        return metrics

    def configure(self, config: Config) -> None:
        """Bind the children of every name ``config`` defines (idempotent; names are only ever added)."""
        if any(listener.kind is ListenKind.SOCKET_MAP for listener in config.server.listen):
            for name in config.socket_maps:
                self.socket_map_requests_for(name)
        for entry in (*config.socket_maps.values(), *config.policy_services.values()):
            self.entry(entry.kind, entry.name)
        for listener in config.server.listen:
            self.listener(listener)

    def socket_map_requests_for(self, name: str) -> dict[SocketmapStatus, Counter]:
        children = self.socket_map_requests.get(name)
        if children is None:
            kind = ListenKind.SOCKET_MAP.value
            children = {s: self.requests.labels(kind, name, s.value) for s in SocketmapStatus}
            self.socket_map_requests[name] = children
        return children

    def token_fetch(self, success: bool) -> None:
        """One request to a token endpoint ended (Runtime's auth sources call this)."""
        self.token_fetches.labels("success" if success else "failure").inc()

    def entry(self, kind: EntryKind, name: str) -> EntryMeter:
        meter = self._entries.get((kind, name))
        if meter is None:
            meter = self._entries[kind, name] = EntryMeter(self, kind, name)
        return meter

    def listener(self, listener: ListenConfig) -> ListenerMeter:
        meter = self._listeners.get(listener)
        if meter is None:
            meter = self._listeners[listener] = ListenerMeter(self, listener)
        return meter

    def attach(self, runtime: Callable[[], Runtime], busy_connections: Callable[[], int]) -> None:
        """Read caches, breakers and pools from whatever ``runtime()`` serves now, at each scrape."""
        self.state.runtime = runtime
        self.state.busy_connections = busy_connections

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


Family = CounterMetricFamily | GaugeMetricFamily
_ENTRY = ("entry_kind", "entry")
_POOL = ("pool", "listener_kind", "name")  # pool: "server" (the server-wide one) or "listener"
# The scrape-time families: key, type, name, help, labels.
_STATE_FAMILIES: tuple[tuple[str, type[Family], str, str, tuple[str, ...]], ...] = (
    ("hits", CounterMetricFamily, "pfxhttp_cache_hits", "Lookups answered from the answer cache.", _ENTRY),
    ("misses", CounterMetricFamily, "pfxhttp_cache_misses", "Cache lookups without a fresh answer.", _ENTRY),
    (
        "stale",
        CounterMetricFamily,
        "pfxhttp_cache_stale_served",
        "Last good answers served because the backend failed (stale_if_error, response_cache).",
        _ENTRY,
    ),
    (
        "open",
        GaugeMetricFamily,
        "pfxhttp_circuit_breaker_open",
        "1 while the entry's circuit breaker is open or half-open (probing), else 0.",
        _ENTRY,
    ),
    ("opens", CounterMetricFamily, "pfxhttp_circuit_breaker_opens", "Times the circuit opened.", _ENTRY),
    ("pool_in_flight", GaugeMetricFamily, "pfxhttp_worker_pool_in_flight", "Worker pool slots taken.", _POOL),
    ("pool_waiting", GaugeMetricFamily, "pfxhttp_worker_pool_waiting", "Lookups waiting for a slot.", _POOL),
    (
        "in_flight",
        GaugeMetricFamily,
        "pfxhttp_in_flight_requests",
        "Postfix requests being answered now (connections busy with a request, not waiting for one).",
        (),
    ),
)


def _state_families() -> dict[str, Family]:
    return {key: cls(name, text, labels=labels) for key, cls, name, text, labels in _STATE_FAMILIES}


class _StateCollector:
    """Scrape-time view of numbers the daemon keeps anyway: nothing on the request path counts them twice."""

    def __init__(self) -> None:
        self.runtime: Callable[[], Runtime] | None = None
        self.busy_connections: Callable[[], int] | None = None

    def describe(self) -> Iterable[Metric]:
        # Lets the registry check names at register time without calling collect (nothing is attached yet).
        return list(_state_families().values())

    def collect(self) -> Iterable[Metric]:
        families = _state_families()
        if self.busy_connections is not None:
            families["in_flight"].add_metric([], self.busy_connections())
        if self.runtime is not None:
            self._collect_runtime(self.runtime(), families)
        return list(families.values())

    @staticmethod
    def _collect_runtime(runtime: Runtime, families: dict[str, Family]) -> None:
        for entry in (*runtime.socket_maps.values(), *runtime.policy_services.values()):
            labels = [_ENTRY_KIND[entry.config.kind], entry.config.name]
            guards = runtime.guards[id(entry)]
            if guards.cache is not None:
                stats = guards.cache.stats
                families["hits"].add_metric(labels, stats.hits)
                families["misses"].add_metric(labels, stats.misses)
                families["stale"].add_metric(labels, stats.stale_served)
            breaker = guards.breaker
            if breaker is not None:
                families["open"].add_metric(labels, 0 if breaker.state is BreakerState.CLOSED else 1)
                families["opens"].add_metric(labels, breaker.opened_count)
        # Listeners may share labels (one policy service on tcp and unix): their pools are summed per label set.
        pools: dict[tuple[str, str, str], tuple[int, int]] = {}
        for pool in runtime.server_pools:
            pools["server", "", ""] = (pool.in_flight, pool.waiting)
        for listener in runtime.config.server.listen:
            chain = runtime.listener_pools.get(listener.identity())
            if chain is None:
                continue
            key = ("listener", listener.kind.value, listener.name or listener.describe())
            in_flight, waiting = pools.get(key, (0, 0))
            pools[key] = (in_flight + chain[0].in_flight, waiting + chain[0].waiting)
        for key, (in_flight, waiting) in pools.items():
            families["pool_in_flight"].add_metric(list(key), in_flight)
            families["pool_waiting"].add_metric(list(key), waiting)
