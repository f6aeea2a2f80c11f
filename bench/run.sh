#!/bin/sh
# Spine benchmark: nginx (fixed JSON) <- pfxhttp (one process) <- pfxload, over loopback.
#   bench/run.sh [SECONDS]     results are appended to bench/results.jsonl and printed
#   KEYS=N bench/run.sh ...    distinct keys of the cached runs (default 5000)
# Needs Debian's nginx and ../shared/bench (pfxload, nginx.sh) beside the checkout.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
KIT=${KIT:-$ROOT/../shared/bench}
SECS=${1:-10}
PY=${PY:-$ROOT/.venv/bin/python}
OUT=$HERE/results.jsonl
export RUNDIR=${TMPDIR:-/tmp}/pfxhttp-bench-nginx

"$KIT/nginx.sh" start >/dev/null
"$PY" -m pfxhttp --config "$HERE/pfxhttp-bench.yml" 2>"$HERE/daemon.log" &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null; wait $DAEMON 2>/dev/null; "$KIT/nginx.sh" stop >/dev/null' EXIT INT TERM
sleep 1.5
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
for c in 1 8 64; do
  "$KIT/bin/pfxload" -mode socketmap -addr 127.0.0.1:23460 -map demo_map -c "$c" -d "${SECS}s" -keys 1000000 \
    -expect 'OK ok@example.com' -pid "$DAEMON" -q -json "$OUT" -label "spine socketmap c=$c $rev"
done
# Cached: keys cycle through KEYS distinct values; with ~20 requests per key per run that is >= 95% hits.
KEYS=${KEYS:-5000}
for c in 8 64; do
  "$KIT/bin/pfxload" -mode socketmap -addr 127.0.0.1:23460 -map cached_map -c "$c" -d "${SECS}s" -keys "$KEYS" \
    -expect 'OK ok@example.com' -pid "$DAEMON" -q -json "$OUT" -label "cached socketmap c=$c keys=$KEYS $rev"
done
for c in 8 64; do
  "$KIT/bin/pfxload" -mode policy -addr 127.0.0.1:23461 -c "$c" -d "${SECS}s" \
    -expect 'action=DUNNO' -pid "$DAEMON" -q -json "$OUT" -label "spine policy c=$c $rev"
done
