"""Peak RSS of a real pfxhttp daemon answering one lookup whose JSON body is at the body cap.

    .venv/bin/python bench/body_rss.py [BODY_BYTES ...]

For each size it starts a backend (a thread of this process) and a fresh daemon (``python -m pfxhttp run``,
``server.http_client.max_response_body_size`` set to the size), warms the daemon up with one small lookup,
reads its VmRSS (idle), sends one lookup whose body is exactly BODY_BYTES of the costliest JSON shape we
know for its size (``[{}]`` repeated: about 40 bytes of Python objects per byte of JSON with orjson on
CPython 3.11) and one of a plain string value, then reads VmHWM (the peak). systemd/pfxhttp.service runs the
daemon under MemoryMax=50M. Every process is stopped on the way out; every wait is bounded.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
DEFAULT_SIZES = (128 * 1024, 256 * 1024, 1024 * 1024, 16 * 1024 * 1024)


def nested_body(size: int) -> bytes:
    """``{"v":"ok","pad":[[{}],[{}],...]}`` of exactly ``size`` bytes (spaces pad the last few)."""
    start, end = b'{"v":"ok","pad":[', b"]}"
    unit = b"[{}],"
    count = (size - len(start) - len(end) + 1) // len(unit)
    body = start + (unit * count)[:-1] + end
    return body + b" " * (size - len(body))


def string_body(size: int) -> bytes:
    """``{"v":"xxxx..."}`` of exactly ``size`` bytes."""
    return b'{"v":"' + b"x" * (size - 8) + b'"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextmanager
def backend(bodies: dict[str, bytes]) -> Iterator[int]:
    """POST /NAME answers bodies[NAME] with status 200."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = bodies[self.path.strip("/")]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


def lookup(port: int, name: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(netstring(f"{name} k"))
        data = b""
        deadline = time.monotonic() + 20
        while not data.endswith(b",") and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(size: int, shape: str) -> tuple[int, int, str]:
    body = nested_body(size) if shape == "nested" else string_body(size)
    with backend({"small": b'{"v":"ok"}', "big": body}) as backend_port, tempfile.TemporaryDirectory() as tmp:
        map_port = free_port()
        config = Path(tmp) / "pfxhttp.yml"
        config.write_text(
            "server:\n"
            f"  listen: [{{kind: socket_map, type: tcp, address: 127.0.0.1, port: {map_port}}}]\n"
            "  logging: {level: none}\n"
            f"  http_client: {{timeout: 20s, max_response_body_size: {size}}}\n"
            "socket_maps:\n"
            '  defaults: {payload: \'{"key": "{{ .Key }}"}\', value_field: v}\n'
            f"  small: {{target: 'http://127.0.0.1:{backend_port}/small'}}\n"
            f"  big: {{target: 'http://127.0.0.1:{backend_port}/big'}}\n"
        )
        daemon = subprocess.Popen([PY, "-m", "pfxhttp", "run", "--config", str(config)])  # noqa: S603
        try:
            for _ in range(200):
                try:
                    reply = lookup(map_port, "small")
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                raise RuntimeError("daemon did not start")
            idle = status_kib(daemon.pid, "VmRSS")
            reply = lookup(map_port, "big")
            return idle, status_kib(daemon.pid, "VmHWM"), reply[:40]
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or list(DEFAULT_SIZES)
    print("body_bytes shape   idle_rss_MiB peak_rss_MiB reply")
    for size in sizes:
        for shape in ("string", "nested"):
            idle, peak, reply = measure(size, shape)
            print(f"{size:>10} {shape:<7} {idle / 1024:>12.1f} {peak / 1024:>12.1f} {reply}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
