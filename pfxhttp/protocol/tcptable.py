"""tcp_table(5) request lines and replies, sans-IO.

Postfix's ``tcp:host:port`` client sends ``get SP KEY LF`` and reads one ``NNN SP TEXT LF`` reply, both
%XX-encoded (tcp_table(5), "ENCODING"). :class:`TcpTableDecoder` takes request bytes as they arrive
(:meth:`~TcpTableDecoder.feed` / :meth:`~TcpTableDecoder.next` / :meth:`~TcpTableDecoder.eof`), bounds the
line it buffers and stays failed after malformed input (:class:`~pfxhttp.errors.TcpTableError`: close the
connection). :meth:`TcpTableReply.encode` refuses, with :class:`~pfxhttp.errors.ReplyError`, every reply that
Postfix would cut, misread or reject.

Facts observed with Postfix 3.7.11 (``postmap -q KEY tcp:127.0.0.1:PORT`` against a test server):

- The client quotes ``%``, whitespace, controls, DEL and every byte >= 0x80 as uppercase ``%XX``: the key
  ``a b%c<TAB>d€`` arrives as ``get a%20b%25c%09d%E2%82%AC``. The empty key arrives as ``get `` + LF.
- Its reply decoder turns ``%XX`` (either case) into the byte and takes every other byte literally, raw
  8-bit and tabs included; a ``%`` without two hex digits makes the reply malformed (a lookup error).
- Only the first status digit counts: 2 found, 4 soft error (Postfix then also disconnects), 5 not found.
- ``%00`` in a found value silently cuts the value at the NUL; an empty found value is returned with the
  warning "empty string result is not allowed"; a non-UTF-8 value is a lookup error (smtputf8_enable).
- A reply of 4096 bytes including the LF is accepted; one byte more is "text longer than 4096", after which
  Postfix reconnects and re-sends the request, 10 times in all with 1 s pauses (10 backend calls).

Our encoder quotes exactly what Postfix's own encoder quotes, so the wire is printable ASCII whatever the
text, and 8-bit data never depends on how a peer treats raw high bytes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NoReturn

from pfxhttp.errors import ReplyError, TcpTableError
from pfxhttp.protocol.lines import LineBuffer
from pfxhttp.protocol.socketmap import sanitize_reason

# tcp_table(5): "Replies must be no longer than 4096 characters including the newline terminator".
MAX_REPLY_LENGTH = 4096

# smtpd bounds what becomes a key by line_length_limit (2048 bytes by default); quoting at most triples it
# (6144 + "get "). 8 KiB fits that with room, and a newline-less flood is refused once past it.
DEFAULT_MAX_LINE_LENGTH = 8192

# Keys are decoded losslessly (a non-UTF-8 byte becomes a lone surrogate that encodes back to it), as in
# the socketmap codec: the backend layer, not the codec, decides what to do with such keys.
_ENCODING = "utf-8"
_LOSSLESS = "surrogateescape"

# What stays unquoted: printable ASCII minus space and '%'. Postfix's hex_quote() quotes '%', every
# isspace() byte and every byte that is not ASCII-printable (its ISPRINT is ASCII-only, so >= 0x80 too).
_QUOTED_BYTE = tuple(chr(b) if 0x21 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in range(256))
_NEEDS_QUOTING = re.compile(rb"[^\x21-\x24\x26-\x7e]")
# A '%' with its two hex digits, or a bare '%' (group 1 absent) that makes the text malformed.
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})?")

# Consumed bytes are dropped from the buffer front only when numerous and at least half of it: amortised O(n).

_GET = b"get"
_CR = 0x0D


class TcpTableStatus(enum.Enum):
    """The reply status; the values are the wire codes (Postfix looks at the first digit only)."""

    FOUND = 200  # the text is the value
    TEMP = 400  # soft error: smtpd answers 451 4.3.0; Postfix also closes the connection
    NOT_FOUND = 500  # not found: the text is a reason nobody acts on


_STATUS_BY_CODE = {b"%d" % status.value: status for status in TcpTableStatus}


def _quote(data: bytes) -> str:
    if _NEEDS_QUOTING.search(data) is None:
        return data.decode("ascii")
    return "".join([_QUOTED_BYTE[b] for b in data])


def _unquote(data: bytes) -> bytes:
    if b"%" not in data:
        return data

    def byte(match: re.Match[bytes]) -> bytes:
        if match[1] is None:
            raise TcpTableError("'%' not followed by two hex digits")
        return bytes((int(match[1], 16),))

    return _ESCAPE.sub(byte, data)


def encode_text(text: str) -> str:
    """%XX-encode ``text`` as Postfix does: its UTF-8 bytes, with '%', whitespace, controls, DEL and every
    byte >= 0x80 as uppercase ``%XX``. The result is printable ASCII without spaces.

    Lone surrogates from ``surrogateescape`` decoding give back their original byte; any other lone
    surrogate raises :class:`UnicodeEncodeError` (it has no bytes).
    """
    return _quote(text.encode(_ENCODING, _LOSSLESS))


def decode_text(text: str) -> str:
    """Undo :func:`encode_text`: ``%XX`` in either case becomes its byte, other characters stay as they are.

    The bytes are decoded as UTF-8 losslessly (``surrogateescape``). A '%' not followed by two hex digits
    raises :class:`TcpTableError`.
    """
    return _unquote(text.encode(_ENCODING, _LOSSLESS)).decode(_ENCODING, _LOSSLESS)


def _parse_request_line(line: bytes) -> TcpTableRequest:
    """Parse one request line without its line ending; raises :class:`TcpTableError`."""
    command, space, quoted = line.partition(b" ")
    if command != _GET:
        # tcp_table(5): "The tcp_table protocol supports only the lookup request", and Postfix sends it
        # in lower case. Anything else comes from something that is not Postfix; it is refused as
        # malformed (connection closed) rather than answered, since a "500" answer would read as
        # "not found" to whatever sent it.
        raise TcpTableError(f"unsupported tcp_table command {command[:20]!r}")
    if not space:
        raise TcpTableError("tcp_table request 'get' without the space before the key")
    # Bytes Postfix would have quoted but that arrive raw (a telnet user's spaces, raw UTF-8) are taken
    # literally, as Postfix's own decoder does.
    key = _unquote(quoted)
    if b"\x00" in key:
        # Postfix keys are C strings: a NUL, raw or %00, never comes from Postfix and would cut the key
        # short in any C-based backend.
        raise TcpTableError("NUL byte in a tcp_table key")
    return TcpTableRequest(key.decode(_ENCODING, _LOSSLESS))


@dataclass(frozen=True, slots=True)
class TcpTableRequest:
    """One lookup of ``key`` (decoded). ``get`` is the only request Postfix sends."""

    key: str

    @classmethod
    def parse(cls, line: bytes) -> TcpTableRequest:
        """Parse exactly one whole request line as sent, its LF included (tests and tools).

        Raises :class:`TcpTableError` if ``line`` is incomplete, malformed, or followed by more bytes.
        """
        decoder = TcpTableDecoder()
        decoder.feed(line)
        request = decoder.next()
        if request is None:
            raise TcpTableError("incomplete tcp_table request")
        if not decoder.at_boundary:
            raise TcpTableError("bytes after the tcp_table request")
        return request

    def encode(self) -> bytes:
        """The request line exactly as Postfix sends it (``get``, the %XX-quoted key, LF).

        Raises :class:`TcpTableError` for a key Postfix could never send: one with NUL, or a lone surrogate
        that did not come from decoding.
        """
        if "\x00" in self.key:
            raise TcpTableError("NUL byte in a tcp_table key")
        try:
            quoted = encode_text(self.key)
        except UnicodeEncodeError:
            raise TcpTableError("tcp_table key is not encodable") from None
        return b"get %s\n" % quoted.encode("ascii")


class TcpTableDecoder(LineBuffer):
    """Incremental decoder of ``get`` request lines, with a cap on the line length.

    The length counts the bytes before the LF (a trailing CR included) and is checked while the line is
    still arriving, so a peer that never sends LF cannot make the buffer grow past the cap.
    """

    __slots__ = ("_max_line_length",)

    def __init__(self, max_line_length: int = DEFAULT_MAX_LINE_LENGTH) -> None:
        if max_line_length < 1:
            raise ValueError("max_line_length must be >= 1")
        super().__init__()
        self._max_line_length = max_line_length

    @property
    def max_line_length(self) -> int:
        """The longest request line (bytes before the LF) this decoder accepts."""
        return self._max_line_length

    @property
    def at_boundary(self) -> bool:
        """True when no unconsumed byte is buffered; False once the decoder has failed."""
        return self._error is None and self._offset == len(self._buf)

    def feed(self, data: bytes | bytearray) -> None:
        """Append received bytes; call :meth:`next` until it returns ``None`` afterwards."""
        if self._error is not None:
            return  # the stream is dead: do not let a hostile peer keep filling our memory
        self._buf += data

    def next(self) -> TcpTableRequest | None:
        """Return the next complete request, or ``None`` if more data is needed.

        Raises :class:`TcpTableError` on a malformed or over-long line; every later call raises it again.
        """
        if self._error is not None:
            raise TcpTableError(self._error)
        buf = self._buf
        offset = self._offset
        limit = self._max_line_length
        newline = buf.find(b"\n", self._scan)
        if newline < 0:
            self._scan = len(buf)
            if len(buf) - offset > limit:
                self._fail(f"tcp_table request line longer than {limit} bytes")
            return None
        if newline - offset > limit:
            self._fail(f"tcp_table request line longer than {limit} bytes")
        end = newline
        if end > offset and buf[end - 1] == _CR:
            end -= 1  # one CR before LF is tolerated, for people testing with telnet
        self._offset = self._scan = newline + 1
        try:
            request = _parse_request_line(bytes(buf[offset:end]))
        except TcpTableError as exc:
            self._discard(str(exc))
            raise
        self._compact()
        return request

    def eof(self) -> None:
        """The peer closed its side: raise :class:`TcpTableError` if a request line was left incomplete.

        Call it after :meth:`next` has returned ``None``; a close between requests is normal.
        """
        if self._error is not None:
            raise TcpTableError(self._error)
        if not self.at_boundary:
            self._fail("connection closed in the middle of a tcp_table request")

    def _fail(self, message: str) -> NoReturn:
        self._discard(message)
        raise TcpTableError(message)


@dataclass(frozen=True, slots=True)
class TcpTableReply:
    """One reply. Build it with :meth:`found`, :meth:`not_found` or :meth:`temp`."""

    status: TcpTableStatus
    text: str

    @classmethod
    def found(cls, value: str) -> TcpTableReply:
        """Found: ``value`` reaches Postfix unchanged (checked at :meth:`encode`)."""
        return cls(TcpTableStatus.FOUND, value)

    @classmethod
    def not_found(cls, reason: str = "not found") -> TcpTableReply:
        """Not found; ``reason`` is sanitised. Only a genuine "no such key" answer may produce this."""
        return cls(TcpTableStatus.NOT_FOUND, sanitize_reason(reason))

    @classmethod
    def temp(cls, reason: str) -> TcpTableReply:
        """Soft error (Postfix retries later); ``reason`` is sanitised: short, no controls."""
        return cls(TcpTableStatus.TEMP, sanitize_reason(reason))

    def encode(self) -> bytes:
        """``NNN SP TEXT LF`` with TEXT %XX-encoded; raises :class:`ReplyError` for a reply never to send.

        Refused: a found value that is empty, holds NUL or is not valid UTF-8, and any reply longer than
        :data:`MAX_REPLY_LENGTH` bytes with its LF. Reasons are sanitised again here, so a directly built
        reply cannot smuggle controls, and a sanitised reason always fits.
        """
        if self.status is TcpTableStatus.FOUND:
            value = self.text
            if not value:
                # Postfix 3.7 warns "empty string result is not allowed" and "should return NO RESULT
                # in case of NOT FOUND": an empty value is a backend mistake, not an answer.
                raise ReplyError("empty tcp_table value")
            if "\x00" in value:
                # Postfix decodes %00 into its C string: the value would be silently cut at the NUL.
                raise ReplyError("tcp_table value contains a NUL byte")
            try:
                # Strict UTF-8: an SMTPUTF8-enabled Postfix rejects a non-UTF-8 value as a lookup error.
                data = value.encode(_ENCODING)
            except UnicodeEncodeError:
                raise ReplyError("tcp_table value is not valid UTF-8") from None
        else:
            data = sanitize_reason(self.text).encode(_ENCODING)
        line = b"%d %s\n" % (self.status.value, _quote(data).encode("ascii"))
        if len(line) > MAX_REPLY_LENGTH:
            # Postfix would drop the connection and re-send the request nine more times.
            raise ReplyError(f"tcp_table reply of {len(line)} bytes exceeds {MAX_REPLY_LENGTH} bytes")
        return line

    @classmethod
    def parse(cls, line: bytes) -> TcpTableReply:
        """Parse one whole reply line; see :func:`parse_reply`."""
        return parse_reply(line)


def parse_reply(line: bytes) -> TcpTableReply:
    """Parse one whole reply line, its LF included (tests and the query client); raises :class:`TcpTableError`.

    Stricter than Postfix, which reads any ``[245]DD`` code and any whitespace after it: the status must be
    exactly 200, 400 or 500 followed by one space, the line at most :data:`MAX_REPLY_LENGTH` bytes, and the
    text a valid %XX encoding. The text is decoded losslessly.
    """
    if len(line) > MAX_REPLY_LENGTH:
        raise TcpTableError(f"tcp_table reply longer than {MAX_REPLY_LENGTH} bytes")
    if not line.endswith(b"\n"):
        raise TcpTableError("tcp_table reply without its newline")
    body = line[:-1]
    if b"\n" in body:
        raise TcpTableError("bytes after the tcp_table reply")
    code, space, text = body.partition(b" ")
    status = _STATUS_BY_CODE.get(code)
    if status is None or not space:
        raise TcpTableError(f"malformed tcp_table reply status {body[:20]!r}")
    return TcpTableReply(status, _unquote(text).decode(_ENCODING, _LOSSLESS))
