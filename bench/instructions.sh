#!/usr/bin/env bash
# bench/instructions.sh — the proxy's instructions per request, counted by
# callgrind: repeatable to a fraction of a percent whatever else the machine
# runs, where timings drift by several.
#
#   bench/instructions.sh [--requests N] [--out FILE] WEFT[:CONFIG] ...
#
# Per WEFT[:CONFIG] (CONFIG defaults to bench/configs/weft-chain.yaml): starts
# the proxy under valgrind with one worker, sends 1000 warm-up requests, then
# counts the user-space instructions of N more (default 5000), one after the
# other on one keep-alive connection (curl). Prints instructions per
# request. `--out FILE` keeps the callgrind profile (FILE.1, FILE.2, … per
# side) for `callgrind_annotate`; with WEFT_WASM_PROFILER=perfmap in the
# environment, /tmp/perf-PID.map names the filters' compiled functions.
#
# The proxy runs with WEFT_WASM_ALLOCATOR=on-demand: valgrind cannot map the
# instance pool's address-space reservation. Builds from before that switch
# need the same change to run here.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=5000 OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) REQUESTS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -*) echo "bench/instructions.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
for tool in valgrind callgrind_control curl nginx taskset; do
    command -v "$tool" >/dev/null || { echo "bench/instructions.sh: needs $tool (bench/run.sh --install; apt-get install valgrind)" >&2; exit 1; }
done

NAME=instructions
# shellcheck source=bench/lib/side.sh
. "$ROOT/bench/lib/side.sh"

side=0
for spec in "$@"; do
    side=$((side + 1))
    bin=${spec%%:*} config=${spec#*:}
    [ "$config" = "$spec" ] && config=$ROOT/bench/configs/weft-chain.yaml
    port=$(awk '/listen: 127.0.0.1:/ && !/admin/ {sub(/.*127.0.0.1:/, ""); sub(/[^0-9].*/, ""); print; exit}' "$config")
    profile=${OUT:+$OUT.$side}
    profile=${profile:-$RUN/callgrind.$side}
    WEFT_WASM_ALLOCATOR=on-demand WEFT_MODULE_CACHE="$RUN/module-cache" \
        taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$profile" \
        "$bin" run --config "$config" --workers 1 >"$RUN/weft.$side.log" 2>&1 &
    pid=$!
    code=
    # Under valgrind the proxy compiles its filters for a minute or more.
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { echo "bench/instructions.sh: $bin exited; its log:" >&2; tail -5 "$RUN/weft.$side.log" >&2; exit 1; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -H "$KEY" "http://127.0.0.1:$port/" || true)
        [ "$code" = 200 ] && break
        sleep 0.5
    done
    [ "$code" = 200 ] || { echo "bench/instructions.sh: $bin did not answer 200 on port $port" >&2; exit 1; }
    taskset -c 0 curl -s -o /dev/null -H "$KEY" "http://127.0.0.1:$port/bench?warm=[1-1000]"
    callgrind_control -i on "$pid" >/dev/null 2>&1
    taskset -c 0 curl -s -o /dev/null -w '%{http_code}\n' -H "$KEY" \
        "http://127.0.0.1:$port/bench?n=[1-$REQUESTS]" >"$RUN/codes"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    kill -TERM "$pid"
    wait "$pid" || true
    ok=$(grep -c '^200$' "$RUN/codes" || true)
    [ "$ok" = "$REQUESTS" ] || { echo "bench/instructions.sh: $ok of $REQUESTS requests got 200" >&2; exit 1; }
    ir=$(awk '/Collected :/ {gsub(",", ""); print $NF}' "$RUN/weft.$side.log" | tail -1)
    awk -v s="$spec" -v ir="$ir" -v n="$REQUESTS" \
        'BEGIN { printf "%s: %.0f instructions per request\n", s, ir / n }'
done
