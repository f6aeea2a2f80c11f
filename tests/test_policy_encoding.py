"""The policy delegation codec's encoding side: requests encoded (and refused when they cannot travel), round trips
in arbitrary splits, arbitrary bytes only ever raising PolicyError; replies (action=...) that Postfix would
misread never encoded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import PolicyError, ReplyError
from pfxhttp.protocol.policy import (
    MAX_ACTION_LENGTH,
    PolicyDecoder,
    PolicyLimits,
    PolicyReply,
    PolicyRequest,
    parse_reply,
)
from tests import feeding
from tests.feeding import HOSTILE_CHARS, SETTINGS, cut, feed_all
from tests.test_policy_codec import attrs


@pytest.mark.parametrize(
    "pairs",
    [
        (),
        (("", "v"),),
        (("a=b", "v"),),
        (("a\nb", "v"),),
        (("a\x00", "v"),),
        (("a", "v\n"),),
        (("a", "v\x00"),),
        (("a", "v\r"),),  # the decoder would strip it
        (("a", "\ud800"),),  # a lone surrogate that no bytes decode to
        (("\udfff", "v"),),
    ],
)
def test_request_encode_refuses_what_cannot_travel(pairs: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(PolicyError):
        PolicyRequest(pairs).encode()


def test_request_encode() -> None:
    assert attrs(("a", "1"), ("b", "x=y")).encode() == b"a=1\nb=x=y\n\n"


NAME_CHARS = st.characters(exclude_characters="=\x00\n", codec="utf-8")


VALUE_CHARS = st.characters(exclude_characters="\x00\n", codec="utf-8")


ATTRIBUTE = st.tuples(
    st.text(NAME_CHARS, min_size=1, max_size=20),
    st.text(VALUE_CHARS, max_size=60).filter(lambda v: not v.endswith("\r")),
)


REQUEST = st.lists(ATTRIBUTE, min_size=1, max_size=12).map(lambda pairs: PolicyRequest(tuple(pairs)))


@SETTINGS
@given(requests=st.lists(REQUEST, min_size=1, max_size=4), data=st.data())
def test_request_round_trip_in_arbitrary_splits(requests: list[PolicyRequest], data: st.DataObject) -> None:
    stream = b"".join(r.encode() for r in requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = PolicyDecoder()
    assert feed_all(decoder, cut(stream, cuts)) == requests
    assert decoder.at_boundary
    decoder.eof()


@SETTINGS
@given(
    lines=st.lists(
        st.tuples(
            st.binary(min_size=1, max_size=20).filter(lambda b: not set(b) & set(b"=\x00\n")),
            st.binary(max_size=40).filter(lambda b: not set(b) & set(b"\x00\n") and not b.endswith(b"\r")),
        ),
        min_size=1,
        max_size=10,
    )
)
def test_raw_bytes_round_trip_losslessly(lines: list[tuple[bytes, bytes]]) -> None:
    block = b"".join(name + b"=" + value + b"\n" for name, value in lines) + b"\n"
    decoder = PolicyDecoder()
    decoder.feed(block)
    request = decoder.next()
    assert request is not None
    assert request.encode() == block


@SETTINGS
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_policy_error(data: bytes) -> None:
    decoder = PolicyDecoder(PolicyLimits(max_line_length=32, max_block_size=64))
    feeding.assert_only_raises(decoder, data, PolicyError)


@pytest.mark.parametrize(
    ("action", "wire"),
    [
        ("DUNNO", b"action=DUNNO\n\n"),
        ("REJECT 5.7.1 Access denied", b"action=REJECT 5.7.1 Access denied\n\n"),
        ("DEFER_IF_PERMIT Service temporarily unavailable", None),
        ("PREPEND X-Checked: yes", None),
        ("450 4.7.1 Zurückgestellt", None),
        ("x" * MAX_ACTION_LENGTH, None),
        ("é" * (MAX_ACTION_LENGTH // 2), None),  # 2048 bytes exactly
    ],
)
def test_reply_encode(action: str, wire: bytes | None) -> None:
    encoded = PolicyReply(action).encode()
    assert encoded == (wire if wire is not None else b"action=" + action.encode() + b"\n\n")
    assert parse_reply(encoded) == PolicyReply(action)
    assert PolicyReply.parse(encoded) == PolicyReply(action)


@pytest.mark.parametrize(
    "action",
    [
        "",  # Postfix reads an empty action as OK: it would permit the mail
        " ",
        "\t",
        "  \t ",
        "DUNNO\r",
        "REJECT a\nb",
        "DUNNO\n",
        "REJECT \r\naction=OK",  # injection attempt
        "DUNNO\x00",
        "REJECT caf\udce9",  # not encodable as UTF-8
        "x" * (MAX_ACTION_LENGTH + 1),
        "é" * (MAX_ACTION_LENGTH // 2) + "x",  # 2049 bytes
    ],
)
def test_unsendable_reply(action: str) -> None:
    with pytest.raises(ReplyError):
        PolicyReply(action).encode()


def test_max_action_length() -> None:
    assert MAX_ACTION_LENGTH == 2048


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"action=DUNNO\n",  # incomplete
        b"action=DUNNO\n\nx",  # trailing bytes
        b"action=DUNNO\n\naction=OK\n\n",  # two replies
        b"result=DUNNO\n\n",  # no action
        b"\n",
        b"action\n\n",
    ],
)
def test_parse_reply_rejected(data: bytes) -> None:
    with pytest.raises(PolicyError):
        parse_reply(data)


def test_parse_reply_takes_the_action_attribute() -> None:
    assert parse_reply(b"action=OK\r\n\r\n") == PolicyReply("OK")
    assert parse_reply(b"other=1\naction=HOLD\n\n") == PolicyReply("HOLD")


@SETTINGS
@given(action=st.text(st.characters(exclude_characters="\r\n\x00", codec="utf-8"), min_size=1, max_size=200))
def test_reply_round_trip(action: str) -> None:
    reply = PolicyReply(action)
    try:
        encoded = reply.encode()
    except ReplyError:
        assert not action.strip()
        return
    assert encoded.startswith(b"action=")
    assert encoded.endswith(b"\n\n")
    assert encoded.count(b"\n") == 2
    assert parse_reply(encoded) == reply


@SETTINGS
@given(action=st.text(HOSTILE_CHARS, max_size=100))
def test_reply_encode_never_emits_an_unsafe_reply(action: str) -> None:
    try:
        encoded = PolicyReply(action).encode()
    except ReplyError:
        return
    body = encoded.removeprefix(b"action=").removesuffix(b"\n\n")
    assert body.strip()
    assert not set(body) & set(b"\r\n\x00")
    assert len(body) <= MAX_ACTION_LENGTH
    body.decode("utf-8")
