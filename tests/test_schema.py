"""The JSON Schema of pfxhttp.yml: generated from the key tables, shipped up to date, agreeing with the loader on
the shipped configs and on what it refuses; and the `pfxhttp schema` and `pfxhttp check --json` commands."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pfxhttp import cli
from pfxhttp.config import blocks, entries, listen, loader, parse_config, serversection
from pfxhttp.config.jsontypes import go_duration
from pfxhttp.config.keytree import key_tree
from pfxhttp.config.model import HttpClientConfig, MetricsConfig
from pfxhttp.config.schema import SCHEMA_FILE, config_schema, schema_json
from pfxhttp.errors import ConfigErrors

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIGS = [
    ROOT / "etc" / "pfxhttp.yml",
    *sorted((ROOT / "etc" / "examples").glob("*.yml")),
    ROOT / "bench" / "pfxhttp-bench.yml",
]
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, text: str) -> list[str]:
    return [error.message for error in validator.iter_errors(yaml.safe_load(textwrap.dedent(text)))]


def test_the_shipped_schema_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == schema_json(), (
        "pfxhttp/config/pfxhttp.schema.json differs from config_schema(); regenerate it with: "
        ".venv/bin/python -m pfxhttp schema > pfxhttp/config/pfxhttp.schema.json"
    )


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    parse_config(path.read_text(), str(path))  # the loader accepts it ...
    assert [
        e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ] == []  # ... so does the schema


@pytest.mark.parametrize("path", SHIPPED_CONFIGS[:-1], ids=lambda p: p.name)
def test_etc_configs_point_editors_at_the_shipped_schema(path: Path) -> None:
    match = MODELINE.search(path.read_text())
    assert match is not None, f"{path} lacks the yaml-language-server modeline"
    assert (path.parent / match.group(1)).resolve() == SCHEMA_FILE


def properties(schema: dict[str, Any], *path: str) -> set[str]:
    node = schema
    for step in path:
        node = node["properties"][step] if step != "$listener" else schema["$defs"]["listener"]["else"]
        if "anyOf" in node and step not in ("$listener",):
            node = next(alt for alt in node["anyOf"] if "properties" in alt)
    return set(node["properties"])


def test_the_schema_has_exactly_the_loaders_keys() -> None:
    schema = config_schema()
    defs = schema["$defs"]
    assert properties(schema) == {*loader.TOP_KEYS, *loader.TOP_DEFERRED}
    assert properties(schema, "server") == {*serversection.SERVER_KEYS, *serversection.SERVER_DEFERRED}
    assert properties(schema, "server", "logging") == set(serversection.LOGGING_KEYS)
    assert properties(schema, "server", "http_client") == {
        *serversection.HTTP_CLIENT_KEYS,
        *serversection.HTTP_CLIENT_DEFERRED,
    }
    assert properties(schema, "server", "tls") == set(serversection.TLS_KEYS)
    assert properties(schema, "server", "metrics") == set(blocks.METRICS_KEYS)
    assert properties(schema, "server", "worker_pool") == set(blocks.WORKER_POOL_KEYS)
    assert properties(schema, "server", "response_cache") == set(blocks.RESPONSE_CACHE_KEYS)
    assert set(defs["listener"]["else"]["properties"]) == {*listen.LISTEN_KEYS, *listen.LISTEN_DEFERRED}
    policy = defs["policy_service"]["properties"]
    assert set(policy) == {*entries.ENTRY_KEYS, *entries.ENTRY_DEFERRED}
    assert set(defs["socket_map"]["properties"]) == set(policy) - set(entries.POLICY_ONLY_KEYS)
    assert set(policy["cache"]["anyOf"][1]["properties"]) == set(blocks.CACHE_KEYS)
    assert set(policy["circuit_breaker"]["anyOf"][1]["properties"]) == set(blocks.CIRCUIT_BREAKER_KEYS)
    assert "server" in {key.name for key in key_tree().keys}


def test_defaults_and_descriptions_come_from_the_model() -> None:
    server = config_schema()["properties"]["server"]["properties"]
    metrics = server["metrics"]["properties"]
    assert {key: metrics[key].get("default") for key in ("enabled", "address", "port", "path")} == {
        "enabled": MetricsConfig().enabled,
        "address": MetricsConfig().address,
        "port": MetricsConfig().port,
        "path": MetricsConfig().path,
    }
    assert server["http_client"]["properties"]["timeout"]["default"] == go_duration(
        HttpClientConfig().timeout
    )
    assert (go_duration(90.0), go_duration(3600.0), go_duration(0.5), go_duration(0.0)) == (
        "1m30s",
        "1h",
        "0.5s",
        "0s",
    )
    assert server["chroot"] == {"description": server["chroot"]["description"]}  # ignored: any value
    assert "ignored" in server["chroot"]["description"]

    def undocumented(node: object, path: str) -> list[str]:
        found: list[str] = []
        if isinstance(node, dict):
            for key, child in node.get("properties", {}).items():
                if not child.get("description"):
                    found.append(f"{path}.{key}")
            for key, child in node.items():
                if key not in ("if", "not"):  # conditions name keys, they do not define them
                    found += undocumented(child, f"{path}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                found += undocumented(child, f"{path}[{index}]")
        return found

    assert undocumented(config_schema(), "") == []


LISTEN = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 1}\n"
ACCEPTED = [
    LISTEN,
    "server:\n  listen: {type: unix, address: /run/x.sock, mode: 0660, user: 101, group: postfix}\n",
    LISTEN + "  logging:\n  metrics: {enabled: true, port: 9200, basic_auth: 'a:b'}\n  run_as_user: 0\n",
    LISTEN + "  logging: {level: DEBUG}\n  http_client: {timeout: 0.5, idle_connection_timeout: 1h}\n",
    LISTEN + "    - {kind: dovecot_sasl, whatever: [1, 2]}\n  chroot: {any: thing}\n  observability: 1\n",
    LISTEN
    + "    - {kind: policy_service, name: p, type: tcp6, address: '::1', port: 2, systemd_socket_name: pol}\n"
    "policy_services:\n  p: {target: http://h/, error_action: '450 4.7.1 later', on_error: CLOSE,"
    " cache: {ttl: 1m, key_attributes: sasl_username}}\n",
    LISTEN
    + "socket_maps:\n  defaults: {target: http://h/, method: get, status_code: [200, 203], not_found_status: []}\n"
    "  m: {target: 'https://h/{{ key }}', cache: false, custom_headers: 'X-A: b', no_error_value: false,"
    " query: {d: '{{ key }}', n: 1}, jwt_auth: {enabled: false}}\n  n:\n",
]
REFUSED = [
    LISTEN + "  colour: red\n",  # unknown key
    LISTEN + "  logging: {levle: info}\n",
    LISTEN + "  logging: {json: 1}\n",  # wrong type
    LISTEN + "  logging: {level: loud}\n",
    LISTEN + "  http_client: {timeout: forever}\n",
    LISTEN + "  http_client: {max_connections_per_host: 20000}\n",
    LISTEN + "  metrics: {port: 0}\n",
    LISTEN + "  metrics: {path: metrics}\n",
    LISTEN + "  metrics: {basic_auth: nocolon}\n",
    LISTEN + "  run_as_user: 'a b'\n",
    LISTEN + "  tls: {cert: /c.pem}\n",
    LISTEN + "  worker_pool: {max_workers: 0, max_queue: 1}\n",
    LISTEN + "  worker_pool: {max_workers: 1}\n",
    "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1}\n",  # tcp needs a port
    "server:\n  listen:\n    - {type: sctp, address: x, port: 1}\n",
    "server:\n  listen:\n    - {type: unix, address: /x, systemd_socket_name: 'a:b'}\n",
    "server:\n  listen:\n    - {kind: tcp_table, type: unix, address: /x}\n",  # tcp_table needs a name
    "server:\n  listen: []\n",
    "socket_maps: {}\n",  # no server
    LISTEN + "socket_maps:\n  m: {target: ftp://h/}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, error_action: DEFER}\n",  # policy services only
    LISTEN + "socket_maps:\n  m: {target: http://h/, method: PATCH}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, status_code: 600}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, status_code: []}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, value_field: a, value_template: b}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, method: get, payload: x}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, cache: {negative_ttl: 1m}}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, cache: {ttl: 1m, key_attributes: [a]}}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, circuit_breaker: true}\n",
    LISTEN + "socket_maps:\n  m: {target: http://h/, custom_headers: ['no colon']}\n",
    LISTEN + "socket_maps:\n  'a b': {target: http://h/}\n",
    LISTEN + "policy_services:\n  p: {target: http://h/, error_action: REJECT}\n",
    LISTEN + "policy_services:\n  p: {target: http://h/, on_error: retry}\n",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_what_the_loader_accepts_the_schema_accepts(
    validator: jsonschema.Draft202012Validator, text: str
) -> None:
    parse_config(text)
    assert schema_errors(validator, text) == []


@pytest.mark.parametrize("text", REFUSED)
def test_what_the_loader_refuses_the_schema_refuses(
    validator: jsonschema.Draft202012Validator, text: str
) -> None:
    with pytest.raises(ConfigErrors):
        parse_config(text)
    assert schema_errors(validator, text) != []


# ---- the command line ------------------------------------------------------------------------------------
def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out == schema_json()
    assert json.loads(out)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def check_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["check", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_check_json_reports_a_good_config(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(ROOT / "etc" / "pfxhttp.yml")
    code, report = check_json(capsys, "--config", path)
    assert code == cli.EXIT_OK
    assert report == {
        "ok": True,
        "file": path,
        "errors": [],
        "warnings": [],
        "overrides": [],
        "listeners": 3,
        "socket_maps": 2,
        "policy_services": 1,
    }


def test_check_json_reports_every_error_with_its_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pfxhttp.yml"
    path.write_text(LISTEN + "  logging: {levle: info}\n  chroot: /x\n")
    monkeypatch.setenv("PFXHTTP_SERVER__METRICS__PORT", "0")  # the CLI passes its environment
    code, report = check_json(capsys, "--config", str(path))
    assert code == cli.EXIT_CONFIG
    assert report["ok"] is False and report["file"] == str(path)
    assert report["errors"] == [
        {
            "file": str(path),
            "line": 4,
            "column": 13,
            "path": "server.logging.levle",
            "message": "unknown key",
            "suggestion": "level",
        },
        {
            "file": None,
            "line": None,
            "column": None,
            "variable": "PFXHTTP_SERVER__METRICS__PORT",
            "path": "server.metrics.port",
            "message": "must be between 1 and 65535",
            "suggestion": None,
        },
    ]


def test_check_json_applies_overrides_and_lists_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pfxhttp.yml"
    path.write_text(LISTEN + "  chroot: /x\n")
    monkeypatch.setenv("PFXHTTP_SERVER__LOGGING__LEVEL", "debug")
    code, report = check_json(capsys, "--config", str(path))
    assert code == cli.EXIT_OK
    assert report["overrides"] == ["PFXHTTP_SERVER__LOGGING__LEVEL"]
    assert report["warnings"] == ["server.chroot (line 4): not supported by this version yet; ignored"]


def test_check_json_for_a_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yml")
    code, report = check_json(capsys, "--config", missing)
    assert code == cli.EXIT_CONFIG
    assert report["file"] == missing
    (error,) = report["errors"]
    assert error["line"] is None and "does not exist" in error["message"]
