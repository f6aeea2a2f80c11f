"""The runtime: everything derived from one Config that answering a request needs.

``build_runtime`` compiles every entry once at load (payload template, JSONPath fields, the request head with
custom headers and basic auth) and reports every problem as a ConfigError with its file:line:col, so
``pfxhttp check`` catches them before the daemon starts. ``Runtime.socketmap`` and ``Runtime.policy`` are the
per-request entry points: they never raise for a backend problem, they return the reply the contract table
prescribes and log the detail.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pfxhttp import __version__
from pfxhttp.backend.http11 import PreparedRequest, Target, prepare_request
from pfxhttp.backend.mapping import (
    DEFAULT_POLICY_ERROR_ACTION,
    FieldPath,
    Outcome,
    OutcomeKind,
    ResponseRules,
    classify,
    policy_reply,
    socketmap_reply,
)
from pfxhttp.backend.pool import HttpClient
from pfxhttp.backend.template import PayloadTemplate
from pfxhttp.config.model import Config, EntryConfig
from pfxhttp.errors import BackendError, BackendTimeout, ConfigError, ConfigErrors, PayloadError
from pfxhttp.protocol.policy import PolicyReply, PolicyRequest
from pfxhttp.protocol.socketmap import SocketmapReply, SocketmapRequest

USER_AGENT = f"pfxhttp/{__version__}"


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    config: EntryConfig
    template: PayloadTemplate
    request: PreparedRequest
    rules: ResponseRules


def _compile_field(entry: EntryConfig, key: str, source: str | None) -> FieldPath | None:
    if source is None:
        return None
    try:
        return FieldPath(source)
    except Exception as exc:
        raise ConfigError(
            f"invalid JSONPath {source!r}: {exc}", location=entry.location_of(key), path=entry.key_path(key)
        ) from exc


def _request_headers(entry: EntryConfig) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    names = {name.lower() for name, _ in entry.custom_headers}
    if "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    if "accept" not in names:
        headers.append(("Accept", "application/json"))
    if entry.http_auth_basic is not None and "authorization" not in names:
        token = f"{entry.http_auth_basic.username}:{entry.http_auth_basic.password}".encode()
        headers.append(("Authorization", "Basic " + base64.b64encode(token).decode("ascii")))
    headers.extend(entry.custom_headers)
    return headers


def compile_entry(entry: EntryConfig) -> CompiledEntry:
    """Compile one entry; raise ConfigErrors with every problem found in it."""
    problems: list[ConfigError] = []
    template: PayloadTemplate | None = None
    prepared: PreparedRequest | None = None
    value_path = error_path = None
    try:
        template = PayloadTemplate(entry)
    except ConfigError as exc:
        problems.append(exc)
    try:
        target = Target.parse(entry.target)
        prepared = prepare_request("POST", target, _request_headers(entry), user_agent=USER_AGENT)
    except ValueError as exc:
        problems.append(
            ConfigError(str(exc), location=entry.location_of("target"), path=entry.key_path("target"))
        )
    try:
        value_path = _compile_field(entry, "value_field", entry.value_field)
        error_path = _compile_field(entry, "error_field", entry.error_field)
    except ConfigError as exc:
        problems.append(exc)
    if problems or template is None or prepared is None:
        raise ConfigErrors(problems)
    rules = ResponseRules(
        value_path=value_path,
        error_path=error_path,
        no_error_value=entry.no_error_value,
        success_statuses=frozenset({entry.status_code}),
    )
    return CompiledEntry(entry, template, prepared, rules)


def check_entry(entry: EntryConfig) -> list[ConfigError]:
    """The config loader's ``entry_check``: compile problems of one entry, reported with the others."""
    try:
        compile_entry(entry)
    except ConfigErrors as exc:
        return list(exc.errors)
    return []


def _compile_section(
    section: Mapping[str, EntryConfig], problems: list[ConfigError]
) -> dict[str, CompiledEntry]:
    compiled: dict[str, CompiledEntry] = {}
    for name, entry in section.items():
        try:
            compiled[name] = compile_entry(entry)
        except ConfigErrors as exc:
            problems.extend(exc.errors)
    return compiled


def compile_config(config: Config) -> tuple[dict[str, CompiledEntry], dict[str, CompiledEntry]]:
    """Compile all entries of ``config`` (socket maps, policy services) or raise ConfigErrors with all problems."""
    problems: list[ConfigError] = []
    maps = _compile_section(config.socket_maps, problems)
    policies = _compile_section(config.policy_services, problems)
    if problems:
        problems.sort(key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0))
        raise ConfigErrors(problems)
    return maps, policies


class Runtime:
    """Compiled entries plus the shared HTTP client; one per loaded configuration."""

    def __init__(self, config: Config, client: HttpClient | None = None) -> None:
        self.config = config
        self.socket_maps, self.policy_services = compile_config(config)
        self.client = client or HttpClient(config.server.http_client, config.server.tls)
        self.max_reply_size = config.server.socketmap_max_reply_size
        self.policy_error_action = DEFAULT_POLICY_ERROR_ACTION

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _call(self, entry: CompiledEntry, body: str, log: Any, request_id: int) -> Outcome:
        started = time.monotonic()
        try:
            payload = body.encode("utf-8")
            if not entry.template.always_json and payload.strip():
                orjson.loads(payload)  # a template branch the load-time check could not reach may be broken
            response = await self.client.request(entry.request, payload)
        except orjson.JSONDecodeError as exc:
            outcome = Outcome(OutcomeKind.TEMP, reason=PayloadError.reason, detail=f"payload not JSON: {exc}")
        except UnicodeEncodeError as exc:
            outcome = Outcome(OutcomeKind.TEMP, reason=PayloadError.reason, detail=str(exc))
        except BackendTimeout as exc:
            outcome = Outcome(OutcomeKind.TIMEOUT, reason=exc.reason, detail=str(exc))
        except BackendError as exc:
            outcome = Outcome(OutcomeKind.TEMP, reason=exc.reason, detail=str(exc))
        else:
            outcome = classify(entry.rules, response.status, response.body)
        elapsed_ms = round((time.monotonic() - started) * 1000, 2)
        if outcome.kind in (OutcomeKind.FOUND, OutcomeKind.NOT_FOUND):
            log.debug(
                "backend answered",
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

    async def socketmap(self, request: SocketmapRequest, log: Any, request_id: int = 0) -> SocketmapReply:
        """Answer one socketmap request; never raises for backend trouble."""
        entry = self.socket_maps.get(request.name)
        if entry is None:
            log.error("unknown socketmap name", request=request_id, name=request.name[:100])
            return SocketmapReply.perm("unknown map")
        try:
            body = entry.template.render_socketmap(request.key)
        except PayloadError as exc:
            log.error(
                "payload rendering failed", request=request_id, entry=entry.config.name, detail=str(exc)
            )
            return SocketmapReply.temp(PayloadError.reason)
        outcome = await self._call(entry, body, log, request_id)
        return socketmap_reply(outcome, self.max_reply_size)

    async def policy(
        self, service: str, request: PolicyRequest, log: Any, request_id: int = 0
    ) -> PolicyReply:
        """Answer one policy request for ``service``; never raises for backend trouble."""
        entry = self.policy_services.get(service)
        if entry is None:  # the config loader ties listeners to services; kept as a defined answer anyway
            log.error("unknown policy service", request=request_id, service=service)
            return PolicyReply(self.policy_error_action)
        try:
            body = entry.template.render_policy(request.attributes)  # one dict built, not two
        except PayloadError as exc:
            log.error(
                "payload rendering failed", request=request_id, entry=entry.config.name, detail=str(exc)
            )
            return PolicyReply(self.policy_error_action)
        outcome = await self._call(entry, body, log, request_id)
        reply = policy_reply(outcome, self.policy_error_action)
        if outcome.kind is OutcomeKind.FOUND and reply.action != outcome.value.strip():
            log.error(
                "backend action unusable, answering the error action",
                request=request_id,
                entry=entry.config.name,
                detail=repr(outcome.value[:200]),
            )
        return reply
