"""Socketmap requests and replies (socketmap_table(5)), sans-IO.

A request is the netstring payload ``NAME SP KEY``; a reply is the netstring payload ``STATUS SP TEXT`` with
STATUS one of ``OK``, ``NOTFOUND``, ``TEMP``, ``TIMEOUT``, ``PERM`` (case-sensitive). Framing lives in
:mod:`pfxhttp.protocol.netstring`; this module only gives the payloads their meaning, and makes sure that
no reply Postfix would misread (a bare ``OK``, an oversized value, a NUL) ever leaves
:meth:`SocketmapReply.encode`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from pfxhttp.errors import ReplyError, SocketmapError
from pfxhttp.protocol import netstring

# socketmap_table(5): Postfix accepts reply payloads of at most 100000 bytes by default
# (socketmap_max_reply_size, configurable since Postfix 3.10); a longer one is a lookup error on its side.
DEFAULT_MAX_REPLY_SIZE = 100_000

# Postfix logs only the first 200 characters of a TEMP/TIMEOUT/PERM reason; more would be noise.
MAX_REASON_LENGTH = 200

# Reasons end up in Postfix's log lines: C0 controls, DEL and C1 controls would break or forge log lines.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone surrogates (from surrogateescape decoding) cannot be encoded as UTF-8.
_SURROGATES = re.compile(r"[\ud800-\udfff]")

# Keys and names are decoded losslessly: a non-UTF-8 byte becomes a lone surrogate that encodes back to
# the same byte, so the backend (not the codec) decides what to do with such keys.
_ENCODING = "utf-8"
_LOSSLESS = "surrogateescape"


class SocketmapStatus(enum.Enum):
    """The status word of a socketmap reply; the values are the exact, case-sensitive wire words."""

    OK = "OK"  # found; TEXT is the value
    NOTFOUND = "NOTFOUND"  # not found: the only reply that can bounce mail
    TEMP = "TEMP"  # temporary error: smtpd answers 451 4.3.0
    TIMEOUT = "TIMEOUT"  # timeout: handled by Postfix like TEMP
    PERM = "PERM"  # configuration error: smtpd answers 451 4.3.5 (still a 4xx)


_STATUS_BY_WORD = {status.value.encode("ascii"): status for status in SocketmapStatus}


@dataclass(frozen=True, slots=True)
class SocketmapRequest:
    """One lookup: the map ``name`` (the text after the last ':' in Postfix's map spec) and the ``key``."""

    name: str
    key: str

    def __post_init__(self) -> None:
        # The name ends at the first space on the wire, so a name with a space (or none at all) could not
        # travel intact; Postfix itself never produces one (socketmap_table(5)).
        if not self.name:
            raise SocketmapError("socketmap request has an empty map name")
        if " " in self.name:
            raise SocketmapError("socketmap map name contains a space")

    @classmethod
    def parse(cls, payload: bytes) -> SocketmapRequest:
        """Split a request payload at its FIRST space: the key keeps any further spaces, and may be empty.

        The key is never rewritten: quotes, backslashes, ':' (IPv6), ``<>``, ``""`` and UTF-8 all pass as
        sent. Non-UTF-8 bytes survive as lone surrogates (``surrogateescape``).
        """
        name, space, key = payload.partition(b" ")
        if not space:
            raise SocketmapError("socketmap request has no space between map name and key")
        return cls(name.decode(_ENCODING, _LOSSLESS), key.decode(_ENCODING, _LOSSLESS))

    def payload(self) -> bytes:
        """The request payload ``NAME SP KEY`` (without netstring framing).

        Raises :class:`SocketmapError` for a lone surrogate that did not come from decoding (it has no bytes).
        """
        try:
            return b"%s %s" % (self.name.encode(_ENCODING, _LOSSLESS), self.key.encode(_ENCODING, _LOSSLESS))
        except UnicodeEncodeError:
            raise SocketmapError("socketmap request is not encodable") from None

    def encode(self) -> bytes:
        """The request as a netstring, as Postfix sends it (for tests and the query client)."""
        return netstring.encode(self.payload())


def sanitize_reason(reason: str) -> str:
    """Make ``reason`` safe for Postfix's log: controls become spaces, surrogates '?', cut to 200 chars."""
    text = _CONTROL_CHARS.sub(" ", reason[:MAX_REASON_LENGTH])
    return _SURROGATES.sub("?", text)


@dataclass(frozen=True, slots=True)
class SocketmapReply:
    """One reply. Build it with :meth:`ok`, :meth:`notfound`, :meth:`temp`, :meth:`timeout`, :meth:`perm`."""

    status: SocketmapStatus
    text: str

    @classmethod
    def ok(cls, value: str) -> SocketmapReply:
        """Found: ``value`` goes to Postfix unchanged (checked at :meth:`encode`)."""
        return cls(SocketmapStatus.OK, value)

    @classmethod
    def notfound(cls) -> SocketmapReply:
        """Not found. Only a genuine "no such key" answer of the backend may produce this."""
        return cls(SocketmapStatus.NOTFOUND, "")

    @classmethod
    def temp(cls, reason: str) -> SocketmapReply:
        """Temporary failure; ``reason`` is sanitised (it shows up in Postfix's log)."""
        return cls(SocketmapStatus.TEMP, sanitize_reason(reason))

    @classmethod
    def timeout(cls, reason: str) -> SocketmapReply:
        """Timeout; ``reason`` is sanitised."""
        return cls(SocketmapStatus.TIMEOUT, sanitize_reason(reason))

    @classmethod
    def perm(cls, reason: str) -> SocketmapReply:
        """Permanent (configuration) error; Postfix still answers 4xx. ``reason`` is sanitised."""
        return cls(SocketmapStatus.PERM, sanitize_reason(reason))

    def payload(self, max_reply_size: int = DEFAULT_MAX_REPLY_SIZE) -> bytes:
        """The reply payload ``STATUS SP TEXT`` (unframed); raises :class:`ReplyError` if unsendable."""
        if self.status is SocketmapStatus.OK:
            # Postfix keeps lookup results as C strings: a NUL would silently cut the value.
            if "\x00" in self.text:
                raise ReplyError("socketmap value contains a NUL byte")
            try:
                # Strict UTF-8: an SMTPUTF8-enabled Postfix rejects a non-UTF-8 value as a lookup error.
                text = self.text.encode(_ENCODING)
            except UnicodeEncodeError:
                raise ReplyError("socketmap value is not valid UTF-8") from None
        else:
            text = sanitize_reason(self.text).encode(_ENCODING)
        # The space is always sent, also after "OK" with an empty value and after "NOTFOUND": Postfix <= 3.11
        # reads a bare "OK" as "not found" (socketmap_table(5)).
        data = b"%s %s" % (self.status.value.encode("ascii"), text)
        if len(data) > max_reply_size:
            raise ReplyError(
                f"socketmap reply of {len(data)} bytes exceeds the limit of {max_reply_size} bytes"
            )
        return data

    def encode(self, max_reply_size: int = DEFAULT_MAX_REPLY_SIZE) -> bytes:
        """The reply as a netstring; raises :class:`ReplyError` for a reply Postfix must never see.

        ``max_reply_size`` bounds the payload including ``"OK "`` (Postfix's ``socketmap_max_reply_size``).
        """
        return netstring.encode(self.payload(max_reply_size))

    @classmethod
    def parse(cls, payload: bytes) -> SocketmapReply:
        """Parse a reply payload (unframed), for tests and the query client.

        Strict: the status must be one of the five exact words and be followed by a space (a bare ``OK``
        means "not found" to older Postfix versions, so a server sending it is broken). The text is kept as
        sent, decoded losslessly.
        """
        word, space, text = payload.partition(b" ")
        status = _STATUS_BY_WORD.get(word)
        if status is None:
            raise SocketmapError(f"unknown socketmap reply status {word[:20]!r}")
        if not space:
            raise SocketmapError(f"socketmap reply status {word.decode('ascii')} without the space")
        return cls(status, text.decode(_ENCODING, _LOSSLESS))


def parse_reply(payload: bytes) -> SocketmapReply:
    """Parse an unframed reply payload; see :meth:`SocketmapReply.parse`."""
    return SocketmapReply.parse(payload)
