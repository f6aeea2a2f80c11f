"""Netstring framing for the socketmap protocol, sans-IO.

A netstring is ``LENGTH ":" PAYLOAD ","`` where LENGTH is the decimal byte count of PAYLOAD (see
socketmap_table(5), which refers to D. J. Bernstein's netstring definition, and Postfix's own
``src/util/netstring.c``). Postfix frames every socketmap request and reply this way.

:func:`encode` frames a payload; :class:`NetstringDecoder` takes bytes as they arrive (:meth:`feed`) and hands
out complete payloads (:meth:`next`), or ``None`` when it needs more data. It never touches a socket: the
server's connection loop owns the I/O. Every malformed input raises :class:`~pfxhttp.errors.NetstringError`,
and the decoder then stays failed, since the stream can no longer be resynchronised.
"""

from __future__ import annotations

from typing import NoReturn

from pfxhttp.errors import NetstringError

# Postfix >= 3.12 sends at most 10000 bytes of query (socketmap_table(5)), and the key is an address or a
# domain bounded by smtpd's line_length_limit (2048 by default). 64 KiB leaves ample headroom for older
# Postfix versions and long map names, while a length far beyond it can only come from a hostile or broken
# peer: refusing it up front bounds the memory one connection can make us hold.
DEFAULT_MAX_LENGTH = 65536

# Postfix's netstring reader accepts leading zeros, so we do too; but an endless run of '0' would keep the
# decoder waiting for the ':' while the buffer grows. Ten digits cover any length we could ever accept
# (more are allowed only when max_length itself is wider).
MAX_LENGTH_DIGITS = 10

# Consumed bytes are dropped from the front of the buffer only once they are both numerous and at least half
# of it: each byte is then moved O(1) times on average (amortised O(n)), whatever the feed sizes.
_COMPACT_THRESHOLD = 4096

_DIGIT_0 = 0x30  # ord("0")
_DIGIT_9 = 0x39  # ord("9")
_COLON = 0x3A  # ord(":")
_COMMA = 0x2C  # ord(",")


def encode(payload: bytes) -> bytes:
    """Frame ``payload`` as a netstring; any length (beyond 65535 too) is written in full decimal."""
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    """Incremental, strict netstring decoder with a length cap checked before any allocation."""

    __slots__ = ("_buf", "_error", "_max_digits", "_max_length", "_need", "_offset", "_payload_start")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 0:
            raise ValueError("max_length must be >= 0")
        self._max_length = max_length
        self._max_digits = max(MAX_LENGTH_DIGITS, len(str(max_length)))
        self._buf = bytearray()
        self._offset = 0  # start of the first unconsumed byte in _buf
        # Once the header "LEN:" is parsed: the payload length and where the payload starts in _buf.
        self._need: int | None = None
        self._payload_start = 0
        self._error: str | None = None  # set once a frame was refused: the stream is dead

    @property
    def max_length(self) -> int:
        """The largest payload this decoder accepts."""
        return self._max_length

    @property
    def at_boundary(self) -> bool:
        """True when no unconsumed byte is buffered (neither a partial nor an unread complete frame).

        False once the decoder has failed: a broken stream never sits at a boundary.
        """
        return self._error is None and self._offset == len(self._buf)

    def feed(self, data: bytes | bytearray) -> None:
        """Append received bytes; call :meth:`next` until it returns ``None`` afterwards."""
        if self._error is not None:
            return  # the stream is dead: do not let a hostile peer keep filling our memory
        self._buf += data

    def next(self) -> bytes | None:
        """Return the next complete payload, or ``None`` if more data is needed.

        Raises :class:`NetstringError` on a malformed frame; every later call raises it again.
        """
        if self._error is not None:
            raise NetstringError(self._error)
        if self._need is None and not self._parse_header():
            return None
        need = self._need
        assert need is not None
        start = self._payload_start
        end = start + need
        if len(self._buf) <= end:  # the payload and its ',' are not all here yet
            return None
        if self._buf[end] != _COMMA:
            # The trailing ',' is mandatory (Postfix's netstring_get_terminator insists on it too).
            self._fail(f"netstring of length {need} not terminated by ','")
        with memoryview(self._buf) as view:
            payload = view[start:end].tobytes()  # the one copy of the payload, none of the buffer
        self._need = None
        self._offset = end + 1
        self._compact()
        return payload

    def eof(self) -> None:
        """The peer closed its side: raise :class:`NetstringError` if a frame was left incomplete.

        Call it after :meth:`next` has returned ``None``; a close at a frame boundary is normal.
        """
        if self._error is not None:
            raise NetstringError(self._error)
        if not self.at_boundary:
            self._fail("connection closed in the middle of a netstring")

    def _parse_header(self) -> bool:
        """Parse ``LEN:`` at the buffer head; True once done, False if more bytes are needed."""
        buf = self._buf
        pos = self._offset
        end = len(buf)
        if pos == end:
            return False
        length = 0
        digits = 0
        max_length = self._max_length
        while pos < end:
            byte = buf[pos]
            if _DIGIT_0 <= byte <= _DIGIT_9:
                digits += 1
                if digits > self._max_digits:
                    self._fail(f"netstring length has more than {self._max_digits} digits")
                # Check the cap digit by digit, so a huge length is refused before any buffering.
                length = length * 10 + (byte - _DIGIT_0)
                if length > max_length:
                    self._fail(f"netstring length exceeds the limit of {max_length} bytes")
            elif byte == _COLON and digits:
                self._need = length
                self._payload_start = pos + 1
                return True
            else:
                # Signs, spaces, '+', non-ASCII digits, an empty length: none is a netstring.
                self._fail(f"invalid byte {bytes([byte])!r} in netstring length")
            pos += 1
        return False

    def _compact(self) -> None:
        offset = self._offset
        if offset == len(self._buf):
            self._buf.clear()
            self._offset = 0
        elif offset >= _COMPACT_THRESHOLD and offset * 2 >= len(self._buf):
            del self._buf[:offset]
            self._offset = 0

    def _fail(self, message: str) -> NoReturn:
        self._error = message
        self._buf = bytearray()  # free the memory at once; nothing in it can be used any more
        self._offset = 0
        self._need = None
        raise NetstringError(message)
