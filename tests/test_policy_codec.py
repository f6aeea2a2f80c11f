"""Policy delegation blocks (SMTPD_POLICY_README), decoding: every sample fed whole, byte by byte, with trailing
bytes and in random splits; every cap and malformation refused. Encoding of requests and replies:
test_policy_encoding.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pfxhttp.errors import PolicyError, ProtocolError
from pfxhttp.protocol.policy import (
    PolicyDecoder,
    PolicyLimits,
    PolicyRequest,
)
from tests import feeding

Factory = Callable[[], PolicyDecoder]

# The example request of SMTPD_POLICY_README (abridged to the attributes Postfix 3.x sends).
POSTFIX_BLOCK = (
    b"request=smtpd_access_policy\n"
    b"protocol_state=RCPT\n"
    b"protocol_name=ESMTP\n"
    b"client_address=192.0.2.1\n"
    b"client_name=mail.example.com\n"
    b"client_port=51234\n"
    b"reverse_client_name=mail.example.com\n"
    b"server_address=2001:db8::25\n"
    b"server_port=25\n"
    b"helo_name=mail.example.com\n"
    b"sender=foo@example.com\n"
    b"recipient=bar@example.org\n"
    b"recipient_count=0\n"
    b"queue_id=\n"
    b"instance=123.456.7\n"
    b"size=12345\n"
    b"etrn_domain=\n"
    b"stress=\n"
    b"sasl_method=plain\n"
    b"sasl_username=you\n"
    b"sasl_sender=\n"
    b"ccert_subject=solaris9.porcupine.org\n"
    b"encryption_protocol=TLSv1.3\n"
    b"encryption_cipher=TLS_AES_256_GCM_SHA384\n"
    b"encryption_keysize=256\n"
    b"policy_context=submission\n"
    b"compatibility_level=3.6\n"
    b"mail_version=3.7.11\n"
    b"\n"
)


def attrs(*pairs: tuple[str, str]) -> PolicyRequest:
    return PolicyRequest(tuple(pairs))


def assert_decodes(data: bytes, expected: list[PolicyRequest], factory: Factory = PolicyDecoder) -> None:
    """``data`` yields exactly ``expected`` however it is cut, and what follows stays buffered."""
    feeding.assert_accepts(
        data,
        expected,
        factory,
        error=PolicyError,
        follower=(b"n=1\n\n", attrs(("n", "1"))),
        # Partial next requests: complete lines without the empty line yet, a half line, a lone CR.
        partials=[b"n=1\n", b"n=", b"\r"],
        garbage=b"garbage\n",
    )


def assert_rejected(data: bytes, factory: Factory = PolicyDecoder, *, needs_eof: bool = False) -> None:
    """``data`` raises PolicyError however it is cut (at eof only if ``needs_eof``), and for good."""
    feeding.assert_rejected(data, factory, error=PolicyError, valid=b"a=b\n\n", needs_eof=needs_eof)


# --- requests -------------------------------------------------------------------------------------------


def test_postfix_example_block() -> None:
    decoder = PolicyDecoder()
    decoder.feed(POSTFIX_BLOCK)
    request = decoder.next()
    assert request is not None
    assert request.get("request") == "smtpd_access_policy"
    assert request.get("server_address") == "2001:db8::25"
    assert request.get("queue_id") == ""
    assert request.get("missing") is None
    assert len(request.attributes) == 28
    assert request.encode() == POSTFIX_BLOCK


VALID = [
    (POSTFIX_BLOCK, None),
    (b"a=b\n\n", [attrs(("a", "b"))]),
    (b"a=\n\n", [attrs(("a", ""))]),  # empty value
    (b"a=b=c==\n\n", [attrs(("a", "b=c=="))]),  # split at the FIRST '='
    (b"a=1\nb=2\na=3\n\n", [attrs(("a", "1"), ("b", "2"), ("a", "3"))]),  # repeats kept in order
    (b"a=b\r\n\r\n", [attrs(("a", "b"))]),  # telnet line ends
    (b"a=b\r\r\n\n", [attrs(("a", "b\r"))]),  # only ONE CR is stripped
    (b"a=b\rc\n\n", [attrs(("a", "b\rc"))]),  # a CR inside is data
    (b"a= spaced value \n\n", [attrs(("a", " spaced value "))]),
    (b" a=b\n\n", [attrs((" a", "b"))]),  # names are not trimmed either
    ("sender=jürgen@bücher.example\n\n".encode(), [attrs(("sender", "jürgen@bücher.example"))]),
    (b"helo_name=caf\xe9\n\n", [attrs(("helo_name", "caf\udce9"))]),  # non-UTF-8 kept losslessly
    (b"a=1\n\nb=2\n\n", [attrs(("a", "1")), attrs(("b", "2"))]),
]


@pytest.mark.parametrize(("data", "expected"), VALID)
def test_valid_samples(data: bytes, expected: list[PolicyRequest] | None) -> None:
    if expected is None:
        decoder = PolicyDecoder()
        decoder.feed(data)
        first = decoder.next()
        assert first is not None
        expected = [first]
    assert_decodes(data, expected)


def test_get_and_as_dict_take_the_last_occurrence() -> None:
    request = attrs(("a", "1"), ("b", "2"), ("a", "3"))
    assert request.get("a") == "3"
    assert request.as_dict() == {"a": "3", "b": "2"}


def test_many_requests_on_one_connection() -> None:
    block = POSTFIX_BLOCK
    decoder = PolicyDecoder()
    count = 0
    peak = 0
    stream = block * 300
    for start in range(0, len(stream), 333):  # cuts that rarely fall on a boundary
        decoder.feed(stream[start : start + 333])
        while decoder.next() is not None:
            count += 1
        peak = max(peak, len(decoder._buf))  # white-box: the physical buffer, consumed bytes included
    assert count == 300
    assert peak <= 2 * 4096 + 333
    assert decoder.at_boundary


def test_default_limits() -> None:
    limits = PolicyLimits()
    assert (limits.max_line_length, limits.max_block_size) == (16384, 131072)
    assert PolicyDecoder().limits == limits


@pytest.mark.parametrize("field", ["max_line_length", "max_block_size"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        PolicyLimits(**{field: 0})


# --- rejected requests ----------------------------------------------------------------------------------

REJECTED = [
    b"no equals sign\n",
    b"a=b\nno equals sign\n\n",
    b"=value\n\n",  # empty name
    b"=\n\n",
    b"\n",  # empty block
    b"\r\n",
    b"a=b\n\n\n",  # a stray empty line after a request is an empty block
    b"a\x00b=c\n\n",
    b"a=b\x00c\n\n",
    b"a=b\x00\n",  # NUL refused as soon as the line is complete
]


@pytest.mark.parametrize("data", REJECTED)
def test_rejected_samples(data: bytes) -> None:
    assert_rejected(data)


@pytest.mark.parametrize("data", [b"a=b", b"a=b\n", b"a=b\r", b"a=b\nc=d\n", b"a", b"\r"])
def test_eof_mid_request_is_rejected(data: bytes) -> None:
    assert_rejected(data, needs_eof=True)


def test_policy_error_is_a_protocol_error() -> None:
    assert issubclass(PolicyError, ProtocolError)


def small(**kwargs: int) -> Factory:
    return lambda: PolicyDecoder(PolicyLimits(**kwargs))


def test_line_length_cap() -> None:
    factory = small(max_line_length=16)
    line = b"a=" + b"x" * 14  # 16 bytes before LF: at the cap
    assert_decodes(line + b"\n\n", [attrs(("a", "x" * 14))], factory)
    assert_rejected(line + b"x\n\n", factory)
    assert_rejected(b"a=" + b"x" * 13 + b"\r\r\n\n", factory)  # a CR counts as a byte of the line


def test_line_over_cap_refused_before_the_newline_arrives() -> None:
    decoder = PolicyDecoder(PolicyLimits(max_line_length=16))
    decoder.feed(b"a=" + b"x" * 14)
    assert decoder.next() is None  # 16 bytes pending: could still be a legal line
    decoder.feed(b"x")
    with pytest.raises(PolicyError, match="line longer"):
        decoder.next()


def test_newline_less_flood_with_default_limits() -> None:
    decoder = PolicyDecoder()
    chunk = b"x" * 4096
    with pytest.raises(PolicyError, match="line longer"):
        for _ in range(5):  # 20 KiB without a newline, bounded loop
            decoder.feed(chunk)
            assert decoder.next() is None
    assert len(decoder._buf) == 0  # white-box: the memory is released at once


def test_a_thousand_short_attributes_are_one_request() -> None:
    # Bounded by bytes, not by count: 1,000 attributes Postfix does not define (ignored by whatever does not
    # use them) in about 16 KB are a well-formed request; 256 of them were once the limit.
    pairs = [(f"x_attr_{n}", f"v{n}") for n in range(1000)]
    block = b"".join(b"%s=%s\n" % (name.encode(), value.encode()) for name, value in pairs) + b"\n"
    assert 15_000 < len(block) < 20_000
    assert_decodes(POSTFIX_BLOCK[:-1] + block, [attrs(*_pairs(POSTFIX_BLOCK), *pairs)])


def test_many_empty_attributes_up_to_the_block_size() -> None:
    # The most attributes a block can hold: empty values, one-letter names, within max_block_size.
    limits = PolicyLimits()
    count = (limits.max_block_size - 1) // 3
    decoder = PolicyDecoder()
    decoder.feed(b"a=\n" * count + b"\n")
    request = decoder.next()
    assert request is not None and len(request.attributes) == count and decoder.at_boundary
    assert_rejected(b"a=\n" * (count + 1) + b"\n")  # one more is one line over the byte cap


def _pairs(block: bytes) -> list[tuple[str, str]]:
    lines = block.decode().splitlines()
    return [(name, value) for name, _, value in (line.partition("=") for line in lines if line)]


def test_block_size_cap() -> None:
    factory = small(max_block_size=12)
    assert_decodes(b"a=12\nb=123\n\n", [attrs(("a", "12"), ("b", "123"))], factory)  # 12 bytes exactly
    assert_rejected(b"a=12\nb=1234\n\n", factory)  # 13 bytes, refused at the empty line
    assert_rejected(b"a=123\nb=1234\n\n", factory)  # refused when "b=1234\n" completes


def test_block_size_cap_counts_the_incomplete_line() -> None:
    decoder = PolicyDecoder(PolicyLimits(max_block_size=12))
    decoder.feed(b"a=12345\n")  # 8 bytes consumed into the block
    assert decoder.next() is None
    decoder.feed(b"b=1")  # 8 + 3 = 11 bytes: could still end in time
    assert decoder.next() is None
    decoder.feed(b"23")  # 8 + 5 = 13 > 12 before any newline
    with pytest.raises(PolicyError, match="larger than"):
        decoder.next()


def test_caps_reset_between_requests() -> None:
    factory = small(max_line_length=3, max_block_size=9)
    block = b"a=1\nb=2\n\n"  # 2 attributes, 9 bytes
    assert_decodes(block * 5, [attrs(("a", "1"), ("b", "2"))] * 5, factory)


# --- request encoding -----------------------------------------------------------------------------------


# --- replies --------------------------------------------------------------------------------------------
