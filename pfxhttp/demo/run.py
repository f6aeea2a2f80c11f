"""``pfxhttp demo``: the daemon on a bundled config, in front of the bundled mail-directory backend.

The backend listens on an ephemeral loopback port; the config's markers are filled in, written to a private
temporary directory (so the printed ``pfxhttp --config ... query`` commands work while the demo runs), parsed
and served exactly as ``pfxhttp run`` would. Ctrl-C (SIGINT) or SIGTERM stops everything cleanly.

The printed ``postmap`` commands name that directory with ``-c``, where the demo writes an empty ``main.cf``:
postmap reads main.cf before any lookup and exits if it is missing, which it is wherever Postfix was
installed without a configuration (what ``./dev test`` does on a fresh Debian machine).
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import load_config
from pfxhttp.config.model import LoggingConfig
from pfxhttp.demo.backend import DemoBackend
from pfxhttp.demo.httpd import serve_http
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.server.daemon import serve_until_signal
from pfxhttp.server.listeners import BindError


def demo_config_text(backend_url: str, socketmap_port: int, policy_port: int) -> str:
    """The bundled demo config with its markers filled in."""
    text = resources.files("pfxhttp.demo").joinpath("pfxhttp-demo.yml").read_text(encoding="utf-8")
    return (
        text.replace("__BACKEND__", backend_url)
        .replace("__SOCKETMAP_PORT__", str(socketmap_port))
        .replace("__POLICY_PORT__", str(policy_port))
    )


def pfxhttp_command() -> str:
    """How to run this pfxhttp again from a shell: ./dev demo runs it from .venv, which is not on PATH."""
    program = Path(sys.argv[0])
    if program.name == "pfxhttp":
        found = shutil.which("pfxhttp")
        if found and Path(found).resolve() == program.resolve():
            return "pfxhttp"
        return str(program.resolve())
    return f"{sys.executable} -m pfxhttp"


# What the demo's main.cf says: nothing but why it is there (Postfix's defaults suit a lookup).
DEMO_MAIN_CF = """\
# Written by `pfxhttp demo` for the `postmap -c` commands it prints: postmap reads a main.cf before any
# lookup, and a Postfix installed without a configuration has none. Postfix's defaults suit a lookup.
"""


def postmap_command() -> str:
    """How to run postmap from a shell: Debian installs it in /usr/sbin, which is not on a user's PATH."""
    if shutil.which("postmap"):
        return "postmap"
    if Path("/usr/sbin/postmap").is_file():
        return "/usr/sbin/postmap"
    return "postmap"  # not installed: the command still shows what to run once it is


def instructions(config_path: Path, socketmap_port: int, policy_port: int) -> str:
    """What to try, with the demo's own config; postmap reads the main.cf next to it (``-c``)."""
    spec = f"socketmap:inet:127.0.0.1:{socketmap_port}"
    pfxhttp = pfxhttp_command()
    postmap = f"{postmap_command()} -c {shlex.quote(str(config_path.parent))}"
    config = shlex.quote(str(config_path))
    return f"""
pfxhttp demo is running. Try, from another terminal:

  {postmap} -q office@example.com {spec}:aliases    # OK: alice@example.com,bob@example.com
  {postmap} -q nobody@example.com {spec}:aliases    # not found (exit 1)
  {postmap} -q alice@example.com  {spec}:mailboxes  # example.com/alice/
  {postmap} -q example.org        {spec}:domains    # example.org

  printf 'sasl_username=alice@example.com\\nsender=office@example.com\\n\\n' \\
    | {pfxhttp} --config {config} policy sender_login     # action=DUNNO
  printf 'sasl_username=alice@example.com\\nsender=carol@example.org\\n\\n' \\
    | {pfxhttp} --config {config} policy sender_login     # action=REJECT 5.7.1 ...

  {pfxhttp} --config {config} query aliases office@example.com   # same pipeline, without postmap

Postfix main.cf lines for this demo:

  virtual_alias_maps = {spec}:aliases
  virtual_mailbox_maps = {spec}:mailboxes
  virtual_mailbox_domains = {spec}:domains
  smtpd_sender_restrictions = check_policy_service inet:127.0.0.1:{policy_port}

(postmap -c {config_path.parent}: a main.cf the demo wrote, for machines where Postfix has none.)
The policy service listens on 127.0.0.1:{policy_port}. Config in use: {config_path}
Press Ctrl-C to stop.
"""


async def _demo(port: int, workdir: Path, log: Any) -> None:
    async with trio.open_nursery() as nursery:
        backend_port = await nursery.start(serve_http, DemoBackend())
        config_path = workdir / "pfxhttp.yml"
        text = demo_config_text(f"http://127.0.0.1:{backend_port}", port, port + 1)
        await trio.Path(config_path).write_text(text, encoding="utf-8")
        await trio.Path(workdir / "main.cf").write_text(DEMO_MAIN_CF, encoding="utf-8")
        # Loading reads files (the config, TLS trust store): off the trio loop.
        config = await trio.to_thread.run_sync(load_config, config_path)
        runtime = await trio.to_thread.run_sync(Runtime, config)
        log.info("demo backend listening", address=f"127.0.0.1:{backend_port}")

        async def announce() -> None:
            await trio.sleep(0.05)  # after the "listening" log lines
            print(instructions(config_path, port, port + 1), flush=True)

        nursery.start_soon(announce)
        await serve_until_signal(runtime, log)
        nursery.cancel_scope.cancel()


def run_demo(port: int) -> int:
    configure_logging(LoggingConfig())
    log = get_logger(mode="demo")
    workdir = Path(tempfile.mkdtemp(prefix="pfxhttp-demo-"))
    try:
        trio.run(_demo, port, workdir, log)
    except* BindError as group:
        raise group.exceptions[0] from None  # the nursery wrapped it; the CLI reports it plainly
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
