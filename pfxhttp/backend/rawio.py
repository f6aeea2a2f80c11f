"""Plain-socket I/O for the per-lookup hot path: the syscall first, the trio scheduler only when it would block.

Every trio socket operation checkpoints: it yields to the scheduler even when the syscall succeeds at once, and
wraps the call in context managers. A lookup makes four socket calls (read the Postfix request, send the HTTP
request, read the HTTP response, send the reply), and the two sends practically always succeed at once: those
yields were a large share of the CPU per lookup (bench/RESULTS.md). ``RawSocketIO`` tries the syscall first and
waits for readiness (``trio.lowlevel.wait_readable`` / ``wait_writable``, which are checkpoints) only on EAGAIN.

Fairness: a task whose operations never block never yields. So every ``YIELD_EVERY`` operations in a row that
did not wait, one checkpoint is taken; cancellation (timeouts, the idle sweep, shutdown) is therefore seen
within a bounded number of operations, as with trio's own streams.

The descriptor is read through the trio socket each time (``fileno()`` is -1 once closed), so a closed socket
is never read or written by number: a recycled descriptor number can never leak another connection's bytes.
Errors are trio's, as from a ``trio.SocketStream``: a failed syscall raises ``BrokenResourceError`` from the
``OSError``; a socket closed by us raises ``ClosedResourceError``.

Deadlines: ``deadline`` (trio clock) bounds only the waits, and a cancel scope is entered only when a wait is
needed: a trio cancel scope costs about 6 us to enter and leave, more than the rest of the I/O of a lookup,
and most backend exchanges never wait (the answer is there after the yield that follows the send). A wait that
reaches the deadline raises ``trio.TooSlowError``. Reads that never wait (a peer sending faster than we parse)
never see the deadline here: the caller checks the clock between reads (``http11``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable

import trio

YIELD_EVERY = 8


class RawSocketIO:
    """``receive_some`` / ``send_all`` on a connected non-blocking trio socket, for one task at a time."""

    __slots__ = ("_since_wait", "_sock")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._since_wait = 0  # operations in a row that did not wait (see the module docstring)

    def _fd(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket was closed")
        return fd

    async def _wait(self, wait: Callable[[trio.socket.SocketType], Awaitable[None]], deadline: float) -> None:
        self._since_wait = 0
        if deadline == math.inf:
            await wait(self._sock)
            return
        with trio.move_on_at(deadline) as scope:
            await wait(self._sock)
        if scope.cancelled_caught:
            raise trio.TooSlowError

    async def receive_some(self, max_bytes: int, deadline: float = math.inf) -> bytes:
        """Up to ``max_bytes`` bytes; b"" at end of stream. TooSlowError if it must wait past ``deadline``."""
        try:
            data = os.read(self._fd(), max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise trio.BrokenResourceError(f"receive failed: {exc}") from exc
        else:
            # Inline, not a helper coroutine: this runs for most reads (see the module docstring on fairness).
            self._since_wait += 1
            if self._since_wait >= YIELD_EVERY:
                self._since_wait = 0
                await trio.lowlevel.checkpoint()
            return data
        # Bounded in practice: epoll is level-triggered, so a wake-up means data, EOF or an error; a spurious
        # wake-up (another reader drained it) just waits again.
        while True:
            await self._wait(trio.lowlevel.wait_readable, deadline)
            try:
                return os.read(self._fd(), max_bytes)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(f"receive failed: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview, deadline: float = math.inf) -> None:
        """Send every byte of ``data``; waits for buffer space only when the kernel's buffer is full
        (TooSlowError past ``deadline``)."""
        try:
            sent = os.write(self._fd(), data)  # the usual case: the kernel takes it all at once
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc
        view = memoryview(data)
        total = len(view)
        waited = False
        while sent < total:
            try:
                sent += os.write(self._fd(), view[sent:])
            except BlockingIOError:
                await self._wait(trio.lowlevel.wait_writable, deadline)
                waited = True
            except OSError as exc:
                raise trio.BrokenResourceError(f"send failed: {exc}") from exc
        if not waited:
            # Yield once after a send, as trio's own streams do: the peer's answer usually arrives while other
            # tasks run, so the read that follows finds it at once. Reading straight after the send instead
            # met EAGAIN nearly every time and paid two epoll_ctl calls to wait (strace, bench/RESULTS.md).
            self._since_wait = 0
            await trio.lowlevel.checkpoint()
