"""The runtime: what answering one request needs, derived once from one Config.

``Runtime.socketmap``, ``Runtime.policy`` and ``Runtime.tcp_table`` are the per-request entry points. They never
raise for a backend problem: they return the reply the contract table prescribes (or, for a policy service with
``on_error: close``, ``None``: close without replying so Postfix applies smtpd_policy_service_default_action) and
log the detail.

One lookup passes, outside in: the entry's answer cache (a fresh answer costs no backend call), single-flight
(identical concurrent lookups share one backend request), the circuit breaker (open: answer TEMP at once), the
listener's and the server's worker pools (back-pressure on requests in flight, never on connections), the HTTP
request. When the backend fails, a stale or last good FOUND answer is served if the cache allows it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import trio

from pfxhttp.backend.cache import AnswerCache, SingleFlight, policy_cache_key
from pfxhttp.backend.compile import CompiledEntry, compile_config
from pfxhttp.backend.context import lookup_context
from pfxhttp.backend.guard import CircuitBreaker, WorkerPool
from pfxhttp.backend.httpmsg import HttpResponse, PreparedRequest
from pfxhttp.backend.mapping import (
    Outcome,
    OutcomeKind,
    classify,
    policy_reply,
    socketmap_reply,
    tcp_table_reply,
)
from pfxhttp.backend.pool import HttpClient
from pfxhttp.config.model import (
    DEFAULT_POLICY_ERROR_ACTION,
    Config,
    EntryConfig,
    EntryKind,
    ListenConfig,
    LogLevel,
    OnError,
    ResponseCacheConfig,
)
from pfxhttp.errors import BackendBusy, BackendError, BackendTimeout, PayloadError, UnaddressableKey
from pfxhttp.logsetup import get_logger
from pfxhttp.protocol.policy import PolicyReply, PolicyRequest
from pfxhttp.protocol.socketmap import SocketmapReply, SocketmapRequest
from pfxhttp.protocol.tcptable import TcpTableReply

if TYPE_CHECKING:  # imported at run time only when an entry uses auth (the auth stack and httpx: ~5 MB)
    from pfxhttp.backend.auth.manager import AuthManager
    from pfxhttp.backend.auth.source import TokenSource

ANSWERS = (OutcomeKind.FOUND, OutcomeKind.NOT_FOUND)


# Answered without a backend request; metrics count them apart (by identity).
BUSY = Outcome(OutcomeKind.TEMP, reason=BackendBusy.reason)
CIRCUIT_OPEN = Outcome(OutcomeKind.TEMP, reason="backend circuit open")
# A key whose URL path would hold an empty, "." or ".." segment names no resource: not found, never asked.
UNADDRESSABLE = Outcome(OutcomeKind.NOT_FOUND, detail="key renders an empty, '.' or '..' URL path segment")


# --- metrics: pfxhttp.server.metrics implements these (the backend layer must not import the server layer) ---


class EntryMeter(Protocol):
    def record(self, outcome: Outcome, seconds: float) -> None: ...


class LookupMetrics(Protocol):
    def configure(self, config: Config) -> None: ...

    def entry(self, kind: EntryKind, name: str) -> EntryMeter: ...

    def token_fetch(self, success: bool) -> None: ...


# --- end metrics ---


class EntryGuards:
    """The per-entry state of one runtime: answer cache, in-flight lookups, circuit breaker."""

    __slots__ = ("breaker", "cache", "flights")

    def __init__(self, entry: EntryConfig, response_cache: ResponseCacheConfig) -> None:
        # Policy answers are only cacheable by their key_attributes (never by instance or queue_id, which
        # differ per message); without them a policy entry is not cached at all, not even as a last good answer.
        cacheable = entry.kind is EntryKind.SOCKET_MAP or bool(entry.cache and entry.cache.key_attributes)
        self.cache = AnswerCache.for_entry(entry.cache, response_cache) if cacheable else None
        self.flights: SingleFlight[Outcome] = SingleFlight()
        self.breaker = CircuitBreaker(entry.circuit_breaker) if entry.circuit_breaker else None


class Runtime:
    """Compiled entries plus the shared HTTP client; one per loaded configuration."""

    def __init__(
        self, config: Config, client: HttpClient | None = None, metrics: LookupMetrics | None = None
    ) -> None:
        self.config = config
        self.socket_maps, self.policy_services = compile_config(config)
        self.client = client or HttpClient(config.server.http_client, config.server.tls)
        self.max_reply_size = config.server.socketmap_max_reply_size
        self.debug = config.server.logging.level is LogLevel.DEBUG  # per-lookup debug lines are wanted
        self.active = 0  # lookups in progress
        self._drained: trio.Event | None = None
        response_cache = config.server.response_cache
        self.guards = {
            id(entry): EntryGuards(entry.config, response_cache)
            for entry in (*self.socket_maps.values(), *self.policy_services.values())
        }
        server_pool = WorkerPool(config.server.worker_pool) if config.server.worker_pool else None
        self.server_pools: tuple[WorkerPool, ...] = (server_pool,) if server_pool else ()
        # Per listener: its own pool first, then the server-wide one, always in this order (guard.py: no
        # deadlock). Precomputed so a lookup without pools costs one dict probe.
        self.listener_pools: dict[tuple[object, ...], tuple[WorkerPool, ...]] = {
            listen.identity(): (WorkerPool(listen.worker_pool), *self.server_pools)
            for listen in config.server.listen
            if listen.worker_pool
        }
        # Bearer tokens (jwt_auth, backend_oidc_auth): by id(compiled entry); empty = one falsy test per lookup.
        self.auth: AuthManager | None = None
        self.auth_sources: dict[int, TokenSource] = {}
        compiled = (*self.socket_maps.values(), *self.policy_services.values())
        if any(entry.config.jwt_auth or entry.config.backend_oidc_auth for entry in compiled):
            from pfxhttp.backend.auth.manager import AuthManager

            self.auth = AuthManager(
                config,
                (entry.config for entry in compiled),
                self.client.ssl_context,
                get_logger(component="auth"),
                on_fetch=None if metrics is None else metrics.token_fetch,
            )
            self.auth_sources = {
                id(entry): source
                for entry in compiled
                if (source := self.auth.source(entry.config)) is not None
            }
        # metrics: None = no metrics at no cost (one empty-dict test per backend lookup)
        self.metrics = metrics
        self.meters: dict[int, EntryMeter] = {}
        if metrics is not None:
            metrics.configure(config)
            self.meters = {
                id(entry): metrics.entry(entry.config.kind, entry.config.name)
                for entry in (*self.socket_maps.values(), *self.policy_services.values())
            }
        # --- end metrics ---

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.auth is not None:
            await self.auth.aclose()

    async def retire(self, limit: float) -> None:
        """After a reload: let lookups still running on this runtime finish (at most ``limit`` seconds, bounded
        anyway by the HTTP deadline), then close its HTTP connections."""
        self._drained = trio.Event()
        if self.active:
            with trio.move_on_after(limit):
                await self._drained.wait()
        await self.aclose()

    def cache_key(self, entry: CompiledEntry, context: dict[str, Any]) -> Hashable:
        config = entry.config
        if config.kind is EntryKind.SOCKET_MAP:
            return (config.name, context["key"])
        key_attributes = config.cache.key_attributes if config.cache else ()
        return policy_cache_key(config.name, context["attrs"], key_attributes)

    async def lookup(
        self,
        entry: CompiledEntry,
        context: dict[str, Any],
        log: Any,
        request_id: int,
        listener: ListenConfig | None = None,
    ) -> Outcome:
        """One lookup of ``entry`` for one request's template ``context``; never raises for backend trouble."""
        self.active += 1  # retire() waits for these after a reload swapped this runtime out
        try:
            guards = self.guards[id(entry)]
            pools = self.server_pools
            if listener is not None and self.listener_pools:
                pools = self.listener_pools.get(listener.identity(), pools)
            cache = guards.cache
            if cache is None:
                return await self._logged(entry, context, guards.breaker, pools, log, request_id)
            key = self.cache_key(entry, context)
            cached = cache.fresh(key)
            if cached is not None:
                log.debug("answered from cache", request=request_id, entry=entry.config.name)
                return cached
            outcome = await guards.flights.run(
                key, lambda: self._logged(entry, context, guards.breaker, pools, log, request_id)
            )
            if outcome.kind in ANSWERS:
                cache.store(key, outcome)
                return outcome
            stale = cache.stale(key)
            if stale is not None:
                log.error(
                    "backend failed, serving the last good answer",
                    request=request_id,
                    entry=entry.config.name,
                )
                return stale
            return outcome
        finally:
            self.active -= 1
            if not self.active and self._drained is not None:
                self._drained.set()

    async def _logged(
        self,
        entry: CompiledEntry,
        context: dict[str, Any],
        breaker: CircuitBreaker | None,
        pools: tuple[WorkerPool, ...],
        log: Any,
        request_id: int,
    ) -> Outcome:
        started = time.monotonic()
        if breaker is None and not pools:
            outcome = await self._call(entry, context)  # the common case: no extra coroutine layers
        else:
            outcome = await self._guarded(entry, context, breaker, pools)
        elapsed = time.monotonic() - started
        if self.meters:  # metrics
            self.meters[id(entry)].record(outcome, elapsed)
        elapsed_ms = round(elapsed * 1000, 2)
        if outcome.kind in ANSWERS:
            if self.debug:  # building the call's arguments costs more than the dropped line saves
                log.debug(
                    "backend answered"
                    if outcome is not UNADDRESSABLE
                    else "key names no resource, not asked",
                    request=request_id,
                    entry=entry.config.name,
                    outcome=outcome.kind.value,
                    ms=elapsed_ms,
                )
        else:
            log.error(
                "backend failed",
                request=request_id,
                entry=entry.config.name,
                outcome=outcome.kind.value,
                reason=outcome.reason,
                detail=outcome.detail,
                ms=elapsed_ms,
            )
        return outcome

    async def _guarded(
        self,
        entry: CompiledEntry,
        context: dict[str, Any],
        breaker: CircuitBreaker | None,
        pools: tuple[WorkerPool, ...],
    ) -> Outcome:
        if breaker is None:
            return await self._pooled(entry, context, pools)
        with breaker.attempt() as attempt:
            if not attempt.admitted:
                return CIRCUIT_OPEN
            outcome = await self._pooled(entry, context, pools)
            if outcome is BUSY or outcome is UNADDRESSABLE or outcome.reason == PayloadError.reason:
                pass  # our own back-pressure or a key our template cannot render: nothing about the backend
            elif outcome.kind in (OutcomeKind.TEMP, OutcomeKind.TIMEOUT):
                attempt.failure()
            else:
                attempt.success()  # an answer, or a 4xx/error the backend chose to give: it is up
            return outcome

    async def _pooled(
        self, entry: CompiledEntry, context: dict[str, Any], pools: tuple[WorkerPool, ...]
    ) -> Outcome:
        if not pools:
            return await self._call(entry, context)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for pool in pools:
                    await stack.enter_async_context(pool.slot())
                return await self._call(entry, context)
        except BackendBusy:
            return BUSY

    async def _call(self, entry: CompiledEntry, context: dict[str, Any]) -> Outcome:
        builder = entry.request
        try:
            prepared = builder.build(context)
            body: bytes | None = None
            if builder.has_body:
                body = entry.template.render_bytes(context)
                if not entry.template.always_json and body.strip():
                    orjson.loads(body)  # a template branch the load-time check could not reach may be broken
            source = self.auth_sources.get(id(entry)) if self.auth_sources else None
            if source is None:
                response = await self.client.request(prepared, body)
            else:
                response = await self._authorized(source, prepared, body)
        except UnaddressableKey:
            return UNADDRESSABLE
        except PayloadError as exc:
            return Outcome(OutcomeKind.TEMP, reason=PayloadError.reason, detail=str(exc))
        except orjson.JSONDecodeError as exc:
            return Outcome(OutcomeKind.TEMP, reason=PayloadError.reason, detail=f"payload not JSON: {exc}")
        except BackendTimeout as exc:
            return Outcome(OutcomeKind.TIMEOUT, reason=exc.reason, detail=str(exc))
        except BackendError as exc:
            return Outcome(OutcomeKind.TEMP, reason=exc.reason, detail=str(exc))
        return classify(entry.rules, response.status, response.body, context)

    async def _authorized(
        self, source: TokenSource, prepared: PreparedRequest, body: bytes | None
    ) -> HttpResponse:
        """The request with a bearer token; after a 401 the request is sent once more with a new token when the
        source renews it (the token may have been revoked or expired early), else the 401 is the answer (see
        TokenSource.refused: at most one forced renewal per token). Raises TokenError without a token."""
        authorization = await source.authorization()
        response = await self.client.request(prepared, body, authorization)
        if response.status != 401 or not source.refused(authorization):
            return response
        authorization = await source.authorization()
        response = await self.client.request(prepared, body, authorization)
        if response.status == 401:
            source.refused(authorization)  # counted against the renewal; no third request
        else:
            source.accepted(authorization)
        return response

    async def socketmap(
        self, request: SocketmapRequest, log: Any, request_id: int = 0, listener: ListenConfig | None = None
    ) -> SocketmapReply:
        """Answer one socketmap request."""
        entry = self.socket_maps.get(request.name)
        if entry is None:
            log.error("unknown socketmap name", request=request_id, name=request.name[:100])
            return SocketmapReply.perm("unknown map")
        context = lookup_context(entry.config, key=request.key)
        outcome = await self.lookup(entry, context, log, request_id, listener)
        return socketmap_reply(outcome, self.max_reply_size)

    async def tcp_table(
        self, name: str, key: str, log: Any, request_id: int = 0, listener: ListenConfig | None = None
    ) -> TcpTableReply:
        """Answer one tcp_table ``get`` with the socket map ``name`` (the listener's name)."""
        entry = self.socket_maps.get(name)
        if (
            entry is None
        ):  # the config loader ties tcp_table listeners to socket maps; a defined answer anyway
            log.error("unknown socket map for tcp_table", request=request_id, name=name)
            return TcpTableReply.temp("unknown map")
        outcome = await self.lookup(entry, lookup_context(entry.config, key=key), log, request_id, listener)
        return tcp_table_reply(outcome)

    async def policy(
        self,
        service: str,
        request: PolicyRequest,
        log: Any,
        request_id: int = 0,
        listener: ListenConfig | None = None,
    ) -> PolicyReply | None:
        """Answer one policy request for ``service``; None means: close without replying (on_error: close)."""
        entry = self.policy_services.get(service)
        if entry is None:  # the config loader ties listeners to services; kept as a defined answer anyway
            log.error("unknown policy service", request=request_id, service=service)
            return PolicyReply(DEFAULT_POLICY_ERROR_ACTION)
        config = entry.config
        context = lookup_context(config, attrs=request.attributes)
        outcome = await self.lookup(entry, context, log, request_id, listener)
        reply = policy_reply(outcome, config.error_action)
        failed = outcome.kind not in ANSWERS
        if outcome.kind is OutcomeKind.FOUND and reply.action != outcome.value.strip(" \t"):
            failed = True
            log.error(
                "backend action unusable, answering the error action",
                request=request_id,
                entry=config.name,
                detail=repr(outcome.value[:200]),
            )
        if failed and config.on_error is OnError.CLOSE:
            return None
        return reply
