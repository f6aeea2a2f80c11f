"""Compile every entry of a Config once at load: templates, JSONPath fields, the request builder.

Every problem becomes a ConfigError with its file:line:col and key path; ``check_entry`` is the config
loader's hook, so ``pfxhttp check`` prints these together with the YAML problems.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from pfxhttp import __version__
from pfxhttp.backend.mapping import FieldPath, ResponseRules
from pfxhttp.backend.request import RequestBuilder
from pfxhttp.backend.template import PayloadTemplate, ValueTemplate
from pfxhttp.config.model import Config, EntryConfig
from pfxhttp.errors import ConfigError, ConfigErrors

USER_AGENT = f"pfxhttp/{__version__}"


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    config: EntryConfig
    template: PayloadTemplate
    request: RequestBuilder
    rules: ResponseRules


def _compile_field(entry: EntryConfig, key: str, source: str | None) -> FieldPath | None:
    if source is None:
        return None
    try:
        return FieldPath(source)
    except Exception as exc:  # jsonpath-ng raises many unrelated types on bad syntax
        raise ConfigError(
            f"invalid JSONPath {source!r}: {exc}", location=entry.location_of(key), path=entry.key_path(key)
        ) from exc


def request_headers(entry: EntryConfig) -> list[tuple[str, str]]:
    """Content-Type, Accept and basic auth unless the entry's custom headers set them, then the custom ones."""
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
    template = builder = value_path = error_path = value_template = None
    try:
        template = PayloadTemplate(entry)
    except ConfigError as exc:
        problems.append(exc)
    try:
        builder = RequestBuilder(entry, request_headers(entry), user_agent=USER_AGENT)
    except ConfigError as exc:
        problems.append(exc)
    except ValueError as exc:
        problems.append(
            ConfigError(str(exc), location=entry.location_of("target"), path=entry.key_path("target"))
        )
    try:
        value_path = _compile_field(entry, "value_field", entry.value_field)
        error_path = _compile_field(entry, "error_field", entry.error_field)
        if entry.value_template is not None:
            value_template = ValueTemplate(entry)
    except ConfigError as exc:
        problems.append(exc)
    if problems or template is None or builder is None:
        raise ConfigErrors(problems)
    rules = ResponseRules(
        value_path=value_path,
        error_path=error_path,
        no_error_value=entry.no_error_value,
        success_statuses=frozenset(entry.status_code),
        not_found_statuses=frozenset(entry.not_found_status),
        value_template=value_template,
    )
    return CompiledEntry(entry, template, builder, rules)


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
