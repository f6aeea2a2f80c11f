"""Payload templates: JSON-safe for any key, Go spelling, Jinja names, load-time validation."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfxhttp.backend.context import jinja_source, lookup_context
from pfxhttp.backend.template import PayloadTemplate, _environment, _finalize, _plain_plan
from pfxhttp.config.model import EntryConfig, EntryKind
from pfxhttp.errors import ConfigError, Location, PayloadError


def entry(payload: str | None, kind: EntryKind = EntryKind.SOCKET_MAP) -> EntryConfig:
    return EntryConfig(
        name="demo",
        kind=kind,
        target="http://127.0.0.1/x",
        payload=payload,
        locations={"payload": Location("pfxhttp.yml", 7, 14)},
    )


def payload_for(config: EntryConfig, *, key: str = "", attrs: Mapping[str, str] | None = None) -> str:
    """The request body as the runtime builds it: the entry's compiled template rendered to bytes over the
    lookup context (socket maps: the key; policy services: the attributes)."""
    context = lookup_context(config, key=key, attrs=attrs or {})
    return PayloadTemplate(config).render_bytes(context).decode("utf-8")


HOSTILE_KEYS = [
    "",
    "plain@example.com",
    'a"b@example.com',
    "back\\slash",
    '"john doe"@example.com',
    "<>",
    '""',
    "ctl\x01\x1f\x7f\t\n\r",
    "ünïcødé@exämple.com",
    "emoji 📬@example.com",
    "2001:db8::1",
    '", "injected": "x',
    "{{ not a template }}",
    "</script>&amp;",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize(
    "source",
    ['{"key": "{{ .Key }}"}', '{"key": "{{.Key}}"}', '{"key": "{{ key }}"}', '{"key": {{ key|tojson }}}'],
)
def test_socketmap_payload_carries_exactly_the_key(source: str, key: str) -> None:
    rendered = payload_for(entry(source), key=key)
    assert orjson.loads(rendered) == {"key": key}


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_valid_unicode_key_round_trips(key: str) -> None:
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        return  # lone surrogates cannot be JSON; covered by test_non_utf8_key_is_a_payload_error
    config = entry('{"key": "{{ .Key }}", "map": "{{ name }}"}')
    assert orjson.loads(payload_for(config, key=key)) == {"key": key, "map": "demo"}


def test_non_utf8_key_is_a_payload_error() -> None:
    key = b"caf\xe9@example.com".decode("utf-8", "surrogateescape")
    with pytest.raises(PayloadError):
        payload_for(entry('{"key": "{{ .Key }}"}'), key=key)


def test_policy_go_key_is_the_attribute_map() -> None:
    attrs = {"request": "smtpd_access_policy", "sender": 'x"y@example.com', "size": "12"}
    config = entry('{"policy_request": {{ .Key }}}', EntryKind.POLICY_SERVICE)
    assert orjson.loads(payload_for(config, attrs=attrs)) == {"policy_request": attrs}


def test_policy_bare_key_and_jinja_names() -> None:
    attrs = {"sender": "a@example.com", "recipient": "b@example.com"}
    bare = entry("{{ .Key }}", EntryKind.POLICY_SERVICE)
    assert orjson.loads(payload_for(bare, attrs=attrs)) == attrs
    named = entry(
        '{"from": "{{ attrs.sender }}", "svc": "{{ name }}", "all": {{ attrs|tojson }}}',
        EntryKind.POLICY_SERVICE,
    )
    assert orjson.loads(payload_for(named, attrs=attrs)) == {
        "from": "a@example.com",
        "svc": "demo",
        "all": attrs,
    }


def test_default_payloads() -> None:
    assert orjson.loads(payload_for(entry(None), key='k"ey')) == {"key": 'k"ey'}
    attrs = {"sender": "a@example.com"}
    assert orjson.loads(payload_for(entry(None, EntryKind.POLICY_SERVICE), attrs=attrs)) == attrs


def test_numbers_booleans_and_missing_attributes_render_as_json() -> None:
    config = entry(
        '{"n": {{ 42 }}, "t": {{ true }}, "none": {{ none }}, "s": "{{ attrs.get("x", "") }}"}',
        EntryKind.POLICY_SERVICE,
    )
    assert orjson.loads(payload_for(config, attrs={})) == {"n": 42, "t": True, "none": None, "s": ""}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ('{"key": {{ .Key }}}', "valid JSON"),  # unquoted string: the sample key breaks it
        ('{"key": "{{ .Key }}"', "valid JSON"),
        ('{"key": "{{ .Key "}', "payload template"),  # Jinja syntax error
        ('{"key": "{{ kye }}"}', "undefined"),  # typo: StrictUndefined
        ('{"key": "{{ .Other }}"}', "payload template"),  # unknown Go field
    ],
)
def test_bad_payloads_are_config_errors_with_location(source: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        PayloadTemplate(entry(source))
    text = str(info.value)
    assert "pfxhttp.yml:7:14" in text
    assert "socket_maps.demo.payload" in text
    assert message.lower() in text.lower()


def test_empty_payload_is_allowed() -> None:
    assert payload_for(entry(""), key="x") == ""


def test_runtime_failure_in_template_is_payload_error() -> None:
    # A branch the load-time sample does not take: fails only for some keys, at run time, as PayloadError.
    config = entry('{"key": "{{ key if key != "boom" else key.nope.deeper }}"}')
    with pytest.raises(PayloadError):
        payload_for(config, key="boom")


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(ConfigError):
        PayloadTemplate(entry('{"key": "{{ key.__class__.__mro__ }}"}'))


@pytest.mark.parametrize(
    "source",
    ['{"key": "{{ .Key }}"}', '{"k": "{{- key -}}", "m": "{{ name }}"}\n', "", "no expressions at all"],
)
@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_plain_plan_renders_exactly_like_jinja(source: str, key: str) -> None:
    template = PayloadTemplate(entry(None))  # compile something valid, then swap in each source for the check
    env = _environment()
    rewritten = jinja_source(source)
    plan = _plain_plan(env, rewritten)
    assert plan is not None
    context = {"Key": key, "key": key, "name": "demo", "attrs": {}}
    fast = "".join(p if isinstance(p, str) else _finalize(context[p.name]) for p in plan)
    assert fast == env.from_string(rewritten).render(context)
    assert template.always_json


@pytest.mark.parametrize("source", ['{"key": {{ key|tojson }}}', '{"key": "{{ key if key else "x" }}"}'])
def test_templates_with_logic_take_the_jinja_path_and_keep_the_runtime_check(source: str) -> None:
    assert not PayloadTemplate(entry(source)).always_json


def test_absent_policy_attributes_read_as_empty() -> None:
    config = entry(
        '{"user": "{{ attrs.sasl_username }}", "sni": "{{ attrs["tls_sni"] }}", "all": {{ .Key }}}',
        EntryKind.POLICY_SERVICE,
    )
    assert orjson.loads(payload_for(config, attrs={"sender": "a@b"})) == {
        "user": "",
        "sni": "",
        "all": {"sender": "a@b"},
    }
    with pytest.raises(ConfigError):
        PayloadTemplate(entry('{"user": "{{ atrs.sasl_username }}"}', EntryKind.POLICY_SERVICE))


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ('{"key": "{{ .Key }}", "map": "{{ name }}"}', EntryKind.SOCKET_MAP),
        ('{"key": {{ key|tojson }}}', EntryKind.SOCKET_MAP),  # a Jinja template: the str path
        (None, EntryKind.POLICY_SERVICE),  # the default {{ attrs }}
        ('{"policy": {{ .Key }}, "who": "{{ name }}"}', EntryKind.POLICY_SERVICE),
    ],
)
def test_render_bytes_is_render_in_utf8(source: str | None, kind: EntryKind) -> None:
    config = entry(source, kind)
    template = PayloadTemplate(config)
    for key in HOSTILE_KEYS:
        context = lookup_context(config, key=key, attrs={"sender": key, "size": "12"})
        assert template.render_bytes(context) == template.render(context).encode("utf-8")


@pytest.mark.parametrize(
    "source", ['{"key": "{{ .Key }}"}', '{"key": {{ key|tojson }}}', '"{{ key|lower }}"']
)
def test_render_bytes_refuses_non_utf8_keys_with_a_payload_error(source: str) -> None:
    config = entry(source)
    key = b"caf\xe9@example.com".decode("utf-8", "surrogateescape")
    with pytest.raises(PayloadError):
        PayloadTemplate(config).render_bytes(lookup_context(config, key=key))
