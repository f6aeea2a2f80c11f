"""gzip content coding (RFC 9110 section 8.4.1.3) for request and response bodies of the backend client.

Requests: ``gzip_body`` compresses a whole request body in one call. Responses: ``response_is_gzip`` reads
the Content-Encoding field and ``GzipDecoder`` inflates the body incrementally as it arrives, never producing
more than a fixed number of bytes, so that a small "gzip bomb" cannot make pfxhttp allocate more than the
body cap. pfxhttp only ever asks for gzip (``Accept-Encoding: gzip``); every other coding is refused.
"""

from __future__ import annotations

import zlib

from pfxhttp.errors import BackendBodyTooLarge, BackendProtocolError

# zlib's windowBits + 16 selects the gzip container (RFC 1952) instead of the zlib one.
_GZIP_CONTAINER = 16
# Request bodies are small JSON documents (tens of bytes to a few KiB) compressed once per lookup, so the
# fixed cost of setting up a deflate stream dominates. Measured with zlib 1.2.13 on a 1 KiB policy payload:
# the default (level 6, 32 KiB window, memLevel 8) takes about 50 us, almost all of it allocating and
# clearing the encoder's tables; level 1 with an 8 KiB window and memLevel 4 takes about 5 us for the same
# compressed size. Level 1 rather than 6 because on JSON it loses a few percent of ratio at most, while level
# 6 doubles the time on larger bodies. A gzip stream does not record the window size and every deflate
# decoder handles distances up to 32 KiB (RFC 1951 section 2), so a smaller window changes nothing for them.
_LEVEL = 1
_WINDOW_BITS = 13
_MEM_LEVEL = 4
# RFC 9110 section 8.4.1.3: "x-gzip" is an alias of "gzip"; section 8.4.1: codings are case-insensitive.
_GZIP_NAMES = frozenset({b"gzip", b"x-gzip"})
_IDENTITY = b"identity"  # no transformation (RFC 9110 section 12.5.3); harmless in Content-Encoding
_DETAIL_MAX = 64  # how much of a bad field value goes into the log detail


def gzip_body(body: bytes) -> bytes:
    """``body`` as one gzip member (RFC 1952), fast settings (see ``_LEVEL``)."""
    encoder = zlib.compressobj(_LEVEL, zlib.DEFLATED, _GZIP_CONTAINER + _WINDOW_BITS, _MEM_LEVEL)
    return encoder.compress(body) + encoder.flush()


def response_is_gzip(value: bytes) -> bool:
    """True if the Content-Encoding ``value`` means gzip, False if it means none (empty or ``identity``).

    ``value`` holds every Content-Encoding field of the response joined by commas (RFC 9110 section 5.3).
    Any other coding, or more than one, raises BackendProtocolError: pfxhttp never asked for them.
    """
    codings = [c for c in (part.strip().lower() for part in value.split(b",")) if c and c != _IDENTITY]
    if not codings:
        return False
    if len(codings) == 1 and codings[0] in _GZIP_NAMES:
        return True
    raise BackendProtocolError(f"unsupported Content-Encoding {value[:_DETAIL_MAX]!r}")


class GzipDecoder:
    """Inflate one gzip-coded body fed piece by piece; at most ``limit`` bytes of output in all.

    ``decompress`` is always called with ``max_length`` one byte above the room left, so a body that inflates
    past the limit is caught after producing ``limit + 1`` bytes, however small its compressed form.
    """

    __slots__ = ("_inflater", "_limit", "_room", "_started")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._room = limit
        self._inflater = zlib.decompressobj(wbits=_GZIP_CONTAINER + zlib.MAX_WBITS)
        self._started = False

    def feed(self, data: bytes) -> bytes:
        """Inflate the next piece of the coded body; return the plain bytes it completes."""
        self._started = True
        inflater = self._inflater
        out: list[bytes] = []
        # Each pass either consumes all of ``data`` or ends a gzip member of at least 18 bytes, so the loop
        # runs at most len(data) // 18 + 1 times.
        while True:
            if inflater.eof:
                # RFC 1952 section 2.2: a gzip file is a series of members; the next one starts here.
                inflater = self._inflater = zlib.decompressobj(wbits=_GZIP_CONTAINER + zlib.MAX_WBITS)
            try:
                plain = inflater.decompress(data, self._room + 1)
            except zlib.error as exc:
                raise BackendProtocolError(f"corrupt gzip response body: {exc}") from None
            self._room -= len(plain)
            if self._room < 0 or inflater.unconsumed_tail:
                # unconsumed_tail is only left when max_length stopped the output: over the limit either way.
                raise BackendBodyTooLarge(f"gzip response body inflates past the {self._limit} byte cap")
            out.append(plain)
            if not (inflater.eof and inflater.unused_data):
                break
            data = inflater.unused_data
        return out[0] if len(out) == 1 else b"".join(out)

    def finish(self) -> None:
        """The coded body ended: raise BackendProtocolError if the gzip stream did not end with it.

        An empty body is accepted as empty content: there is nothing to decode and nothing ambiguous.
        """
        if self._started and not self._inflater.eof:
            raise BackendProtocolError("truncated gzip response body")
