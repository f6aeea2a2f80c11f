"""Command line: ``pfxhttp [run]``, ``check``, ``query``, ``policy``, ``demo``.

Exit codes (also in pfxhttp(8)):

====  ==================================================================
0     success (``query``: found)
1     ``query``: not found; otherwise a runtime failure
2     usage error
71    a listener could not be bound (EX_OSERR)
75    ``query``: TEMP, TIMEOUT or PERM reply (EX_TEMPFAIL)
77    run_as_user / run_as_group could not be applied (EX_NOPERM)
78    configuration error (EX_CONFIG)
====  ==================================================================
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from pfxhttp import __version__
from pfxhttp.backend.compile import check_entry
from pfxhttp.backend.runtime import Runtime
from pfxhttp.config import find_config, load_config
from pfxhttp.config.model import Config
from pfxhttp.errors import ConfigError, ConfigErrors, PfxhttpError, PolicyError
from pfxhttp.logsetup import configure_logging, get_logger
from pfxhttp.protocol.policy import PolicyDecoder, PolicyRequest
from pfxhttp.protocol.socketmap import SocketmapRequest, SocketmapStatus
from pfxhttp.server import systemd
from pfxhttp.server.daemon import serve_until_signal
from pfxhttp.server.limits import raise_nofile_limit
from pfxhttp.server.listeners import BindError
from pfxhttp.server.privileges import PrivilegeError

EXIT_OK = 0
EXIT_NOTFOUND = 1
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BIND = 71
EXIT_TEMPFAIL = 75
EXIT_NOPERM = 77
EXIT_CONFIG = 78


def _print_config_errors(exc: ConfigError) -> None:
    errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    for error in errors:
        print(f"pfxhttp: {error.render()}", file=sys.stderr)


def _load_config(args: argparse.Namespace, *, strict: bool = False) -> Config:
    """Find, parse and compile the configuration (no network, no binding); ConfigError is reported by main.

    ``strict`` (``check``): a PFXHTTP_* variable that names no key is an error; the daemon warns and starts."""
    path = find_config(getattr(args, "config", None))
    # PFXHTTP_* overrides
    return load_config(path, entry_check=check_entry, environ=os.environ, strict_environment=strict)


def _load(args: argparse.Namespace, *, strict: bool = False) -> tuple[Config, Runtime]:
    config = _load_config(args, strict=strict)
    return config, Runtime(config, metrics=_metrics_for(config))


def _metrics_for(config: Config) -> Any:
    """The daemon's Metrics when server.metrics is enabled; prometheus-client is imported only then."""
    if not config.server.metrics.enabled:
        return None
    from pfxhttp.server.metrics import Metrics

    return Metrics.for_config(config)


def _log_startup(config: Config, log: Any) -> None:
    log.info("pfxhttp starting", version=__version__, config=config.source)
    for warning in config.warnings:  # keys not supported yet, keys a listener type ignores, stray variables
        log.warning("configuration warning", warning=warning)


def _settle_heap() -> None:
    """Before serving: collect, then move every object that exists now (modules, the compiled configuration)
    out of the cyclic collector's sight, and let it run less often. A lookup's objects are freed by reference
    counting; the collector's passes over the startup objects were the longest pauses of the daemon (up to
    22 ms: the p99 at 64 connections, bench/RESULTS.md). Garbage in cycles is still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def cmd_run(args: argparse.Namespace) -> int:
    raise_nofile_limit()  # every Postfix connection is a descriptor; workers inherit the raised limit
    worker = getattr(args, "internal_worker", None)
    if worker is not None:
        return _run_worker(args, worker)
    config = _load_config(args)
    if config.server.workers > 1:
        return _run_supervisor(config)
    runtime = Runtime(config, metrics=_metrics_for(config))
    configure_logging(config.server.logging)
    log = get_logger()
    _log_startup(config, log)
    inherited = systemd.listen_fds(os.environ)  # systemd: also unsets LISTEN_* for any child process
    _settle_heap()
    return _serve(log, serve_until_signal, runtime, log, inherited)


def _serve(log: Any, main: Callable[..., Awaitable[int | None]], *args: Any) -> int:
    """``trio.run(main, *args)`` for every daemon mode (single process, supervisor, worker): the start-up
    failures become their exit codes; otherwise ``main``'s status (None: EXIT_OK)."""
    try:
        status = trio.run(main, *args)
    except BindError as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_BIND
    except PrivilegeError as exc:
        log.error("cannot drop privileges", error=str(exc))
        return EXIT_NOPERM
    return EXIT_OK if status is None else status


def _run_supervisor(config: Config) -> int:
    """``server.workers`` > 1: this process binds the listeners and supervises the workers (supervisor.py)."""
    configure_logging(config.server.logging)
    log = get_logger()
    _log_startup(config, log)
    return _serve(log, _supervise, config, log, systemd.listen_fds(os.environ))


async def _supervise(config: Config, log: Any, inherited: Mapping[str, Sequence[int]]) -> int:
    from pfxhttp.server.supervisor import Supervisor

    return await Supervisor(config, log, inherited=inherited, environ=os.environ).run()


def _run_worker(args: argparse.Namespace, text: str) -> int:
    """``run --internal-worker SPEC``: one worker started by the supervisor (worker.py), not for operators."""
    from pfxhttp.server.worker import WorkerSpec, serve_worker, worker_config

    try:
        spec = WorkerSpec.decode(text)
    except ValueError as exc:
        print(f"pfxhttp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config, missing = worker_config(_load_config(args), spec)
    runtime = Runtime(config, metrics=_metrics_for(config))
    configure_logging(config.server.logging)
    log = get_logger(worker=spec.slot, generation=spec.generation, pid=os.getpid())
    for listen in missing:
        log.error("listener not passed by the supervisor, not served", listener=listen.describe())
    _settle_heap()
    return _serve(log, serve_worker, runtime, log, spec)


def cmd_check(args: argparse.Namespace) -> int:
    if args.json:
        return _check_json(args)
    config, _runtime = _load(args, strict=True)
    for warning in config.warnings:
        print(f"pfxhttp: warning: {warning}", file=sys.stderr)
    print(
        f"{config.source}: OK: {len(config.server.listen)} listener(s), {len(config.socket_maps)} socket map(s), "
        f"{len(config.policy_services)} policy service(s)"
    )
    return EXIT_OK


def _check_json(args: argparse.Namespace) -> int:
    """``check --json``: the result as one JSON object on stdout (pfxhttp.config.report), same exit codes."""
    from pfxhttp.config.report import check_report

    try:
        config, _runtime = _load(args, strict=True)
    except ConfigError as exc:
        print(json.dumps(check_report(None, exc, getattr(args, "config", None)), indent=2))
        return EXIT_CONFIG
    print(json.dumps(check_report(config), indent=2))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from pfxhttp.config.schema import schema_json

    sys.stdout.write(schema_json())
    return EXIT_OK


async def _one_socketmap(runtime: Runtime, name: str, key: str) -> bytes:
    try:
        reply = await runtime.socketmap(SocketmapRequest(name, key), get_logger(command="query"))
        return reply.status.value.encode() + b" " + reply.text.encode("utf-8", "surrogateescape")
    finally:
        await runtime.aclose()


def cmd_query(args: argparse.Namespace) -> int:
    config, runtime = _load(args)
    configure_logging(config.server.logging)
    line = trio.run(_one_socketmap, runtime, args.name, args.key)
    sys.stdout.buffer.write(line + b"\n")
    status = line.split(b" ", 1)[0].decode()
    if status == SocketmapStatus.OK.value:
        return EXIT_OK
    if status == SocketmapStatus.NOTFOUND.value:
        return EXIT_NOTFOUND
    return EXIT_TEMPFAIL


async def _one_policy(runtime: Runtime, name: str, request: PolicyRequest) -> bytes | None:
    try:
        reply = await runtime.policy(name, request, get_logger(command="policy"))
        return None if reply is None else reply.encode()
    finally:
        await runtime.aclose()


def _read_policy_request(data: bytes) -> PolicyRequest:
    # Attributes typed by hand may lack the final empty line; accept end of input as the block's end.
    if not data.endswith(b"\n"):
        data += b"\n"
    if not data.endswith(b"\n\n"):
        data += b"\n"
    decoder = PolicyDecoder()
    decoder.feed(data)
    request = decoder.next()
    if request is None:
        raise PolicyError("no attributes on standard input")
    return request


def cmd_policy(args: argparse.Namespace) -> int:
    config, runtime = _load(args)
    if args.name not in config.policy_services:
        known = ", ".join(sorted(config.policy_services)) or "none"
        print(f"pfxhttp: no policy service named {args.name!r} (configured: {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        request = _read_policy_request(sys.stdin.buffer.read())
    except PolicyError as exc:
        print(f"pfxhttp: invalid policy attributes: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.server.logging)
    reply = trio.run(_one_policy, runtime, args.name, request)
    if reply is None:
        print(
            "pfxhttp: no reply (on_error: close): Postfix would apply smtpd_policy_service_default_action",
            file=sys.stderr,
        )
        return EXIT_TEMPFAIL
    sys.stdout.buffer.write(reply)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from pfxhttp.demo.run import run_demo  # the demo pulls in h11 and the bundled data only when asked

    try:
        return run_demo(args.port)
    except BindError as exc:
        print(f"pfxhttp demo: {exc}; choose other ports with --port", file=sys.stderr)
        return EXIT_BIND


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="configuration file (default: search /usr/local/etc/pfxhttp/, /etc/pfxhttp/, "
        "$HOME/.pfxhttp/, ./ for pfxhttp.yml; as root only the first two)",
    )
    parser = argparse.ArgumentParser(
        prog="pfxhttp",
        parents=[common],
        description="Answer Postfix socketmap and policy-delegation requests from HTTP/JSON APIs.",
    )
    parser.add_argument("--version", action="version", version=f"pfxhttp {__version__}")
    parser.set_defaults(func=cmd_run)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    run = sub.add_parser("run", parents=[common], help="run the daemon (the default)")
    # Internal: how the supervisor of server.workers > 1 starts a worker (pfxhttp.server.worker); not for operators.
    run.add_argument("--internal-worker", metavar="SPEC", default=None, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", parents=[common], help="validate the configuration and exit")
    check.add_argument("--json", action="store_true", help="print the result as JSON (errors with positions)")
    check.set_defaults(func=cmd_check)
    sub.add_parser("schema", help="print the JSON Schema of pfxhttp.yml").set_defaults(func=cmd_schema)
    query = sub.add_parser("query", parents=[common], help="answer one socketmap lookup and print the reply")
    query.add_argument("name", help="socket map name (as in socketmap:...:NAME)")
    query.add_argument("key", help="lookup key")
    query.set_defaults(func=cmd_query)
    policy = sub.add_parser(
        "policy",
        parents=[common],
        help="answer one policy request read from standard input (name=value lines)",
    )
    policy.add_argument("name", help="policy service name")
    policy.set_defaults(func=cmd_policy)
    demo = sub.add_parser("demo", help="run the daemon with a bundled example config and HTTP backend")
    demo.add_argument(
        "--port",
        type=int,
        default=23450,
        help="socketmap port; the policy service listens on PORT+1 (default 23450)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        _print_config_errors(exc)
        return EXIT_CONFIG
    except PfxhttpError as exc:
        print(f"pfxhttp: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return result


if __name__ == "__main__":
    sys.exit(main())
