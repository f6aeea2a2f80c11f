"""tcp_table(5) replies: the status codes and %XX encoding of what pfxhttp answers, and the codec against real
Postfix (postmap -q over tcp:)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import ReplyError, TcpTableError
from pfxhttp.protocol.socketmap import MAX_REASON_LENGTH, sanitize_reason
from pfxhttp.protocol.tcptable import (
    MAX_REPLY_LENGTH,
    TcpTableDecoder,
    TcpTableReply,
    TcpTableStatus,
    parse_reply,
)
from tests.feeding import HOSTILE_CHARS, SETTINGS
from tests.postfix_harness import PostmapOutcome, make_postfix_config_dir, postfix_available, postmap_query
from tests.test_tcptable_codec import POSTFIX_KEY, reference_quote


def test_status_values_are_the_wire_codes() -> None:
    assert [s.value for s in TcpTableStatus] == [200, 400, 500]
    assert MAX_REPLY_LENGTH == 4096


@pytest.mark.parametrize(
    ("reply", "line"),
    [
        (TcpTableReply.found("relay:[mx.example.com]:25"), b"200 relay:[mx.example.com]:25\n"),
        (TcpTableReply.found("a b"), b"200 a%20b\n"),
        (TcpTableReply.found("100%"), b"200 100%25\n"),
        (TcpTableReply.found("ü€"), b"200 %C3%BC%E2%82%AC\n"),
        (TcpTableReply.found("tab\there\r\nnl"), b"200 tab%09here%0D%0Anl\n"),
        (TcpTableReply.found("del\x7f\x01"), b"200 del%7F%01\n"),
        (TcpTableReply.found('"q" \\ <> ,:;'), b'200 "q"%20\\%20<>%20,:;\n'),
        (TcpTableReply.not_found(), b"500 not%20found\n"),
        (TcpTableReply.not_found("no such user"), b"500 no%20such%20user\n"),
        (TcpTableReply.not_found(""), b"500 \n"),
        (TcpTableReply.temp("backend timeout"), b"400 backend%20timeout\n"),
    ],
)
def test_reply_encode(reply: TcpTableReply, line: bytes) -> None:
    assert reply.encode() == line
    assert parse_reply(line) == reply
    assert TcpTableReply.parse(line) == reply


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("", "empty"),  # Postfix 3.7: "empty string result is not allowed"
        ("a\x00b", "NUL"),  # Postfix cuts the value at a %00
        ("caf\udce9", "UTF-8"),  # a non-UTF-8 value is a lookup error with SMTPUTF8
        ("\ud800", "UTF-8"),
    ],
)
def test_unsendable_found_values(value: str, match: str) -> None:
    with pytest.raises(ReplyError, match=match):
        TcpTableReply.found(value).encode()


def test_reply_length_boundary_is_4096_with_the_newline() -> None:
    line = TcpTableReply.found("a" * 4091).encode()
    assert len(line) == MAX_REPLY_LENGTH
    assert parse_reply(line) == TcpTableReply.found("a" * 4091)
    with pytest.raises(ReplyError, match="exceeds 4096"):
        TcpTableReply.found("a" * 4092).encode()


def test_reply_length_counts_the_quoted_form() -> None:
    value = "é" * 681 + "a" * 5  # 681 x 6 quoted + 5 = 4091 characters of text
    assert len(TcpTableReply.found(value).encode()) == MAX_REPLY_LENGTH
    with pytest.raises(ReplyError):
        TcpTableReply.found(value + "a").encode()
    with pytest.raises(ReplyError):
        TcpTableReply.found("é" * 682).encode()  # fewer characters, but 4097 bytes once quoted


@pytest.mark.parametrize("make", [TcpTableReply.temp, TcpTableReply.not_found])
def test_reasons_are_sanitised_and_always_fit(make: Callable[[str], TcpTableReply]) -> None:
    assert make("bad\r\nthing\x00here\x7f\x85\ud800 end").text == "bad  thing here  ? end"
    assert make("r" * 500).text == "r" * MAX_REASON_LENGTH
    worst = make("\U0010ffff" * 5000).encode()  # 200 characters x 4 bytes x 3 once quoted
    assert len(worst) <= MAX_REPLY_LENGTH
    assert parse_reply(worst) == make("\U0010ffff" * MAX_REASON_LENGTH)


def test_directly_built_reasons_are_sanitised_at_encode() -> None:
    assert TcpTableReply(TcpTableStatus.TEMP, "line1\nline2").encode() == b"400 line1%20line2\n"
    line = TcpTableReply(TcpTableStatus.NOT_FOUND, "x" * 5000).encode()
    assert line == b"500 " + b"x" * MAX_REASON_LENGTH + b"\n"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"200 %c3%bc\n", TcpTableReply.found("ü")),  # any case
        (b"200 a b\n", TcpTableReply.found("a b")),  # unquoted text stands for itself
        (b"500 \n", TcpTableReply.not_found("")),
        (b"400 x%20y\n", TcpTableReply.temp("x y")),
        (b"200 " + b"a" * 4091 + b"\n", TcpTableReply.found("a" * 4091)),
    ],
)
def test_parse_reply(line: bytes, expected: TcpTableReply) -> None:
    assert parse_reply(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"200 x",  # no newline
        b"200\n",  # no space
        b"200x\n",
        b"200\tx\n",  # Postfix takes any whitespace; the test parser insists on our exact form
        b" 200 x\n",
        b"250 x\n",
        b"20 x\n",
        b"600 x\n",
        b"OK x\n",
        b"200 a%2\n",
        b"200 a%zz\n",
        b"200 a\nb\n",
        b"200 " + b"a" * 4092 + b"\n",  # 4097 bytes
    ],
)
def test_parse_reply_rejected(line: bytes) -> None:
    with pytest.raises(TcpTableError):
        parse_reply(line)


def reply_fits(value: str) -> bool:
    return 4 + len(reference_quote(value.encode())) + 1 <= MAX_REPLY_LENGTH


@SETTINGS
@given(
    value=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=1500),
)
def test_found_reply_round_trip(value: str) -> None:
    reply = TcpTableReply.found(value)
    if not reply_fits(value):
        with pytest.raises(ReplyError):
            reply.encode()
        return
    line = reply.encode()
    assert line == b"200 " + reference_quote(value.encode()).encode("ascii") + b"\n"
    assert parse_reply(line) == reply


@SETTINGS
@given(status=st.sampled_from(TcpTableStatus), text=st.text(HOSTILE_CHARS, max_size=1500))
def test_encode_never_emits_an_unsafe_reply(status: TcpTableStatus, text: str) -> None:
    try:
        line = TcpTableReply(status, text).encode()
    except ReplyError:
        assert status is TcpTableStatus.FOUND  # only a value can be unsendable; a reason always is sendable
        return
    assert len(line) <= MAX_REPLY_LENGTH
    assert line.startswith(b"%d " % status.value)
    assert line.endswith(b"\n")
    assert all(0x21 <= b <= 0x7E for b in line[4:-1])  # no raw space, CR, LF, NUL or 8-bit byte
    expected = text if status is TcpTableStatus.FOUND else sanitize_reason(text)
    assert parse_reply(line) == TcpTableReply(status, expected)


postfix = pytest.mark.skipif(not postfix_available(), reason="Debian's postfix is not installed")


# key sent by postmap -> the reply our codec encodes for it
REPLIES: dict[str, TcpTableReply] = {
    "boundary-ascii": TcpTableReply.found("a" * 4091),  # 4096 bytes with the LF
    "boundary-utf8": TcpTableReply.found("é" * 681 + "a" * 5),  # 4096 bytes once quoted
    "missing": TcpTableReply.not_found("no such key"),
    "soft": TcpTableReply.temp("backend timeout"),
}


def answer(key: str) -> TcpTableReply:
    return REPLIES.get(key) or TcpTableReply.found(f"<{key}> 100% \t ✓ €\nend")


async def serve_tcptable(
    keys: list[str], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A tcp_table server built on the codec; records every decoded key."""

    async def handle(stream: trio.SocketStream) -> None:
        decoder = TcpTableDecoder()
        async with stream:
            try:
                while True:
                    while (request := decoder.next()) is not None:
                        keys.append(request.key)
                        await stream.send_all(answer(request.key).encode())
                    data = await stream.receive_some(65536)
                    if not data:
                        decoder.eof()
                        return
                    decoder.feed(data)
            except (TcpTableError, trio.BrokenResourceError):
                return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


@postfix
@pytest.mark.postfix
async def test_postmap_reads_our_replies(nursery: trio.Nursery, tmp_path: Path) -> None:
    keys: list[str] = []
    port = await nursery.start(serve_tcptable, keys)
    mapspec = f"tcp:127.0.0.1:{port}"
    config_dir = make_postfix_config_dir(tmp_path)
    sent = [
        "john@example.com",
        POSTFIX_KEY,
        "",
        "x\x01y\x7fz",
        "%41",
        "MiXeD Case",
        "a\nb",
        "jürgen@bücher.example",
    ]
    with trio.fail_after(30):
        for key in sent:
            result = await postmap_query(key, mapspec, config_dir=config_dir)
            assert result.outcome is PostmapOutcome.FOUND, (key, result)
            assert result.value == answer(key).text, key
        for key in ("boundary-ascii", "boundary-utf8"):
            result = await postmap_query(key, mapspec, config_dir=config_dir)
            assert result.value == REPLIES[key].text, key
        missing = await postmap_query("missing", mapspec, config_dir=config_dir)
        assert missing.outcome is PostmapOutcome.NOT_FOUND
        soft = await postmap_query("soft", mapspec, config_dir=config_dir)
        assert soft.outcome is PostmapOutcome.ERROR
    # Postfix quoted each key and our decoder got it back intact (tcp: tables fold no case).
    assert keys == [*sent, "boundary-ascii", "boundary-utf8", "missing", "soft"]
