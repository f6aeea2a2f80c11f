"""The benchmark of the performance issue in one command (started by bench/run.sh; see its header for usage).

nginx (fixed JSON, ../shared/bench) <- one pfxhttp daemon (bench/pfxhttp-bench.yml, logging level error)
<- pfxload, over loopback. Every run is bounded by a lookup count; each is preceded by a short unrecorded
warm-up. Per run: req/s, p50/p99 (pfxload), CPU microseconds per lookup (utime+stime of every process of
the daemon's session, from /proc/PID/stat, before and after the run, divided by the lookups) and the
daemon's RSS after the run. Groups (``--only``):

- socketmap, policy: distinct keys (nothing cached), 1, 8 and 64 connections;
- cached: cached_map, cold at the start, keys cycled so each of lookups/20 keys misses once (>= 95% hits).
  pfxload has no Zipf option (it cycles through -keys values), so this is the hit ratio of a Zipf mix,
  not its shape: the misses come in the first pass over the keys;
- idle: socketmap at 8 connections, without and then with ``--idle`` idle connections held open on the
  policy listener by bench/idle_conns.py (idle smtpd processes keep their policy connections for 300 s;
  the socketmap listener would close them after 60 s), three alternated pairs, medians compared;
- soak: ``--soak`` lookups (default 10^6) at 64 connections, then the RSS.

Output: a markdown section added to bench/RESULTS.md (newest first) with the command, date and commit,
and one JSON line per run (pfxload's result plus ours) appended to bench/results.jsonl; ``--no-record``
only prints the markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchprocs import (
    HERE,
    KIT,
    MAP_PORT,
    MAX_RUN_SECONDS,
    POLICY_PORT,
    backend_running,
    daemon_running,
    git,
    idle_connections,
    pss_kb,
    session_usage,
)

PFXLOAD = KIT / "bin" / "pfxload"
CONFIG = HERE / "pfxhttp-bench.yml"
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_JSONL = HERE / "results.jsonl"
ENV_OPTIONS = ("LOOKUPS", "SOAK", "IDLE", "WORKERS", "WARMUP", "ONLY", "RECORD", "LABEL", "KIT", "PY")
GROUPS = ("socketmap", "policy", "cached", "idle", "soak")
IDLE_PAIRS = 3


@dataclass(frozen=True)
class Run:
    group: str
    workload: str
    mode: str  # pfxload -mode
    conns: int
    lookups: int
    map_name: str = "demo_map"
    keys: int = 1_000_000
    keyfmt: str = "user%d@example.com"
    idle: int = 0  # idle connections held open during the run

    @property
    def port(self) -> int:
        return MAP_PORT if self.mode == "socketmap" else POLICY_PORT


# --- runs ------------------------------------------------------------------------------------------------


def pfxload(run: Run, lookups: int, pids: list[int], state: Path, label: str | None) -> dict[str, Any]:
    """One count-bounded pfxload run (no time-based warm-up: every lookup is measured); its JSON result,
    or nothing when ``label`` is None (a warm-up)."""
    command = [str(PFXLOAD), "-mode", run.mode, "-addr", f"127.0.0.1:{run.port}", "-c", str(run.conns)]
    command += ["-n", str(lookups), "-d", "0", "-warmup", "0", "-maxdur", f"{MAX_RUN_SECONDS}s", "-q"]
    command += ["-keys", str(run.keys), "-label", label or "warm-up"]
    if run.mode == "socketmap":
        command += ["-map", run.map_name, "-keyfmt", run.keyfmt, "-expect", "OK ok@example.com"]
    else:
        command += ["-expect", "action=DUNNO"]
    if pids:
        command += ["-pid", ",".join(map(str, pids))]
    json_out = state / "run.json"
    json_out.unlink(missing_ok=True)
    if label is not None:
        command += ["-json", str(json_out)]
    pid_file = state / "pfxload.pid"  # for bench/run.sh's trap, should this process be killed hard
    # A fixed argument list, no shell (so for every subprocess of the runner).
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as load:  # noqa: S603
        pid_file.write_text(str(load.pid))
        try:
            output, _ = load.communicate(timeout=MAX_RUN_SECONDS + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
            pid_file.unlink(missing_ok=True)
    if label is None:
        return {}
    try:
        result: dict[str, Any] = json.loads(json_out.read_text())
    except (OSError, ValueError):
        raise SystemExit(f"pfxload gave no result ({load.returncode}): {output}") from None
    return result


def measure(
    run: Run, sid: int, opts: argparse.Namespace, state: Path, meta: dict[str, Any]
) -> dict[str, Any]:
    warm = Run(run.group, run.workload, run.mode, run.conns, 0, run.map_name, run.keys, "warm-%d@example.com")
    with idle_connections(run.idle, state) as idle:
        # Inside: the idle connections are held during the warm-up too, so the measured run starts in the
        # steady state "held open" means (not amid their accepts); their memory is measured.
        if opts.warmup:
            pfxload(warm, min(opts.warmup, run.lookups), [], state, None)
        cpu_before, _, pids = session_usage(sid)
        result = pfxload(run, run.lookups, pids, state, f"{run.workload} c={run.conns}")
        cpu_after, rss_kb, pids = session_usage(sid)
    lookups = int(result.get("ok", 0)) + int(result.get("errors", 0))
    meta["daemons"][-1]["lookups"] += lookups + min(opts.warmup, run.lookups)
    result["runner"] = {
        **meta,
        "group": run.group,
        "workload": run.workload,
        "daemon_pids": pids,
        "daemon_cpu_us_per_lookup": (cpu_after - cpu_before) * 1e6 / lookups if lookups else None,
        "daemon_rss_kb": rss_kb,
        "daemon_pss_kb": pss_kb(pids),
        "cache_keys": run.keys if run.group == "cached" else None,
        "idle_requested": run.idle,
        "idle": idle or None,
    }
    r = result
    print(
        f"{run.workload:<34} c={run.conns:<3} {r['rps']:9,.0f}/s  p50 {r['p50_us'] / 1e3:6.2f} ms"
        f"  p99 {r['p99_us'] / 1e3:6.2f} ms  {r['runner']['daemon_cpu_us_per_lookup'] or 0:6.1f} us/lookup"
        f"  rss {rss_kb / 1024:5.1f} MB  errors {r['errors']}",
        flush=True,
    )
    for sample in result.get("error_samples") or ():
        print(f"    error sample: {sample}", flush=True)
    return result


def plan(opts: argparse.Namespace) -> list[Run]:
    n, groups = opts.lookups, opts.only
    token = secrets.token_hex(3)  # a fresh key space per invocation: the cache starts cold for each run
    runs: list[Run] = []
    if "socketmap" in groups:
        runs += [Run("socketmap", "socketmap, distinct keys", "socketmap", c, n) for c in (1, 8, 64)]
    if "policy" in groups:
        runs += [Run("policy", "policy (31 attributes)", "policy", c, n) for c in (1, 8, 64)]
    if "cached" in groups:
        keys = max(1, n // 20)
        workload = "cached socketmap, >= 95% hits"
        runs += [
            Run(
                "cached",
                workload,
                "socketmap",
                c,
                n,
                map_name="cached_map",
                keys=keys,
                keyfmt=f"z{token}c{c}-%d@x",
            )
            for c in (8, 64)
        ]
    if "idle" in groups:
        # Alternated, IDLE_PAIRS times: a p99 differs by several percent from run to run anyway, and the
        # comparison is of medians.
        runs += [
            run
            for _ in range(IDLE_PAIRS)
            for run in (
                Run("idle", "socketmap, no idle connections", "socketmap", 8, n),
                Run("idle", f"socketmap, {opts.idle} idle connections", "socketmap", 8, n, idle=opts.idle),
            )
        ]
    if "soak" in groups:
        runs.append(Run("soak", "soak: socketmap, distinct keys", "socketmap", 64, opts.soak))
    return runs


# --- output ----------------------------------------------------------------------------------------------


def markdown(
    results: list[dict[str, Any]], meta: dict[str, Any], opts: argparse.Namespace, end: dict[str, Any]
) -> str:
    dirty = " (with uncommitted changes)" if meta["dirty"] else ""
    workers = meta["workers"] or 1
    soak = f" (soak: {opts.soak:,})" if "soak" in opts.only else ""
    lines = [
        f"## {meta['date']}, commit {meta['commit'] or 'unknown'}{dirty}{', ' + opts.label if opts.label else ''}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"{meta['cpus']} CPUs, load average {meta['load_start']:.2f} at the start and {end['load']:.2f} at the end;"
        f" Python {meta['python']}; pfxhttp with {workers} worker process{'es' if workers > 1 else ''}. Each run:"
        f" {opts.lookups:,} lookups{soak} after an unrecorded warm-up of {min(opts.warmup, opts.lookups):,}. CPU per"
        " lookup: CPU time of all the daemon's processes (/proc/PID/stat) over the run / lookups; RSS: the"
        " daemon's after the run.",
        "",
        "| workload | conns | lookups | req/s | p50 | p99 | CPU per lookup | RSS | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        x = r["runner"]
        cpu = x["daemon_cpu_us_per_lookup"]
        lines.append(
            f"| {x['workload']} | {r['conns']} | {r['ok'] + r['errors']:,} | {r['rps']:,.0f} |"
            f" {r['p50_us'] / 1e3:.2f} ms | {r['p99_us'] / 1e3:.2f} ms | {'-' if cpu is None else f'{cpu:.0f} us'} |"
            f" {x['daemon_rss_kb'] / 1024:.1f} MB | {r['errors']} |"
        )
    lines.append("")
    last = results[-1]["runner"] if results else {}
    if len(last.get("daemon_pids", ())) > 1:
        pss = last["daemon_pss_kb"]
        lines.append(
            f"- RSS is summed over the daemon's {len(last['daemon_pids'])} processes, so pages shared since the"
            " fork count once per process; summed PSS after the last run:"
            f" {'?' if pss is None else f'{pss / 1024:.1f}'} MB."
        )
    for r in results:
        x = r["runner"]
        if x["group"] == "cached":
            lookups = r["ok"] + r["errors"]
            hits = 100 * (1 - min(x["cache_keys"], lookups) / lookups) if lookups else 0.0
            lines.append(
                f"- Cached, c={r['conns']}: {x['cache_keys']:,} keys cycled over {lookups:,} lookups from a cold"
                f" cache, each key missing once: >= {hits:.1f}% hits (pfxload has no Zipf option: the hit"
                " ratio of a Zipf mix, with the misses in the first pass)."
            )
    idle = [r for r in results if r["runner"]["group"] == "idle"]
    without = [r for r in idle if not r["runner"]["idle_requested"]]
    held = [r for r in idle if r["runner"]["idle_requested"]]
    if without and held:
        p99_without = statistics.median(r["p99_us"] for r in without)
        p99_held = statistics.median(r["p99_us"] for r in held)
        info = held[-1]["runner"]["idle"] or {}
        lines.append(
            f"- Idle: median p99 at 8 active connections over {len(without)} alternated pairs of runs:"
            f" {p99_without / 1e3:.2f} ms without and {p99_held / 1e3:.2f} ms with"
            f" {held[-1]['runner']['idle_requested']:,} idle connections on the policy listener"
            f" (x{p99_held / max(p99_without, 1e-9):.2f}); RSS {without[0]['runner']['daemon_rss_kb'] / 1024:.1f}"
            f" -> {held[-1]['runner']['daemon_rss_kb'] / 1024:.1f} MB; {info.get('open_at_end', '?')} of"
            f" {info.get('opened', '?')} still open at the end of the last."
        )
    for daemon in meta["daemons"]:
        lines.append(
            f"- RSS {daemon['rss_end_kb'] / 1024:.1f} MB after {daemon['lookups']:,} lookups"
            f" ({daemon['rss_start_kb'] / 1024:.1f} MB when the daemon was ready), daemon of: {daemon['groups']}."
        )
    return "\n".join(lines) + "\n"


def record(section: str, results: list[dict[str, Any]]) -> None:
    """Newest section first, under the file's introduction; one JSON line per run."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    cut = text.find("\n## ")
    head, rest = (text, "") if cut < 0 else (text[: cut + 1], text[cut + 1 :])
    RESULTS_MD.write_text(f"{head.rstrip()}\n\n{section}\n{rest}")
    with RESULTS_JSONL.open("a") as out:
        for result in results:
            out.write(json.dumps(result, sort_keys=False) + "\n")


# --- main ------------------------------------------------------------------------------------------------


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="pfxhttp benchmark (see bench/run.sh)")
    parser.add_argument("--lookups", type=int, default=env_int("LOOKUPS", 100_000), help="per run [LOOKUPS]")
    parser.add_argument("--soak", type=int, default=env_int("SOAK", 1_000_000), help="soak lookups [SOAK]")
    parser.add_argument("--idle", type=int, default=env_int("IDLE", 1000), help="idle connections [IDLE]")
    parser.add_argument("--workers", type=int, default=env_int("WORKERS", 0), help="server.workers [WORKERS]")
    parser.add_argument("--warmup", type=int, default=env_int("WARMUP", 2000), help="per run [WARMUP]")
    parser.add_argument("--only", default=os.environ.get("ONLY", ",".join(GROUPS)), help="groups [ONLY]")
    parser.add_argument("--label", default=os.environ.get("LABEL", ""), help="words for the heading [LABEL]")
    parser.add_argument(
        "--no-record",
        action="store_true",
        default=os.environ.get("RECORD", "1") == "0",
        help="print only; do not touch RESULTS.md and results.jsonl [RECORD=0]",
    )
    opts = parser.parse_args()
    opts.only = [group.strip() for group in opts.only.split(",") if group.strip()]
    unknown = set(opts.only) - set(GROUPS)
    if unknown or not opts.only:
        parser.error(f"--only takes a comma-separated subset of {', '.join(GROUPS)}")
    if not (1 <= opts.lookups <= 10**8 and 1 <= opts.soak <= 10**8 and 0 <= opts.idle <= 20_000):
        parser.error("lookups and soak must be in 1..10^8, idle in 0..20000")
    if not 0 <= opts.workers <= 64 or opts.warmup < 0:
        parser.error("workers must be in 0..64 (0: as configured), warmup >= 0")
    return opts


def bench_config(state: Path, workers: int) -> Path:
    """A temporary copy of bench/pfxhttp-bench.yml, with ``server.workers`` when asked for."""
    text = CONFIG.read_text()
    if "logging: {level: error}" not in text:
        raise SystemExit(f"{CONFIG} must keep `logging: {{level: error}}` (no per-request logging)")
    if workers:
        if "\nserver:\n" not in f"\n{text}":
            raise SystemExit(f"{CONFIG}: no top-level `server:` line to add workers under")
        text = f"\n{text}".replace("\nserver:\n", f"\nserver:\n  workers: {workers}\n", 1).lstrip("\n")
    config = state / "pfxhttp-bench.yml"
    config.write_text(text)
    return config


def stop_on_signal(signum: int, frame: FrameType | None) -> None:
    print(f"stopping on signal {signum}: nothing recorded", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)  # unwinds through every `finally`: the daemon, the helper, nginx


def main() -> int:
    opts = options()
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    if not os.access(PFXLOAD, os.X_OK):
        raise SystemExit(f"no load generator at {PFXLOAD} (set KIT=path/to/shared/bench)")
    settings = [f"{name}={shlex.quote(os.environ[name])}" for name in ENV_OPTIONS if os.environ.get(name)]
    commit = git("rev-parse", "--short", "HEAD")
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        # Uncommitted changes to the code; the result files themselves (written by earlier runs) do not count.
        "dirty": bool(
            git(
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!bench/RESULTS.md",
                ":!bench/results.jsonl",
            )
        ),
        "command": " ".join([*settings, "bench/run.sh", *map(shlex.quote, sys.argv[1:])]),
        "workers": opts.workers or None,
        "label": opts.label or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_start": os.getloadavg()[0],
        "daemons": [],  # one daemon for the soak alone (RSS after its lookups), one for the rest
    }
    results: list[dict[str, Any]] = []
    given_state = os.environ.get("BENCH_STATE")
    with contextlib.ExitStack() as stack:
        if given_state:
            state = Path(given_state)
        else:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pfxhttp-bench-")))
        config = bench_config(state, opts.workers)
        stack.enter_context(backend_running(state))
        runs = plan(opts)
        # The soak gets a fresh daemon: its RSS is then what 10^6 lookups leave, not what the cache and the
        # 1,000 idle connections of the other groups left in the allocator.
        for batch in ([r for r in runs if r.group != "soak"], [r for r in runs if r.group == "soak"]):
            if not batch:
                continue
            with daemon_running(config, state) as sid:
                daemon = {"groups": ", ".join(dict.fromkeys(r.group for r in batch)), "lookups": 0}
                daemon["rss_start_kb"] = session_usage(sid)[1]
                meta["daemons"].append(daemon)
                for run in batch:
                    results.append(measure(run, sid, opts, state, meta))
                daemon["rss_end_kb"] = session_usage(sid)[1]
        end = {"load": os.getloadavg()[0]}
    section = markdown(results, meta, opts, end)
    print()
    print(section)
    if opts.no_record:
        print("(not recorded: --no-record / RECORD=0)")
    else:
        record(section, results)
        print(f"recorded in {RESULTS_MD} and {RESULTS_JSONL}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
