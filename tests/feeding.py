"""The feeding discipline shared by the sans-IO codec tests (netstring, policy), after h11's tests/test_io.py.

A sans-IO decoder must give the same events however the bytes are cut, keep what follows a frame buffered,
and refuse bad input early and for good. The helpers here check exactly that for any decoder with the
feed/next/eof/at_boundary shape; each test file supplies its decoder, its error type and its sample frames.
Also here: the hypothesis settings and the hostile-text strategy that the codec test files share.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

SETTINGS = settings(max_examples=200, deadline=None)

# Any character, with the troublesome ones (NUL, CR, LF, C1 control, lone surrogates) drawn often.
HOSTILE_CHARS = st.one_of(st.characters(), st.sampled_from(["\x00", "\r", "\n", "\x85", "\ud800", "\udce9"]))


class Decoder(Protocol[T_co]):
    """A sans-IO frame decoder as the server loop drives it."""

    def feed(self, data: bytes) -> None: ...

    def next(self) -> T_co | None: ...

    def eof(self) -> None: ...

    @property
    def at_boundary(self) -> bool: ...


def cut(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the (sorted) offsets ``cuts``."""
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


def splittings(data: bytes, seeds: int = 4) -> Iterator[list[bytes]]:
    """Whole, one byte at a time, then a few deterministic random splits."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for seed in range(seeds):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8)))) if data else []
        yield cut(data, cuts)


def feed_all(decoder: Decoder[T], chunks: Iterable[bytes]) -> list[T]:
    """Feed chunk by chunk, draining after each one as the server loop does."""
    out: list[T] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (item := decoder.next()) is not None:
            out.append(item)
    return out


def assert_only_raises(decoder: Decoder[object], data: bytes, error: type[Exception]) -> None:
    """Arbitrary ``data``, fed byte by byte then closed, decodes or raises ``error`` (nothing else), and a
    decoder that raised is never left at a boundary."""
    try:
        feed_all(decoder, [data[i : i + 1] for i in range(len(data))])
        decoder.eof()
    except error:
        assert not decoder.at_boundary


def assert_accepts(
    data: bytes,
    expected: list[T],
    factory: Callable[[], Decoder[T]],
    *,
    error: type[Exception],
    follower: tuple[bytes, T],
    partials: Sequence[bytes],
    garbage: bytes,
) -> None:
    """``data`` yields exactly ``expected`` however it is cut, and what follows stays buffered.

    ``follower`` is a complete next frame and what it decodes to; ``partials`` are starts of a next frame
    that are not complete yet; ``garbage`` is bytes that no frame may start with.
    """
    for chunks in splittings(data):
        decoder = factory()
        assert feed_all(decoder, chunks) == expected
        assert decoder.at_boundary
        decoder.eof()  # a close at a frame boundary is normal
    # The next frame stays buffered and comes out next.
    wire, value = follower
    for chunks in splittings(data + wire, seeds=2):
        decoder = factory()
        assert feed_all(decoder, chunks) == [*expected, value]
        assert decoder.at_boundary
    # A partial next frame stays buffered: not at a boundary, and a close there is an error.
    for tail in partials:
        for chunks in splittings(data + tail, seeds=2):
            decoder = factory()
            assert feed_all(decoder, chunks) == expected
            assert not decoder.at_boundary
            with pytest.raises(error):
                decoder.eof()
    # Garbage after the frames: the good frames come out first, then the garbage raises.
    decoder = factory()
    decoder.feed(data + garbage)
    for item in expected:
        assert decoder.next() == item
    with pytest.raises(error):
        decoder.next()


def assert_rejected(
    data: bytes,
    factory: Callable[[], Decoder[object]],
    *,
    error: type[Exception],
    valid: bytes,
    needs_eof: bool = False,
) -> None:
    """``data`` raises ``error`` however it is cut (at eof only if ``needs_eof``), and for good.

    ``valid`` is a complete, valid frame: fed after the failure, it must not revive the decoder.
    """
    for chunks in splittings(data):
        decoder = factory()
        if needs_eof:
            feed_all(decoder, chunks)
            with pytest.raises(error):
                decoder.eof()
        else:
            with pytest.raises(error):
                feed_all(decoder, chunks)
        # The failure is sticky: the stream cannot be resynchronised, even by a valid frame.
        decoder.feed(valid)
        with pytest.raises(error):
            decoder.next()
        with pytest.raises(error):
            decoder.eof()
        assert not decoder.at_boundary
