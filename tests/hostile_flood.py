"""Hostile clients of a socketmap listener, run as a process of their own by tests/test_connlimit_e2e.py.

``python -m tests.hostile_flood PORT COUNT`` keeps COUNT connections to 127.0.0.1:PORT open, in three kinds:

- idle: connect and send nothing;
- drip: begin a request (``9000:echo ``) and send one more byte every second, always within the idle timeout;
- never reading: a small receive buffer, four pipelined requests whose replies are 60 KB each (map "length"),
  one more every second, never a byte read.

A client the daemon closes reconnects one second later, so the pressure stays at COUNT. Prints ``connected``
once every client has connected at least once; stops when its stdin closes (or after ``MAX_SECONDS``) and
prints one JSON line of counts. A process of its own so that the flood does not slow down the test process,
which serves the daemon's HTTP backend and runs postmap.
"""

from __future__ import annotations

import json
import resource
import socket
import sys

import trio

from pfxhttp.protocol.netstring import encode as netstring

RECONNECT_PAUSE = 1.0
MAX_SECONDS = 300.0  # a forgotten flood ends anyway


class Flood:
    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.done = trio.Event()
        self.connects = 0
        self.closed_by_daemon = 0
        self.connected_once = 0
        self.all_connected = trio.Event()

    async def connect(self, rcvbuf: int | None = None) -> trio.socket.SocketType:
        sock = trio.socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: sets the window
        try:
            await sock.connect(("127.0.0.1", self.port))
        except BaseException:
            sock.close()
            raise
        self.connects += 1
        return sock

    async def run(self, index: int) -> None:
        kind = (self.idle, self.drip, self.never_reads)[index % 3]
        first = True
        for _ in range(100_000):  # bounded; MAX_SECONDS ends it first
            if self.done.is_set():
                return
            try:
                await kind(first)
            except OSError:
                pass  # refused or reset: the daemon closed it
            first = False
            if self.done.is_set():
                return
            self.closed_by_daemon += 1
            with trio.move_on_after(RECONNECT_PAUSE):
                await self.done.wait()

    def _connected(self, first: bool) -> None:
        if first:
            self.connected_once += 1
            if self.connected_once == self.count:
                self.all_connected.set()

    async def idle(self, first: bool) -> None:
        with await self.connect() as sock:
            self._connected(first)
            await self._until_closed(sock, b"")

    async def drip(self, first: bool) -> None:
        with await self.connect() as sock:
            self._connected(first)
            await sock.send(b"9000:echo ")
            await self._until_closed(sock, b"k")

    async def never_reads(self, first: bool) -> None:
        with await self.connect(rcvbuf=4096) as sock:
            self._connected(first)
            request = netstring(b"length 60000")
            await sock.send(request * 4)
            for _ in range(100_000):  # one more pipelined request a second; a send to a closed socket fails
                with trio.move_on_after(1.0):
                    await self.done.wait()
                if self.done.is_set():
                    return
                await sock.send(request)

    async def _until_closed(self, sock: trio.socket.SocketType, each_second: bytes) -> None:
        for _ in range(100_000):
            with trio.move_on_after(1.0):
                if not await sock.recv(65536):
                    return
            if self.done.is_set():
                return
            if each_second:
                await sock.send(each_second)


async def main(port: int, count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100 and (hard == resource.RLIM_INFINITY or hard >= count + 100):
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, hard))  # one descriptor per client
    flood = Flood(port, count)
    stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
    with trio.move_on_after(MAX_SECONDS):
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(flood.run, index)

            async def announce() -> None:
                await flood.all_connected.wait()
                print("connected", flush=True)

            nursery.start_soon(announce)
            while await stdin.receive_some(4096):  # until the test closes our stdin
                pass
            flood.done.set()
    print(
        json.dumps(
            {"connects": flood.connects, "closed_by_daemon": flood.closed_by_daemon, "clients": count}
        ),
        flush=True,
    )


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
