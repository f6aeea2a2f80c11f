"""The machine-readable result of ``pfxhttp check --json``: pure data, built from a config or its errors.

Shape::

    {"ok": bool, "file": str | null,
     "errors": [{"file", "line", "column", "path", "message", "suggestion"}, ...],
     "warnings": [str, ...], "overrides": [variable name, ...],
     "listeners": n, "socket_maps": n, "policy_services": n}

An error that came from an environment override has no file position: ``file``, ``line`` and ``column`` are
null and ``variable`` names the variable. ``path`` is "" and ``suggestion`` null when there is none.
"""

from __future__ import annotations

from typing import Any

from pfxhttp.config.model import Config
from pfxhttp.config.yamlnodes import EnvironmentLocation
from pfxhttp.errors import ConfigError, ConfigErrors


def error_record(error: ConfigError) -> dict[str, Any]:
    location = error.location
    record: dict[str, Any] = {"file": None, "line": None, "column": None}
    if isinstance(location, EnvironmentLocation):
        record["variable"] = location.file
    elif location is not None:
        record.update(file=location.file, line=location.line, column=location.column)
    record.update(path=error.path, message=error.message, suggestion=error.suggestion)
    return record


def check_report(
    config: Config | None, error: ConfigError | None = None, file: str | None = None
) -> dict[str, Any]:
    """The report of a config that loaded, or of the ``error`` that stopped it (``file``: the path tried)."""
    if config is not None:
        return {
            "ok": True,
            "file": config.source,
            "errors": [],
            "warnings": list(config.warnings),
            "overrides": list(config.overrides),
            "listeners": len(config.server.listen),
            "socket_maps": len(config.socket_maps),
            "policy_services": len(config.policy_services),
        }
    errors = list(error.errors) if isinstance(error, ConfigErrors) else [error] if error else []
    if file is None:  # no --config: the file the search found is where the errors are
        places = [e.location for e in errors if e.location is not None]
        file = next((p.file for p in places if not isinstance(p, EnvironmentLocation)), None)
    return {
        "ok": False,
        "file": file,
        "errors": [error_record(e) for e in errors],
        "warnings": [],
        "overrides": [],
        "listeners": 0,
        "socket_maps": 0,
        "policy_services": 0,
    }
