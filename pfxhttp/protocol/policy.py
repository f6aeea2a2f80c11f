"""Postfix SMTPD policy delegation (SMTPD_POLICY_README), sans-IO.

A request is a block of ``name=value`` lines ended by an empty line; the reply is ``action=ACTION`` followed
by an empty line. Postfix keeps the connection open and sends many requests over it, so
:class:`PolicyDecoder` is incremental (:meth:`~PolicyDecoder.feed` / :meth:`~PolicyDecoder.next` /
:meth:`~PolicyDecoder.eof`) and bounds the memory one connection can make us hold. Malformed input raises
:class:`~pfxhttp.errors.PolicyError` (the connection must be closed; the decoder stays failed), and
:meth:`PolicyReply.encode` refuses every action Postfix would misread with
:class:`~pfxhttp.errors.ReplyError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from pfxhttp.errors import PolicyError, ReplyError
from pfxhttp.protocol.lines import LineBuffer

# Postfix reads attribute values with its line_length_limit (2048 bytes by default): a longer action would
# be cut or refused on its side, so we refuse it here.
MAX_ACTION_LENGTH = 2048

# Attribute text is decoded losslessly: a non-UTF-8 byte (a raw 8-bit HELO name, say) becomes a lone
# surrogate that encodes back to the same byte; the backend layer decides what to do with it.
_ENCODING = "utf-8"
_LOSSLESS = "surrogateescape"

_CR = 0x0D

# Fast path tables. Deleting every other byte leaves a block's '=' and LF in order.
_ALL_BUT_SEPARATORS = bytes(byte for byte in range(256) if byte not in b"=\n")
_ONE_EQUALS_PER_LINE = b"=\n"
# One attribute line of a block without CR or NUL: a non-empty name up to the FIRST '=', then the value.
_ATTRIBUTE_LINE = re.compile(r"^([^=\n]+)=(.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """Per-connection caps of the policy decoder; each is far above what Postfix sends, yet bounded.

    Requests are bounded by bytes, not by a count of attributes: SMTPD_POLICY_README has the server ignore
    attributes it does not know, so a block of many short ones (a future Postfix, a milter-rich setup, 1,000
    attributes in 25 KB) is as legitimate as a few long ones; the bytes are what it costs us.
    """

    # Postfix caps what smtpd accepts per SMTP line at line_length_limit (2048 by default) and certificate
    # fields at a few hundred bytes, so no real attribute line comes near 16 KiB; a longer line is refused
    # while it is still arriving.
    max_line_length: int = 16384
    # A real block is a few KiB; 128 KiB bounds what one connection can make us buffer for one request (its
    # attributes, decoded, take at most about 3 MB: 43,690 empty ones, the worst case).
    max_block_size: int = 131072

    def __post_init__(self) -> None:
        if self.max_line_length < 1 or self.max_block_size < 1:
            raise ValueError("policy limits must be positive")


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One policy request: the attributes in wire order, repeated names kept."""

    attributes: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The value of the LAST attribute called ``name``, or ``None`` if absent."""
        for key, value in reversed(self.attributes):
            if key == name:
                return value
        return None

    def as_dict(self) -> dict[str, str]:
        """The attributes as a dict; for a repeated name the last occurrence wins."""
        return dict(self.attributes)

    def encode(self) -> bytes:
        """The request as Postfix sends it: ``name=value`` lines and an empty line (tests and the CLI).

        Raises :class:`PolicyError` for an attribute that cannot travel intact: an empty name, a name with
        ``=``, NUL or LF, a value with NUL or LF, a value ending in CR (the decoder strips one CR before
        LF for telnet users), or a lone surrogate that did not come from decoding.
        """
        if not self.attributes:
            raise PolicyError("a policy request needs at least one attribute")
        lines: list[bytes] = []
        for name, value in self.attributes:
            if not name or "=" in name or "\x00" in name or "\n" in name:
                raise PolicyError(f"policy attribute name {name[:40]!r} cannot be sent")
            if "\x00" in value or "\n" in value or value.endswith("\r"):
                raise PolicyError(f"value of policy attribute {name[:40]!r} cannot be sent")
            try:
                # surrogateescape gives back the original bytes of a decoded request; other lone
                # surrogates have no byte form at all.
                line = b"%s=%s\n" % (name.encode(_ENCODING, _LOSSLESS), value.encode(_ENCODING, _LOSSLESS))
            except UnicodeEncodeError:
                raise PolicyError(f"policy attribute {name[:40]!r} is not encodable") from None
            lines.append(line)
        lines.append(b"\n")
        return b"".join(lines)


class PolicyDecoder(LineBuffer):
    """Incremental decoder of policy attribute blocks, with caps on line and block size (bytes).

    Line length counts the bytes before the LF (a trailing CR included); block size counts every byte of
    the block, the final empty line included. A block that is already whole takes a fast path; anything
    else goes line by line, the reference that the fast path is tested against (tests/test_policy_fastpath.py).
    """

    __slots__ = ("_attrs", "_block_size", "_limits")

    def __init__(self, limits: PolicyLimits | None = None) -> None:
        super().__init__()
        self._limits = limits if limits is not None else PolicyLimits()
        self._attrs: list[tuple[str, str]] = []  # attributes of the block being read
        self._block_size = 0  # bytes of the block being read, in complete lines

    @property
    def limits(self) -> PolicyLimits:
        return self._limits

    @property
    def at_boundary(self) -> bool:
        """True when nothing of a next block is buffered (no partial line, no attribute of an open block).

        False once the decoder has failed.
        """
        return self._error is None and not self._attrs and self._offset == len(self._buf)

    def feed(self, data: bytes | bytearray) -> None:
        """Append received bytes; call :meth:`next` until it returns ``None`` afterwards."""
        if self._error is not None:
            return  # the stream is dead: do not let a hostile peer keep filling our memory
        self._buf += data

    def next(self) -> PolicyRequest | None:
        """Return the next complete request, or ``None`` if more data is needed.

        Raises :class:`PolicyError` on a malformed or oversized block; every later call raises it again.
        """
        if self._error is not None:
            raise PolicyError(self._error)
        if self._offset == len(self._buf):
            return None  # all consumed: the connection loop asks once more after each request
        if not self._attrs:  # at a block start: the whole block may already be here (the usual case)
            request = self._whole_block()
            if request is not None:
                return request
        return self._next_by_line()

    def _whole_block(self) -> PolicyRequest | None:
        """Fast path: a complete, well-formed block at the buffer head, parsed in one go.

        Postfix writes a request (~700 bytes) at once, so it normally arrives whole. This returns a request
        only where :meth:`_next_by_line` would return the same one at this call, and ``None`` (touching
        nothing) otherwise: a partial block, a CR or NUL anywhere, a block near a cap, a line without ``=``
        or with an empty name. The line-by-line path then decides, with its exact errors and their timing.
        """
        buf = self._buf
        start = self._offset
        end = buf.find(b"\n\n", start)  # the LF of the last attribute line, then the empty line
        if end < 0:
            return None
        limits = self._limits
        # No line is longer than the block, so a block within the line cap has no over-long line.
        if end - start > limits.max_line_length or end + 2 - start > limits.max_block_size:
            return None
        # Splitting the decoded text at LF and '=' is splitting the bytes and decoding each piece:
        # surrogateescape maps every undecodable byte on its own, and LF and '=' are ASCII bytes that are
        # never part of a multi-byte sequence.
        text = buf[start:end].decode(_ENCODING, _LOSSLESS)
        if "\r" in text or "\x00" in text:
            return None  # CR stripping and NUL refusal are left to the line-by-line path
        # The block's '=' and LF in order: "=\n" once per line when each line holds exactly one '='.
        separators = buf[start : end + 1].translate(None, _ALL_BUT_SEPARATORS)
        lines = separators.count(b"\n")
        if separators == _ONE_EQUALS_PER_LINE * lines:
            tokens = text.replace("\n", "=").split("=")  # name, value, name, value, ...
            names = tokens[::2]
            if not all(names):
                return None  # an empty name (or an empty first line)
            # As many values as names, by the separator check (strict=True would cost a tenth of the parse).
            attributes = tuple(zip(names, tokens[1::2], strict=False))
        else:
            # Some value holds '=' (or a line is malformed): split each line at its FIRST '='. There is
            # at most one match per line (none crosses a LF), so every line matched iff the counts agree.
            attributes = tuple(_ATTRIBUTE_LINE.findall(text))
            if len(attributes) != lines:
                return None  # a line without '=' or with an empty name (or an empty first line)
        self._offset = self._scan = end + 2
        self._compact()
        return PolicyRequest(attributes)

    def _next_by_line(self) -> PolicyRequest | None:
        """The reference path: one line at a time, each cap checked as soon as it can be exceeded."""
        if self._error is not None:
            raise PolicyError(self._error)
        limits = self._limits
        buf = self._buf
        while True:
            offset = self._offset
            newline = buf.find(b"\n", self._scan)
            if newline < 0:
                pending = len(buf) - offset
                self._scan = len(buf)
                # Refuse an over-long line while it is still arriving, so a newline-less flood cannot
                # make the buffer grow beyond the caps.
                if pending > limits.max_line_length:
                    self._fail(f"policy attribute line longer than {limits.max_line_length} bytes")
                if self._block_size + pending > limits.max_block_size:
                    self._fail(f"policy request larger than {limits.max_block_size} bytes")
                return None
            if newline - offset > limits.max_line_length:
                self._fail(f"policy attribute line longer than {limits.max_line_length} bytes")
            self._block_size += newline - offset + 1
            if self._block_size > limits.max_block_size:
                self._fail(f"policy request larger than {limits.max_block_size} bytes")
            end = newline
            if end > offset and buf[end - 1] == _CR:
                end -= 1  # one CR before LF is tolerated, for people testing with telnet
            self._offset = self._scan = newline + 1
            if end == offset:
                # SMTPD_POLICY_README: an empty line ends the request.
                return self._finish_block()
            self._parse_attribute(offset, end)

    def eof(self) -> None:
        """The peer closed its side: raise :class:`PolicyError` if a request was left incomplete.

        Call it after :meth:`next` has returned ``None``; a close at a request boundary is normal and must
        not lead to any backend call.
        """
        if self._error is not None:
            raise PolicyError(self._error)
        if not self.at_boundary:
            self._fail("connection closed in the middle of a policy request")

    def _parse_attribute(self, start: int, end: int) -> None:
        buf = self._buf
        # Postfix never sends NUL (its attribute values are C strings); one can only come from a hostile peer.
        if buf.find(b"\x00", start, end) >= 0:
            self._fail("NUL byte in a policy attribute")
        # Split at the FIRST '=': names never contain '=', values may (SMTPD_POLICY_README).
        equals = buf.find(b"=", start, end)
        if equals < 0:
            self._fail("policy attribute line without '='")
        if equals == start:
            self._fail("policy attribute with an empty name")
        name = buf[start:equals].decode(_ENCODING, _LOSSLESS)
        value = buf[equals + 1 : end].decode(_ENCODING, _LOSSLESS)
        self._attrs.append((name, value))

    def _finish_block(self) -> PolicyRequest:
        if not self._attrs:
            # A bare empty line is no request; answering it would invent one Postfix never sent.
            self._fail("empty policy request")
        request = PolicyRequest(tuple(self._attrs))
        self._attrs = []
        self._block_size = 0
        self._compact()
        return request

    def _fail(self, message: str) -> NoReturn:
        self._discard(message)
        self._attrs = []
        self._block_size = 0
        raise PolicyError(message)


@dataclass(frozen=True, slots=True)
class PolicyReply:
    """A policy reply: one access(5) action such as ``DUNNO``, ``REJECT text`` or ``DEFER text``."""

    action: str

    def encode(self) -> bytes:
        """``action=ACTION`` and the empty line; raises :class:`ReplyError` for an action never to send."""
        action = self.action
        if not action.strip():
            # Postfix treats an empty action as OK, i.e. it would PERMIT the mail.
            raise ReplyError("empty policy action")
        if "\r" in action or "\n" in action or "\x00" in action:
            # CR/LF would inject protocol lines (an extra byte makes Postfix drop the connection), and NUL
            # would cut the C string on the Postfix side.
            raise ReplyError("policy action contains CR, LF or NUL")
        try:
            data = action.encode(_ENCODING)
        except UnicodeEncodeError:
            raise ReplyError("policy action is not valid UTF-8") from None
        if len(data) > MAX_ACTION_LENGTH:
            raise ReplyError(f"policy action longer than {MAX_ACTION_LENGTH} bytes")
        return b"action=%s\n\n" % data

    @classmethod
    def parse(cls, data: bytes) -> PolicyReply:
        """Parse a whole reply (tests and the CLI); see :func:`parse_reply`."""
        return parse_reply(data)


def parse_reply(data: bytes) -> PolicyReply:
    """Parse exactly one reply block holding an ``action`` attribute; raises :class:`PolicyError`.

    Bytes after the block are an error, as they are for Postfix (it drops the connection).
    """
    decoder = PolicyDecoder()
    decoder.feed(data)
    block = decoder.next()
    if block is None:
        raise PolicyError("incomplete policy reply")
    if not decoder.at_boundary:
        raise PolicyError("bytes after the policy reply")
    action = block.get("action")
    if action is None:
        raise PolicyError("policy reply without an action attribute")
    return PolicyReply(action)
