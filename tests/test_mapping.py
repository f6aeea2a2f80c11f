"""The contract table of design.md, row by row, for both reply kinds (pure; no I/O)."""

from __future__ import annotations

import orjson
import pytest

from pfxhttp.backend.mapping import (
    FieldPath,
    Outcome,
    OutcomeKind,
    ResponseRules,
    classify,
    policy_reply,
    render_value,
    socketmap_reply,
)
from pfxhttp.config.model import DEFAULT_POLICY_ERROR_ACTION
from pfxhttp.protocol.socketmap import SocketmapStatus

RULES = ResponseRules(
    value_path=FieldPath("data.result"), error_path=FieldPath("error"), no_error_value="not-found"
)
ERR = DEFAULT_POLICY_ERROR_ACTION


def both(status: int, body: bytes | str, rules: ResponseRules = RULES) -> tuple[str, str]:
    raw = body.encode() if isinstance(body, str) else body
    outcome = classify(rules, status, raw)
    sm = socketmap_reply(outcome, 100_000)
    return f"{sm.status.value} {sm.text}", policy_reply(outcome, ERR).action


@pytest.mark.parametrize(
    ("status", "body", "socketmap", "policy"),
    [
        (200, '{"data": {"result": "ok@example.com"}}', "OK ok@example.com", "ok@example.com"),
        (200, '{"data": {"result": ["a@x", "b@x"]}}', "OK a@x,b@x", "a@x,b@x"),
        (200, '{"data": {"result": 42}}', "OK 42", "42"),
        (200, '{"data": {"result": 42.0}}', "OK 42", "42"),
        (200, '{"data": {"result": [1, 2.0, 3.5]}}', "OK 1,2,3.5", "1,2,3.5"),
        (200, '{"data": {"result": true}}', "OK true", "true"),
        (200, '{"data": {}}', "NOTFOUND ", "DUNNO"),
        (200, '{"data": {"result": null}}', "NOTFOUND ", "DUNNO"),
        (200, "{}", "NOTFOUND ", "DUNNO"),
        (200, '{"error": "not-found"}', "NOTFOUND ", "DUNNO"),  # error equal to no_error_value
        (200, '{"error": "db down"}', "PERM backend reported an error", ERR),
        (200, '{"error": "db down", "data": {"result": "x"}}', "PERM backend reported an error", ERR),
        (200, '{"error": null, "data": {"result": "x"}}', "OK x", "x"),
        (200, '{"data": {"result": ""}}', "PERM empty value from backend", ERR),
        (200, '{"data": {"result": []}}', "PERM empty value from backend", ERR),
        (404, '{"error": "nope"}', "NOTFOUND ", "DUNNO"),
        (404, "not json at all", "NOTFOUND ", "DUNNO"),
        (400, "{}", "PERM backend status 400", ERR),
        (403, "{}", "PERM backend status 403", ERR),
        (429, "{}", "TEMP backend status 429", ERR),
        (500, '{"data": {"result": "x"}}', "TEMP backend status 500", ERR),
        (503, "", "TEMP backend status 503", ERR),
        (302, "", "TEMP unexpected status 302", ERR),
        (204, "", "TEMP unexpected status 204", ERR),
        (200, "not json", "TEMP invalid JSON from backend", ERR),
        (200, "", "TEMP invalid JSON from backend", ERR),
        (200, '{"data": {"result": "x"', "TEMP invalid JSON from backend", ERR),
    ],
)
def test_contract_rows(status: int, body: str, socketmap: str, policy: str) -> None:
    assert both(status, body) == (socketmap, policy)


def test_no_fault_yields_a_mail_losing_reply() -> None:
    faults = [
        (s, b)
        for s in (400, 401, 403, 405, 409, 429, 500, 502, 503, 504, 301, 204)
        for b in (b"", b"x", b"{}", b'{"data": {"result": "REJECT"}}')
    ]
    faults.append((200, b"\x00\xff"))  # undecodable body on an expected status
    for status, body in faults:
        outcome = classify(RULES, status, body)
        sm = socketmap_reply(outcome, 100_000)
        assert sm.status not in (SocketmapStatus.OK, SocketmapStatus.NOTFOUND), (status, body)
        action = policy_reply(outcome, ERR).action
        assert not action.upper().startswith(("REJECT", "5", "OK")), (status, body)


@pytest.mark.parametrize(
    ("kind", "status"),
    [(OutcomeKind.TIMEOUT, SocketmapStatus.TIMEOUT), (OutcomeKind.TEMP, SocketmapStatus.TEMP)],
)
def test_transport_outcomes(kind: OutcomeKind, status: SocketmapStatus) -> None:
    outcome = Outcome(kind, reason="backend timeout")
    assert socketmap_reply(outcome, 100_000).status is status
    assert policy_reply(outcome, ERR).action == ERR


def test_reply_size_boundary() -> None:
    fits = Outcome(OutcomeKind.FOUND, value="v" * 99_997)
    assert socketmap_reply(fits, 100_000).status is SocketmapStatus.OK
    assert len(socketmap_reply(fits, 100_000).encode(100_000)) == len(b"100000:") + 100_000 + 1
    over = Outcome(OutcomeKind.FOUND, value="v" * 99_998)
    assert (r := socketmap_reply(over, 100_000)).status is SocketmapStatus.PERM and r.text == "value too long"
    # bytes, not characters: 'é' is two bytes in UTF-8
    assert socketmap_reply(Outcome(OutcomeKind.FOUND, value="é" * 5), 12).status is SocketmapStatus.PERM
    assert socketmap_reply(Outcome(OutcomeKind.FOUND, value="é" * 4), 11).status is SocketmapStatus.OK


@pytest.mark.parametrize("value", ["REJECT a\r\nb", "DUNNO\n", "OK\0", "   ", "x" * 5000])
def test_unsafe_policy_values_become_the_error_action(value: str) -> None:
    assert policy_reply(Outcome(OutcomeKind.FOUND, value=value), ERR).action == ERR


def test_policy_value_is_stripped_and_forwarded() -> None:
    assert (
        policy_reply(Outcome(OutcomeKind.FOUND, value="  PREPEND X-Test: yes "), ERR).action
        == "PREPEND X-Test: yes"
    )


def test_socketmap_value_with_nul_is_perm() -> None:
    assert socketmap_reply(Outcome(OutcomeKind.FOUND, value="a\0b"), 100).status is SocketmapStatus.PERM


@pytest.mark.parametrize(
    ("path", "document", "expected"),
    [
        ("data.result", {"data": {"result": "x"}}, "x"),
        ("$.data.result", {"data": {"result": "x"}}, "x"),
        ("items.1.name", {"items": [{"name": "a"}, {"name": "b"}]}, "b"),
        ("demo-value", {"demo-value": "d"}, "d"),
        ("$.items[*].name", {"items": [{"name": "a"}, {"name": "b"}]}, "a,b"),
        (
            "$.items[?(@.on == true)].name",
            {"items": [{"name": "a", "on": True}, {"name": "b", "on": False}]},
            "a",
        ),
    ],
)
def test_field_paths(path: str, document: object, expected: str) -> None:
    rules = ResponseRules(value_path=FieldPath(path))
    outcome = classify(rules, 200, orjson.dumps(document))
    assert outcome.kind is OutcomeKind.FOUND and outcome.value == expected


def test_bare_name_is_searched_at_any_depth_like_upstream() -> None:
    rules = ResponseRules(value_path=FieldPath("result"))
    assert classify(rules, 200, b'{"data": {"inner": {"result": "deep"}}}').value == "deep"
    assert classify(rules, 200, b'{"result": "top", "data": {"result": "deep"}}').value == "top"
    assert classify(rules, 200, b'{"data": [{"result": "in a list"}]}').kind is OutcomeKind.NOT_FOUND
    hostile = b'{"a":' * 200 + b'{"result": "x"}' + b"}" * 200
    assert classify(rules, 200, hostile).kind is OutcomeKind.NOT_FOUND  # beyond the search depth bound


def test_dotted_path_is_nested_not_literal() -> None:
    rules = ResponseRules(value_path=FieldPath("data.result"))
    assert classify(rules, 200, b'{"data.result": "literal"}').kind is OutcomeKind.NOT_FOUND


@pytest.mark.parametrize("path", ["items.5", "items.x", "data.result.deeper", "missing.path"])
def test_paths_that_do_not_match_are_not_found(path: str) -> None:
    rules = ResponseRules(value_path=FieldPath(path))
    body = b'{"items": ["a"], "data": {"result": "s"}}'
    assert classify(rules, 200, body).kind is OutcomeKind.NOT_FOUND


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e20, "100000000000000000000"),
        (0.1, "0.1"),
        (-3.0, "-3"),
        (float("inf"), "inf"),
        ({"a": 1}, '{"a":1}'),
        (["a", None, "b"], "a,b"),
        ([["a", "b"], "c"], "a,b,c"),
    ],
)
def test_render_value(value: object, text: str) -> None:
    assert render_value(value) == text


def test_list_of_statuses_and_custom_not_found() -> None:
    rules = ResponseRules(
        value_path=FieldPath("v"),
        success_statuses=frozenset({200, 201}),
        not_found_statuses=frozenset({404, 410}),
    )
    assert classify(rules, 201, b'{"v": "x"}').kind is OutcomeKind.FOUND
    assert classify(rules, 410, b"").kind is OutcomeKind.NOT_FOUND


DEEP_OBJECT = (
    b'{"data": {"result": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}}"
)  # orjson dumps <= 255 levels
DEEP_LIST = b'{"data": {"result": ' + b"[" * 1000 + b"1" + b"]" * 1000 + b"}}"  # deeper than Python recursion


@pytest.mark.parametrize(
    ("value_field", "error_field", "body", "reason"),
    [
        ("$.items.`sorted`", None, b'{"items": [1, "a"]}', "value_field failed"),
        ("$.items[\\name]", None, b'{"items": [{"name": 1}, {"name": "a"}]}', "value_field failed"),
        ("$.name.`sub(/x/, y)`", None, b'{"name": 5}', "value_field failed"),
        ("data.result", None, DEEP_OBJECT, "value_field failed"),
        ("data.result", None, DEEP_LIST, "value_field failed"),
        (
            "data.result",
            "$.errors.`sorted`",
            b'{"errors": [null, 1], "data": {"result": "x"}}',
            "error_field failed",
        ),
        ("data.result", "data", DEEP_OBJECT, "error_field failed"),
    ],
)
def test_a_field_that_fails_on_the_reply_is_an_error(
    value_field: str, error_field: str | None, body: bytes, reason: str
) -> None:
    """jsonpath-ng extensions (sorted, sub(), ...) raise on data of an unexpected type, and rendering a value
    nested too deep raises as well: the lookup gets a defined error reply, never an exception."""
    rules = ResponseRules(
        value_path=FieldPath(value_field), error_path=None if error_field is None else FieldPath(error_field)
    )
    outcome = classify(rules, 200, body)
    assert (outcome.kind, outcome.reason) == (OutcomeKind.ERROR, reason)
    assert outcome.detail  # what failed goes to the log
    assert socketmap_reply(outcome, 100_000).encode(100_000) == f"{len(reason) + 5}:PERM {reason},".encode()
    assert policy_reply(outcome, ERR).action == ERR


def test_the_same_fields_map_well_formed_replies() -> None:
    rules = ResponseRules(value_path=FieldPath("$.items.`sorted`"), error_path=FieldPath("$.errors.`sorted`"))
    assert classify(rules, 200, b'{"items": ["b", "a"], "errors": []}').value == "a,b"
    rules = ResponseRules(value_path=FieldPath("$.name.`sub(/x/, y)`"))
    assert classify(rules, 200, b'{"name": "xox"}').value == "yoy"
