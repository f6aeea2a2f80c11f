#!/bin/sh
# The benchmark of the performance issue, in one command: nginx (fixed JSON, ../shared/bench) <- one pfxhttp
# daemon (bench/pfxhttp-bench.yml, logging level error) <- pfxload, loopback only. Writes a markdown section
# into bench/RESULTS.md (newest first: command, date, commit, table) and one JSON line per run to
# bench/results.jsonl. Run it on a quiet machine: nothing else busy on the cores.
#
#   bench/run.sh                      everything: socketmap and policy at 1/8/64 connections (distinct keys),
#                                     cached (>= 95% hits) at 8/64, p99 at 8 with/without 1000 idle
#                                     connections, RSS after a 10^6-lookup soak (~5 minutes on 2 cores)
#   LOOKUPS=20000 SOAK=20000 RECORD=0 bench/run.sh     a quick check of the runner, nothing recorded
#   WORKERS=2 bench/run.sh            the same with `server.workers: 2` (in a temporary copy of the config)
#   ONLY=socketmap,idle bench/run.sh  some groups only: socketmap, policy, cached, idle, soak
#
# Settings (environment or the same-named options of bench/run.py, e.g. --lookups 20000 --no-record):
#   LOOKUPS (per run, default 100000), SOAK (default 1000000), IDLE (default 1000), WARMUP (default 2000),
#   WORKERS (default: as configured), ONLY, LABEL (words for the heading), RECORD=0, KIT (../shared/bench),
#   PY (.venv/bin/python).
# Needs Debian's nginx. The runner stops whatever it started; this trap also catches a runner killed hard.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
PY=${PY:-$ROOT/.venv/bin/python}  # the runner reads PY and KIT from the environment too, same defaults
KIT=${KIT:-$ROOT/../shared/bench}
export RUNDIR=${TMPDIR:-/tmp}/pfxhttp-bench-nginx
BENCH_STATE=$(mktemp -d "${TMPDIR:-/tmp}/pfxhttp-bench-run.XXXXXX")
export BENCH_STATE

cleanup() {
  # bench/run.py removes these files once it has stopped what they name; any left mean it could not.
  for helper in pfxload idle; do
    if [ -s "$BENCH_STATE/$helper.pid" ]; then kill "$(cat "$BENCH_STATE/$helper.pid")" 2>/dev/null || true; fi
  done
  if [ -s "$BENCH_STATE/daemon.pid" ]; then
    # The daemon leads its own process group (its workers are in it): signal that group by its id.
    kill -TERM "-$(cat "$BENCH_STATE/daemon.pid")" 2>/dev/null || true
  fi
  # nginx only if this run started it and it is still that one (the pid file names the same master).
  if [ -s "$BENCH_STATE/nginx.started" ] && [ "$(cat "$RUNDIR/nginx.pid" 2>/dev/null)" = "$(cat "$BENCH_STATE/nginx.started")" ]; then
    "$KIT/nginx.sh" stop >/dev/null 2>&1 || true
  fi
  rm -rf "$BENCH_STATE"
}
trap cleanup EXIT

# In the background so that a signal to this script reaches the runner at once (as SIGTERM: a background
# job of a non-interactive shell ignores SIGINT); the runner then stops everything and exits.
"$PY" "$HERE/run.py" "$@" &
RUNNER=$!
stop() {
  kill -TERM "$RUNNER" 2>/dev/null || true
  wait "$RUNNER" 2>/dev/null || true
  exit "$1"
}
trap 'stop 130' INT
trap 'stop 143' TERM
trap 'stop 129' HUP
status=0
wait "$RUNNER" || status=$?
exit "$status"
