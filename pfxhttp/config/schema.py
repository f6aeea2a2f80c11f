"""The JSON Schema (draft 2020-12) of pfxhttp.yml, generated from the key tree (:mod:`pfxhttp.config.keytree`).

Editors with a YAML language server complete and check a file that carries the modeline
``# yaml-language-server: $schema=<path to pfxhttp.schema.json>``. Where the loader refuses unknown keys the
schema says ``additionalProperties: false``; upstream keys this version ignores are properties that take any
value. The schema checks each key's type, range and syntax; checks that need the whole file (a listener names
an existing entry, endpoints do not clash, a template compiles) are left to ``pfxhttp check``. It asks for
YAML's own booleans and numbers, where the loader, like upstream, also takes them quoted.

The shipped copy, pfxhttp/config/pfxhttp.schema.json, is :func:`schema_json` written out; regenerate it with
``python -m pfxhttp schema > pfxhttp/config/pfxhttp.schema.json`` (a test compares the two).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pfxhttp.config.keydocs import ENTRY_NAME_SCHEMA
from pfxhttp.config.keytree import Key, Shape, key_tree

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = Path(__file__).with_name("pfxhttp.schema.json")
DEFAULTS_DOC = ("defaults", "Merged into every other entry of this section; the entry's own keys win.")


def config_schema() -> dict[str, Any]:
    """The JSON Schema of a pfxhttp.yml file, as a JSON-compatible dict."""
    defs: dict[str, Any] = {}
    root = _render(key_tree(), defs)
    return {"$schema": DRAFT, "title": "pfxhttp.yml", **root, "$defs": defs}


def schema_json() -> str:
    """:func:`config_schema` as the text of pfxhttp.schema.json (two-space indent, ending in a newline)."""
    return json.dumps(config_schema(), indent=2) + "\n"


def _render(key: Key, defs: dict[str, Any]) -> dict[str, Any]:
    if key.shape is Shape.IGNORED:
        return {"description": key.doc}
    if key.shape is Shape.VALUE:
        return {"description": key.doc, **_nullable(key.schema, key.nullable)}
    if key.shape is Shape.ENTRIES:
        name = key.name.removesuffix("s")  # socket_map, policy_service
        defs[name] = _object(key.keys, key.schema, defs, nullable=True)
        ref = {"$ref": f"#/$defs/{name}"}
        return {
            "description": key.doc,
            "type": ["object", "null"],
            "properties": {DEFAULTS_DOC[0]: {"description": DEFAULTS_DOC[1], **ref}},
            "propertyNames": ENTRY_NAME_SCHEMA,
            "additionalProperties": ref,
        }
    if key.shape is Shape.LISTENERS:
        defs["listener"] = {
            # A listener of a kind this version does not have is skipped whole, so none of its keys is checked.
            "if": {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "dovecot_sasl"}}},
            "then": {"description": "Upstream's dovecot_sasl listener: skipped with a warning."},
            "else": _object(key.keys, key.schema, defs, nullable=False),
        }
        ref = {"$ref": "#/$defs/listener"}
        return {
            "description": key.doc,
            "anyOf": [{"type": "array", "items": ref, "minItems": 1}, ref],
        }
    block = _object(key.keys, key.schema, defs, nullable=key.nullable)
    if key.off:
        return {"description": key.doc, "anyOf": [{"const": False}, block]}
    return {"description": key.doc, **block} if key.doc else block


def _object(
    keys: tuple[Key, ...], rules: Mapping[str, Any], defs: dict[str, Any], *, nullable: bool
) -> dict[str, Any]:
    return {
        "type": ["object", "null"] if nullable else "object",
        "properties": {key.name: _render(key, defs) for key in keys},
        "additionalProperties": False,
        **rules,
    }


def _nullable(schema: Mapping[str, Any], nullable: bool) -> dict[str, Any]:
    """``schema`` that also takes null (the loader reads null as "not set") when ``nullable``."""
    if not nullable:
        return dict(schema)
    types = schema.get("type")
    if isinstance(types, str):
        return {**schema, "type": [types, "null"]}
    if isinstance(types, list):
        return {**schema, "type": [*types, "null"]}
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    return dict(schema)
