"""The policy decoder's whole-block fast path against its line-by-line reference path.

The fast path (:meth:`PolicyDecoder._whole_block`) must never change what the decoder does: for every input,
cut anywhere, the decoder with it and the decoder without it (:class:`LineByLine`, the reference) must give
the same requests, the same errors at the same call, and end in the same internal state. The inputs are
random blocks built from the bytes that matter (``=``, LF, CR, NUL, broken and valid UTF-8), with trailing
bytes, under default and tiny caps. White-box by design: it reaches the two private paths it compares.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.errors import PolicyError
from pfxhttp.protocol.policy import PolicyDecoder, PolicyLimits, PolicyRequest
from tests.feeding import SETTINGS, cut
from tests.test_policy_codec import POSTFIX_BLOCK, REJECTED


class LineByLine(PolicyDecoder):
    """The reference: the same decoder with the fast path switched off."""

    __slots__ = ()

    def next(self) -> PolicyRequest | None:
        return self._next_by_line()


Event = tuple[str, object]


def state(decoder: PolicyDecoder) -> tuple[object, ...]:
    """Everything the decoder keeps between calls."""
    return (
        bytes(decoder._buf),
        decoder._offset,
        decoder._scan,
        tuple(decoder._attrs),
        decoder._block_size,
        decoder._error,
    )


def transcript(decoder: PolicyDecoder, chunks: Sequence[bytes]) -> list[Event]:
    """Feed chunk by chunk, draining after each as the server does; record results, errors and states."""
    events: list[Event] = []
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            while (request := decoder.next()) is not None:
                events.append(("request", request))
        except PolicyError as exc:
            events.append(("error", str(exc)))
            events.append(("state", state(decoder)))
            return events
        events.append(("state", state(decoder)))
    events.append(("at_boundary", decoder.at_boundary))
    try:
        decoder.eof()
        events.append(("eof", "ok"))
    except PolicyError as exc:
        events.append(("eof", str(exc)))
    return events


def assert_same(data: bytes, limits: PolicyLimits, chunkings: Sequence[Sequence[bytes]]) -> None:
    for chunks in chunkings:
        fast = transcript(PolicyDecoder(limits), chunks)
        reference = transcript(LineByLine(limits), chunks)
        assert fast == reference, (data, list(chunks))


def every_cut(data: bytes) -> list[list[bytes]]:
    """Whole, byte by byte, and split in two at every byte boundary."""
    chunkings = [[data], [data[i : i + 1] for i in range(len(data))]]
    chunkings += [cut(data, [i]) for i in range(1, len(data))]
    return chunkings


# --- strategies -----------------------------------------------------------------------------------------

# The bytes the decoder treats specially, and UTF-8 that is valid, truncated or stray.
PIECES = st.sampled_from(
    (
        *(b"a", b"b", b"x", b" ", b"=", b"=", b"\r", b"\x00"),  # '=' twice: values holding '=' happen
        *(b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x93\xa7"),  # valid UTF-8
        *(
            b"\xc3",
            b"\xa9",
            b"\xe2\x82",
            b"\xff",
            b"\xed\xa0\x80",
            b"\x85",
        ),  # truncated, stray, surrogate, C1
    )
)
FREE_BYTES = st.lists(PIECES, max_size=8).map(b"".join)
NAME = st.lists(PIECES.filter(lambda p: p not in (b"=", b"\x00", b"\r")), min_size=1, max_size=5).map(
    b"".join
)
VALUE = st.lists(PIECES.filter(lambda p: p not in (b"\x00", b"\r")), max_size=6).map(b"".join)
WELL_FORMED = st.builds(lambda name, value: name + b"=" + value + b"\n", NAME, VALUE)
ODD_LINE = st.one_of(
    FREE_BYTES.map(lambda b: b + b"\n"),  # anything: no '=', empty name, NUL, CR inside
    st.builds(lambda name, value: name + b"=" + value + b"\r\n", NAME, VALUE),  # telnet line end
    st.sampled_from([b"\n", b"\r\n", b"=\n", b"=x\n", b"\r\r\n", b"a=b\x00\n"]),
)
# Mostly well-formed lines, so that many blocks are complete and valid and the fast path gets work too.
LINE = st.sampled_from([True, True, True, True, False]).flatmap(lambda ok: WELL_FORMED if ok else ODD_LINE)
BLOCK = st.builds(
    lambda lines, end: b"".join(lines) + end,
    st.lists(LINE, max_size=6),
    st.sampled_from([b"\n", b"\n", b"\n", b"\r\n"]),
)
TRAILER = st.one_of(st.just(b""), FREE_BYTES, LINE, st.builds(bytes.__add__, LINE, FREE_BYTES))
STREAM = st.builds(
    lambda blocks, trailer: b"".join(blocks) + trailer, st.lists(BLOCK, min_size=1, max_size=3), TRAILER
)
LIMITS = st.one_of(
    st.just(PolicyLimits()),
    st.just(PolicyLimits(max_line_length=40, max_block_size=150)),
    st.builds(PolicyLimits, max_line_length=st.integers(1, 24), max_block_size=st.integers(1, 96)),
)


# --- equivalence ----------------------------------------------------------------------------------------


@SETTINGS
@given(data=STREAM, limits=LIMITS)
def test_same_results_and_errors_however_cut(data: bytes, limits: PolicyLimits) -> None:
    assert_same(data, limits, every_cut(data))


@SETTINGS
@given(data=st.binary(max_size=120), limits=LIMITS)
def test_same_on_arbitrary_bytes(data: bytes, limits: PolicyLimits) -> None:
    assert_same(data, limits, every_cut(data))


@SETTINGS
@given(
    blocks=st.lists(st.lists(WELL_FORMED, min_size=1, max_size=5), min_size=1, max_size=3), trailer=TRAILER
)
def test_well_formed_pipelined_blocks(blocks: list[list[bytes]], trailer: bytes) -> None:
    """Requests sent back to back in one write (pipelining) come out one by one, trailing bytes kept."""
    data = b"".join(b"".join(lines) + b"\n" for lines in blocks) + trailer
    assert_same(data, PolicyLimits(), every_cut(data))


@SETTINGS
@given(
    data=STREAM,
    limits=LIMITS,
    tail=st.sampled_from([b"", b"a=b\n\n", b"a=b\n", b"a", b"\r"]),
)
def test_fast_path_decides_or_leaves_everything_untouched(
    data: bytes, limits: PolicyLimits, tail: bytes
) -> None:
    """Called on its own, the fast path gives the reference's request, or None and changes nothing."""
    fast = PolicyDecoder(limits)
    fast.feed(data + tail)
    before = state(fast)
    request = fast._whole_block()
    reference = LineByLine(limits)
    reference.feed(data + tail)
    if request is None:
        assert state(fast) == before
    else:
        assert reference.next() == request
        assert state(fast) == state(reference)


# --- the fast path is really taken ----------------------------------------------------------------------


def whole_block(data: bytes, limits: PolicyLimits | None = None) -> PolicyRequest | None:
    decoder = PolicyDecoder(limits)
    decoder.feed(data)
    return decoder._whole_block()


@pytest.mark.parametrize(
    "data",
    [
        POSTFIX_BLOCK,
        POSTFIX_BLOCK + POSTFIX_BLOCK,  # pipelined: the first block
        POSTFIX_BLOCK + b"request=smtpd",  # the start of the next request stays buffered
        b"a=b=c==\n\n",  # a value with '=': split at the first one
        b"a=1\nb=\na=3\n\n",  # empty values, repeated names
        b"helo_name=caf\xe9\n\n",  # non-UTF-8
        "sender=jürgen@bücher.example\n\n".encode(),
    ],
)
def test_fast_path_takes_ordinary_blocks(data: bytes) -> None:
    request = whole_block(data)
    reference = LineByLine()
    reference.feed(data)
    assert request is not None
    assert request == reference.next()


@pytest.mark.parametrize(
    "data",
    [
        b"a=b\r\n\r\n",  # telnet line ends: CR stripping is the reference path's
        b"a=b\rc\n\n",
        b"a=b\n",  # incomplete
        b"a=b\n\r\n",
        b"\n\n",
        b"=\n\n",
        b"a=b\nno equals sign\n\n",
        b"a=b\x00c\n\n",
    ],
)
def test_fast_path_leaves_the_rest_to_the_reference(data: bytes) -> None:
    assert whole_block(data) is None


@pytest.mark.parametrize("data", REJECTED)
def test_rejected_samples_fail_alike(data: bytes) -> None:
    assert_same(data, PolicyLimits(), every_cut(data))


@pytest.mark.parametrize(
    ("limits", "data"),
    [
        (PolicyLimits(max_line_length=2), b"a=1\n\n"),  # block longer than a line may be
        (PolicyLimits(max_block_size=4), b"a=1\n\n"),
        (PolicyLimits(max_block_size=8), b"a=1\nb=2\n\n"),
        (PolicyLimits(max_block_size=10), b"a=1\nb=2=3\n\n"),
    ],
)
def test_fast_path_leaves_caps_to_the_reference(limits: PolicyLimits, data: bytes) -> None:
    assert whole_block(data, limits) is None
    assert_same(data, limits, every_cut(data))


def test_every_request_of_a_long_connection_takes_the_fast_path() -> None:
    decoder = PolicyDecoder()
    taken: list[PolicyRequest] = []
    for _ in range(50):  # bounded: one block per feed, as Postfix writes them
        decoder.feed(POSTFIX_BLOCK)
        request = decoder._whole_block()
        assert request is not None
        taken.append(request)
        assert decoder.next() is None
    assert len(set(taken)) == 1
    assert decoder.at_boundary
