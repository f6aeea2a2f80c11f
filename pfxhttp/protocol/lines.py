"""The buffer under the line-based decoders (policy attribute blocks, tcp_table requests).

Received bytes go into one bytearray; ``_offset`` marks the first unconsumed line and ``_scan`` where the search
for the next LF resumes, so a line fed one byte at a time is scanned once (linear, not quadratic). Consumed
bytes are dropped only when they are at least half the buffer and past a threshold: amortised O(n) copying.
A refused stream frees its memory at once and stays refused.
"""

from __future__ import annotations

# Drop consumed bytes once they reach this size and half the buffer: rare copies, bounded waste.
_COMPACT_THRESHOLD = 4096


class LineBuffer:
    """Base class: the buffer state and its upkeep; subclasses parse lines out of ``_buf``."""

    __slots__ = ("_buf", "_error", "_offset", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # start of the first unconsumed line in _buf
        self._scan = 0  # where the search for the next LF resumes: bytes before it hold none
        self._error: str | None = None  # set once the stream was refused: it is dead

    def _compact(self) -> None:
        offset = self._offset
        if offset == len(self._buf):
            self._buf.clear()
            self._offset = self._scan = 0
        elif offset >= _COMPACT_THRESHOLD and offset * 2 >= len(self._buf):
            del self._buf[:offset]
            self._scan -= offset
            self._offset = 0

    def _discard(self, message: str) -> None:
        """Refuse the stream for good: remember why and free the memory (nothing in it can be used any more)."""
        self._error = message
        self._buf = bytearray()
        self._offset = self._scan = 0
