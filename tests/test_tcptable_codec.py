"""tcp_table(5) request lines and replies: every sample fed whole, byte by byte, with trailing bytes and in
random splits; every malformation and cap refused; replies that Postfix would cut, misread or reject never
encoded; and the encoding checked against real Postfix 3.7 (postmap) where it is installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import ProtocolError, ReplyError, TcpTableError
from pfxhttp.protocol.socketmap import MAX_REASON_LENGTH, sanitize_reason
from pfxhttp.protocol.tcptable import (
    DEFAULT_MAX_LINE_LENGTH,
    MAX_REPLY_LENGTH,
    TcpTableDecoder,
    TcpTableReply,
    TcpTableRequest,
    TcpTableStatus,
    decode_text,
    encode_text,
    parse_reply,
)
from tests import feeding
from tests.feeding import HOSTILE_CHARS, SETTINGS, feed_all
from tests.postfix_harness import PostmapOutcome, make_postfix_config_dir, postfix_available, postmap_query

Factory = Callable[[], TcpTableDecoder]

# What postmap 3.7.11 sent for the key 'a b%c<TAB>d€ü' (captured from the wire): uppercase %XX for space,
# '%', tab and every byte of the UTF-8 characters.
POSTFIX_LINE = b"get a%20b%25c%09d%E2%82%AC%C3%BC\n"
POSTFIX_KEY = "a b%c\td€ü"


def reference_quote(data: bytes) -> str:
    """Postfix's hex_quote() rule in the C locale, stated independently of the codec: quote '%', isspace()
    and every byte that is not ASCII-printable."""
    out = []
    for byte in data:
        printable = 0x20 <= byte <= 0x7E
        space = byte in b" \t\n\v\f\r"
        out.append(f"%{byte:02X}" if byte == ord("%") or space or not printable else chr(byte))
    return "".join(out)


def small(limit: int) -> Factory:
    return lambda: TcpTableDecoder(max_line_length=limit)


def assert_decodes(data: bytes, keys: list[str], factory: Factory = TcpTableDecoder) -> None:
    """``data`` yields requests for exactly ``keys`` however it is cut, and what follows stays buffered."""
    feeding.assert_accepts(
        data,
        [TcpTableRequest(key) for key in keys],
        factory,
        error=TcpTableError,
        follower=(b"get next\n", TcpTableRequest("next")),
        # Partial next requests: the command alone, a key without LF, a lone CR, a CR before its LF.
        partials=[b"g", b"get", b"get k", b"\r", b"get k\r"],
        garbage=b"garbage\n",
    )


def assert_rejected(data: bytes, factory: Factory = TcpTableDecoder, *, needs_eof: bool = False) -> None:
    """``data`` raises TcpTableError however it is cut (at eof only if ``needs_eof``), and for good."""
    feeding.assert_rejected(data, factory, error=TcpTableError, valid=b"get k\n", needs_eof=needs_eof)


# --- requests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "keys"),
    [
        (POSTFIX_LINE, [POSTFIX_KEY]),
        (b"get john@example.com\n", ["john@example.com"]),
        (b"get \n", [""]),  # postmap -q '' sends exactly this
        (b"get x%01y%7Fz\n", ["x\x01y\x7fz"]),
        (b"get %e2%82%aC\n", ["€"]),  # tcp_table(5): hex digits in any case
        (b"get %2541\n", ["%41"]),  # decoded once only
        (b"get caf%E9\n", ["caf\udce9"]),  # not UTF-8: kept losslessly
        (b"get k\r\n", ["k"]),  # one CR before LF is tolerated (telnet)
        (b"get k\r\r\n", ["k\r"]),  # ... one only
        (b"get a b\n", ["a b"]),  # raw bytes Postfix would have quoted are taken literally
        ("get jürgen\n".encode(), ["jürgen"]),
        (b"get a\nget b\r\nget \n", ["a", "b", ""]),
        (b"".join(TcpTableRequest(f"user{i}@example.com").encode() for i in range(300)), None),
    ],
)
def test_decoder_accepts(data: bytes, keys: list[str] | None) -> None:
    if keys is None:
        keys = [f"user{i}@example.com" for i in range(300)]  # past the compaction threshold
    assert_decodes(data, keys)


@pytest.mark.parametrize(
    "data",
    [
        b"get %\n",
        b"get %4\n",
        b"get %4g\n",
        b"get %g4\n",
        b"get abc%\n",
        b"get %%41\n",
        b"get %+1\n",
        b"get % 1\n",
    ],
)
def test_bad_percent_escape(data: bytes) -> None:
    assert_rejected(data)


@pytest.mark.parametrize(
    "data",
    [
        b"put key value\n",  # tcp_table(5) knows only "get": refused, not answered
        b"GET key\n",  # Postfix sends lower case only
        b"Get key\n",
        b"del key\n",
        b"garbage\n",
        b"\n",  # an empty line is no request
        b"\r\n",
        b" get key\n",
        b"get\tkey\n",  # the separator is one SPACE
        b"\x00get k\n",
    ],
)
def test_unsupported_command(data: bytes) -> None:
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"get\n", b"get\r\n"])
def test_missing_key_separator(data: bytes) -> None:
    with pytest.raises(TcpTableError, match="without the space"):
        TcpTableRequest.parse(data)
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"get a\x00b\n", b"get a%00b\n", b"get \x00\n", b"get %00\n"])
def test_nul_in_key_is_refused(data: bytes) -> None:
    # Postfix keys are C strings: no NUL, raw or quoted, can come from Postfix.
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"g", b"get", b"get ", b"get key", b"get key\r", b"get a\nget b"])
def test_close_mid_request(data: bytes) -> None:
    assert_rejected(data, needs_eof=True)


def test_line_cap_boundary() -> None:
    factory = small(10)  # bytes before the LF, a CR included
    assert_decodes(b"get " + b"a" * 6 + b"\n", ["a" * 6], factory)
    assert_rejected(b"get " + b"a" * 7 + b"\n", factory)
    assert_rejected(b"get " + b"a" * 6 + b"\r\n", factory)
    assert_decodes(b"get " + b"a" * 5 + b"\r\n", ["a" * 5], factory)


def test_line_cap_checked_before_the_newline_arrives() -> None:
    decoder = TcpTableDecoder(max_line_length=10)
    decoder.feed(b"get " + b"a" * 6)  # exactly at the cap: still waiting
    assert decoder.next() is None
    decoder.feed(b"a")  # one byte more, no LF yet
    with pytest.raises(TcpTableError, match="longer than 10"):
        decoder.next()
    assert not decoder.at_boundary
    assert_rejected(b"get " + b"a" * 20, small(10))  # refused however it is cut, without any LF


def test_newline_less_flood_is_refused_at_the_first_chunk_past_the_cap() -> None:
    decoder = TcpTableDecoder()
    chunk = b"get " + b"x" * 60000
    decoder.feed(chunk)
    with pytest.raises(TcpTableError):
        decoder.next()
    for _ in range(100):  # later floods are dropped and keep raising
        decoder.feed(chunk)
        with pytest.raises(TcpTableError):
            decoder.next()


def test_default_cap_fits_a_fully_quoted_smtp_line() -> None:
    assert DEFAULT_MAX_LINE_LENGTH == 8192
    key = "\t" * 2048  # smtpd's line_length_limit, every byte quoted: 6144 + "get "
    assert_decodes(TcpTableRequest(key).encode(), [key])
    assert_decodes(b"get " + b"a" * (DEFAULT_MAX_LINE_LENGTH - 4) + b"\n", ["a" * 8188])
    assert_rejected(b"get " + b"a" * (DEFAULT_MAX_LINE_LENGTH - 3) + b"\n")


def test_max_line_length_must_be_positive() -> None:
    assert TcpTableDecoder(max_line_length=1).max_line_length == 1
    with pytest.raises(ValueError):
        TcpTableDecoder(max_line_length=0)


def test_request_encode_mirrors_postfix() -> None:
    assert TcpTableRequest(POSTFIX_KEY).encode() == POSTFIX_LINE
    assert TcpTableRequest("").encode() == b"get \n"
    assert TcpTableRequest("UPPER Case").encode() == b"get UPPER%20Case\n"
    assert TcpTableRequest("x\x01y\x7fz").encode() == b"get x%01y%7Fz\n"
    assert TcpTableRequest("caf\udce9").encode() == b"get caf%E9\n"  # surrogateescape gives the byte back


@pytest.mark.parametrize("key", ["a\x00b", "\ud800", "x\udfff"])
def test_request_with_unsendable_key(key: str) -> None:
    with pytest.raises(TcpTableError):
        TcpTableRequest(key).encode()


def test_request_parse() -> None:
    assert TcpTableRequest.parse(POSTFIX_LINE) == TcpTableRequest(POSTFIX_KEY)
    with pytest.raises(TcpTableError, match="incomplete"):
        TcpTableRequest.parse(b"get k")
    with pytest.raises(TcpTableError, match="bytes after"):
        TcpTableRequest.parse(b"get k\nget j\n")


def test_tcptable_error_is_a_protocol_error() -> None:
    assert issubclass(TcpTableError, ProtocolError)
    assert not issubclass(ReplyError, ProtocolError)


@SETTINGS
@given(key=st.binary(max_size=300).filter(lambda b: b"\x00" not in b))
def test_request_bytes_match_postfix_quoting(key: bytes) -> None:
    line = b"get " + reference_quote(key).encode("ascii") + b"\n"
    request = TcpTableRequest.parse(line)
    assert request.key.encode("utf-8", "surrogateescape") == key
    assert request.encode() == line


@SETTINGS
@given(key=st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(" %\t\r\n\x7f€ü")), max_size=200))
def test_request_text_round_trip(key: str) -> None:
    if "\x00" in key:
        with pytest.raises(TcpTableError):
            TcpTableRequest(key).encode()
        return
    line = TcpTableRequest(key).encode()
    assert line.startswith(b"get ")
    assert line.endswith(b"\n")
    assert all(0x21 <= b <= 0x7E for b in line[4:-1])  # printable ASCII, no space, nothing raw
    for chunks in feeding.splittings(line + line, seeds=1):
        assert feed_all(TcpTableDecoder(), chunks) == [TcpTableRequest(key)] * 2


@SETTINGS
@given(
    data=st.lists(
        st.sampled_from([b"get ", b"get", b"put ", b"%", b"%4", b"%41", b"a", b" ", b"\r", b"\n", b"\x00"]),
        max_size=30,
    ).map(b"".join)
)
def test_arbitrary_input_only_raises_tcptable_error(data: bytes) -> None:
    feeding.assert_only_raises(TcpTableDecoder(max_line_length=16), data, TcpTableError)


# --- %XX text -----------------------------------------------------------------------------------------


def test_encode_text_quotes_exactly_what_postfix_quotes() -> None:
    for byte in range(256):
        text = bytes([byte]).decode("utf-8", "surrogateescape")
        assert encode_text(text) == reference_quote(bytes([byte])), byte


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("plain", "plain"),
        ("a b", "a%20b"),
        ("100%", "100%25"),
        ("ü", "%C3%BC"),  # uppercase hex, every byte of the UTF-8 sequence
        ("\t\r\n\v\f", "%09%0D%0A%0B%0C"),
        ("", ""),
    ],
)
def test_encode_decode_text(text: str, encoded: str) -> None:
    assert encode_text(text) == encoded
    assert decode_text(encoded) == text


def test_decode_text_is_liberal_in_case_and_raw_bytes() -> None:
    assert decode_text("%c3%Bc") == "ü"
    assert decode_text("a b\tü") == "a b\tü"  # unquoted characters stand for themselves
    assert decode_text("%E9") == "\udce9"


@pytest.mark.parametrize("text", ["%", "%4", "%4g", "%g4", "abc%", "%%41", "%-1", "%\u0664\u0661"])
def test_decode_text_rejects_bad_escapes(text: str) -> None:
    with pytest.raises(TcpTableError):
        decode_text(text)


def test_encode_text_refuses_surrogates_without_bytes() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_text("\ud800")


@SETTINGS
@given(
    text=st.text(
        st.one_of(st.characters(codec="utf-8"), st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))
    )
)
def test_text_round_trip(text: str) -> None:
    encoded = encode_text(text)
    assert all("!" <= c <= "~" for c in encoded)
    assert decode_text(encoded) == text
    lowered = re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), encoded)
    assert decode_text(lowered) == text  # lowercase hex decodes the same


# --- replies ------------------------------------------------------------------------------------------


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


# --- against real Postfix -------------------------------------------------------------------------------

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
