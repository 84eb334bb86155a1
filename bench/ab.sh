#!/usr/bin/env bash
# bench/ab.sh — two Weft builds (or two configs) head to head, interleaved.
#
#   bench/ab.sh [--rounds N] [--duration S] A_WEFT[:CONFIG] B_WEFT[:CONFIG]
#
# For before/after figures of a change to the request path: build the old
# binary aside (e.g. `git worktree`, or copy target/release/weft), then
# compare. CONFIG defaults to bench/configs/weft-chain.yaml (filters from
# `make filters`). Same method as bench/run.sh: the proxy on core 1 with one
# worker, wrk and the nginx upstream (bench/configs/nginx-upstream.conf) on
# core 0; per round and side: 2 s warm-up, a 50-connection throughput run, a
# 1-connection latency run. Prints every round and the means, with the
# proxy's CPU time per request of the throughput run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3 DURATION=5
while [ $# -gt 2 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        *) echo "bench/ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ $# -eq 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
for tool in wrk nginx taskset curl; do
    command -v "$tool" >/dev/null || { echo "bench/ab.sh: needs $tool (bench/run.sh --install)" >&2; exit 1; }
done

NAME=ab
# shellcheck source=bench/lib/side.sh
. "$ROOT/bench/lib/side.sh"

# side → one line: req/s  p50-at-1-connection(µs)
measure() {
    local bin=${1%%:*} config=${1#*:} port pid rps p50 i
    [ "$config" = "$1" ] && config=$ROOT/bench/configs/weft-chain.yaml
    port=$(awk '/listen: 127.0.0.1:/ && !/admin/ {sub(/.*127.0.0.1:/, ""); sub(/[^0-9].*/, ""); print; exit}' "$config")
    local workers=()
    # Builds from before `--workers` ran one tokio worker per allowed core.
    "$bin" run --help 2>/dev/null | grep -q -- --workers && workers=(--workers 1)
    taskset -c 1 "$bin" run --config "$config" "${workers[@]}" >>"$RUN/weft.log" 2>&1 &
    pid=$!
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { echo "bench/ab.sh: $bin exited; its log:" >&2; tail -5 "$RUN/weft.log" >&2; exit 1; }
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
    timeout 60 taskset -c 0 wrk -t1 -c50 -d2s -H "$KEY" "http://127.0.0.1:$port/" >/dev/null
    local ticks_before out ticks_after cpu
    ticks_before=$(cpu_ticks "$pid")
    out=$(timeout 60 taskset -c 0 wrk -t1 -c50 -d"${DURATION}s" -H "$KEY" "http://127.0.0.1:$port/")
    ticks_after=$(cpu_ticks "$pid")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    # The proxy's CPU time (user + system) per request of the throughput
    # run: less disturbed than req/s by whatever else the machine runs.
    cpu=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" \
        '/requests in/ {printf "%.2f", t / hz / $1 * 1e6}' <<<"$out")
    p50=$(timeout 60 taskset -c 0 wrk -t1 -c1 -d2s --latency -H "$KEY" "http://127.0.0.1:$port/" |
        awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /ms$/) {sub(/ms/,"",v); v*=1000}; print v}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rps $p50 $cpu"
}

# utime + stime of process $1, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

for r in $(seq "$ROUNDS"); do
    for side in A B; do
        if [ "$side" = A ]; then spec=$1; else spec=$2; fi
        line=$(measure "$spec")
        echo "round $r $side $line"
    done
done | tee "$RUN/rounds" | awk '{ printf "%s %s: %8.0f req/s  p50 %5.0f µs (1 connection)  CPU %6.2f µs/request\n", $2, $3, $4, $5, $6 }'
awk '{ n[$3]++; rps[$3]+=$4; p50[$3]+=$5; cpu[$3]+=$6 }
     END { for (s in n) printf "mean %s: %8.0f req/s  p50 %5.0f µs  CPU %6.2f µs/request\n", s, rps[s]/n[s], p50[s]/n[s], cpu[s]/n[s];
           if (rps["A"] > 0) printf "B/A throughput: %.2f×\n", rps["B"]/rps["A"];
           if (cpu["A"] > 0) printf "B/A CPU per request: %.2f×\n", cpu["B"]/cpu["A"] }' "$RUN/rounds" | sort
