"""One generation of worker processes (``server.workers > 1``): start N, learn when all serve, keep them running,
stop them. The supervisor (supervisor.py) decides when generations start and stop; this module runs them.

Each worker is ``python -m pfxhttp run --config FILE --internal-worker SPEC`` (worker.py) with the generation's
listening sockets and one end of a socketpair passed as descriptors. The worker writes one byte on it once it
serves; its end-of-file means the worker is gone. A worker of a generation that has not yet become ready as a
whole and exits (or stays silent for START_TIMEOUT) makes the generation fail: the supervisor then keeps what
runs. Later, a worker that dies is logged as an error and restarted after a back-off: 1 s, doubling up to 30 s,
and back to 1 s once a worker ran that long, so a worker that crashes at once costs little while one that
crashes rarely comes back fast. ``stop`` sends SIGTERM to every worker; whatever still runs DEFAULT_GRACE plus
STOP_MARGIN later (a worker's own grace for its requests in flight) is killed.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from pfxhttp.config.model import Config
from pfxhttp.server.app import DEFAULT_GRACE
from pfxhttp.server.listeners import BoundListener
from pfxhttp.server.worker import READY_BYTE, WorkerSpec, socket_key

START_TIMEOUT = 30.0  # a worker imports its libraries and reads the file within this, or counts as failed
STOP_MARGIN = 5.0  # beyond the workers' own grace before SIGKILL
# Under systemd every process of the unit gets SIGTERM at once (KillMode=control-group), so a worker may exit
# a moment before the supervisor hears its own SIGTERM: wait this long before calling an exit a crash.
SETTLE = 0.5
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0


def describe_exit(code: int | None) -> str:
    if code is None:
        return "not started"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclass(eq=False)
class Generation:
    """N workers started together on one configuration; its state is changed only by the supervisor's tasks."""

    number: int  # 1 at start, +1 per reload
    config: Config
    bound: list[BoundListener]  # the supervisor's sockets this generation serves (shared with others)
    command: tuple[str, ...]  # the worker command before its options: python -m pfxhttp run
    environ: Mapping[str, str]  # the workers' environment
    log: Any
    processes: dict[int, trio.Process] = field(default_factory=dict)  # slot -> the running worker
    ready: set[int] = field(default_factory=set)  # slots that reported ready at least once
    settled: trio.Event = field(default_factory=trio.Event)  # every worker ready, or failed
    stopping: trio.Event = field(default_factory=trio.Event)
    failure: str | None = None
    exit_code: int | None = None  # of the worker that made a fresh generation fail

    @property
    def size(self) -> int:
        return self.config.server.workers

    def mark_ready(self, slot: int) -> None:
        self.ready.add(slot)
        if len(self.ready) == self.size:
            self.settled.set()

    def fail(self, reason: str, exit_code: int | None = None) -> None:
        """A fresh generation cannot start (no effect once it did)."""
        if not self.settled.is_set():
            self.failure, self.exit_code = reason, exit_code
            self.settled.set()

    def stop(self) -> None:
        """SIGTERM to every worker; ``run`` returns once all exited (killed after the grace)."""
        self.fail("stopped")
        self.stopping.set()
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def wait_started(self) -> bool:
        """True once every worker serves; False if the generation failed or stopped first."""
        with trio.move_on_after(START_TIMEOUT):
            await self.settled.wait()
        self.fail(f"not every worker was ready within {START_TIMEOUT:g} s")
        return self.failure is None

    async def run(self) -> None:
        """Run the workers until ``stop`` and all of them exited."""
        async with trio.open_nursery() as outer:
            outer.start_soon(self._reap)
            async with trio.open_nursery() as slots:
                for slot in range(self.size):
                    slots.start_soon(self._slot, slot)
            outer.cancel_scope.cancel()

    async def _reap(self) -> None:
        await self.stopping.wait()
        await trio.sleep(DEFAULT_GRACE + STOP_MARGIN)
        for slot, process in self.processes.items():
            if process.returncode is None:
                self.log.error("worker did not stop in time, killing it", worker=slot, pid=process.pid)
                process.kill()

    async def _slot(self, slot: int) -> None:
        """Keep one worker running until the generation stops."""
        delay = BACKOFF_MIN
        while not self.stopping.is_set():
            started = trio.current_time()
            code, was_ready = await self._one_worker(slot)
            if self.stopping.is_set():
                return
            if not was_ready and not self.settled.is_set():
                self.fail(f"worker {slot} did not start ({describe_exit(code)})", code)
                return
            with trio.move_on_after(SETTLE):
                await self.stopping.wait()
            if self.stopping.is_set():
                return
            if trio.current_time() - started >= BACKOFF_MAX:
                delay = BACKOFF_MIN
            self.log.error(
                "worker exited unexpectedly, restarting it",
                worker=slot,
                generation=self.number,
                status=describe_exit(code),
                restart_in_seconds=delay,
            )
            with trio.move_on_after(delay - SETTLE):
                await self.stopping.wait()
            delay = min(delay * 2, BACKOFF_MAX)

    async def _one_worker(self, slot: int) -> tuple[int | None, bool]:
        """Start one worker and wait until it exits: (its exit code, whether it reported ready)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with trio.socket.from_stdlib_socket(ours) as channel:
            listeners = {
                socket_key(b.config): tuple(lst.socket.fileno() for lst in b.listeners) for b in self.bound
            }
            spec = WorkerSpec(theirs.fileno(), slot, self.number, listeners)
            options = ["--config", str(self.config.source), "--internal-worker", spec.encode()]
            try:
                process = await trio.lowlevel.open_process(
                    [*self.command, *options],
                    pass_fds=(theirs.fileno(), *spec.descriptors()),
                    env=self.environ,
                    # Not the supervisor's process group: a terminal's Ctrl-C goes to the supervisor alone,
                    # which then stops the workers in order.
                    process_group=0,
                )
            except OSError as exc:
                self.log.error("cannot start a worker", worker=slot, error=str(exc))
                return None, False
            finally:
                theirs.close()  # the worker holds the only other copy: its exit is the channel's end-of-file
            self.processes[slot] = process
            if self.stopping.is_set():
                process.send_signal(signal.SIGTERM)
            ready = False
            with trio.move_on_after(START_TIMEOUT):
                ready = await channel.recv(1) == READY_BYTE
            if ready:
                self.log.info("worker ready", worker=slot, generation=self.number, pid=process.pid)
                self.mark_ready(slot)
            elif process.returncode is None and not self.stopping.is_set():
                self.log.error("worker not ready in time, killing it", worker=slot, pid=process.pid)
                process.kill()
            code = await process.wait()
        if self.processes.get(slot) is process:
            del self.processes[slot]
        return code, ready
