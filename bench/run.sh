#!/usr/bin/env bash
# bench/run.sh — Weft side by side with the no-proxy limit, nginx and haproxy,
# in one run. See bench/README.md.
#
#   bench/run.sh [--install] [--duration S] [--rounds N] [--quick] [options]
#
# Starts on 127.0.0.1: a fast upstream, Weft without filters, Weft with the
# four-filter Wasm chain, Weft sending to the upstream over HTTP/2 (h2c),
# and (when installed) nginx and haproxy doing the
# same work natively, and Weft and nginx terminating TLS; loads each in interleaved rounds with wrk, weft-loadgen
# (a fixed rate) and h2load,
# pinning the proxy under test to one core and the load generator and the
# upstream to another; writes a table of medians to bench/RESULTS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
CONF=$BENCH/configs
ORIG_CMD="bench/run.sh${*:+ $*}"

usage() {
    cat <<'EOF'
usage: bench/run.sh [options]

  --install            apt-get install -y nginx haproxy wrk nghttp2-client first
  --duration S         seconds per measured run (default 10; --quick: 2)
  --rounds N           interleaved rounds (default 3; --quick: 1)
  --warmup S           seconds of unrecorded load per target first (default 3; --quick: 1)
  --quick              smoke test: short runs, one round (not a measurement)
  --targets LIST       comma-separated subset of:
                       direct,weft,weft-chain,nginx,nginx-chain,haproxy,haproxy-chain,
                       weft-tls,nginx-tls,weft-h2up
  --connections N      wrk connections for the throughput runs (default 50)
  --tls-new-connections N
                       wrk connections of the new-TLS-connection runs (default 10)
  --rate R             requests/s of the fixed-rate runs, over 10 connections
                       (default 5000; 0: no fixed-rate runs)
  --no-h2              skip the HTTP/2 (h2load) runs
  --no-build           use the built binaries and filters as they are
  --upstream KIND      nginx (default when installed) or demo (weft-demo-upstream)
  --proxy-cpu LIST     cores for the proxy under test (default 1)
  --load-cpu LIST      cores for the load generator and the upstream (default 0)
  --out FILE           where to write the results (default bench/RESULTS.md)
  --keep               keep the run directory (logs, raw data) afterwards
  -h, --help           this text
EOF
}

DURATION="" ROUNDS="" WARMUP="" QUICK=0 INSTALL=0 BUILD=1 H2=1 KEEP=0
TARGETS_ARG="" UPSTREAM=auto CONNS=50 TLS_NEW_CONNS=10 H2_CONNS=10 H2_STREAMS=10 RATE=5000 RATE_CONNS=10
PROXY_CPU=1 LOAD_CPU=0 OUT=$BENCH/RESULTS.md
while [ $# -gt 0 ]; do
    case "$1" in
        --install) INSTALL=1 ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
        --warmup) WARMUP=${2:?--warmup needs seconds}; shift ;;
        --quick) QUICK=1 ;;
        --targets) TARGETS_ARG=${2:?--targets needs a list}; shift ;;
        --connections) CONNS=${2:?--connections needs a number}; shift ;;
        --tls-new-connections) TLS_NEW_CONNS=${2:?--tls-new-connections needs a number}; shift ;;
        --rate) RATE=${2:?--rate needs requests per second}; shift ;;
        --no-h2) H2=0 ;;
        --no-build) BUILD=0 ;;
        --upstream) UPSTREAM=${2:?--upstream needs nginx or demo}; shift ;;
        --proxy-cpu) PROXY_CPU=${2:?--proxy-cpu needs a core list}; shift ;;
        --load-cpu) LOAD_CPU=${2:?--load-cpu needs a core list}; shift ;;
        --out) OUT=${2:?--out needs a file}; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DURATION=${DURATION:-2} ROUNDS=${ROUNDS:-1} WARMUP=${WARMUP:-1}
else
    DURATION=${DURATION:-10} ROUNDS=${ROUNDS:-3} WARMUP=${WARMUP:-3}
fi
for n in "$DURATION" "$ROUNDS" "$WARMUP" "$CONNS" "$RATE" "$TLS_NEW_CONNS"; do
    case "$n" in ''|*[!0-9]*) echo "bench/run.sh: not a whole number: $n" >&2; exit 2 ;; esac
done
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$CONNS" -ge 1 ] || {
    echo "bench/run.sh: --duration, --rounds and --connections must be at least 1" >&2; exit 2; }

say() { printf '[bench] %s\n' "$*"; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- install
if [ "$INSTALL" = 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    say "installing nginx haproxy wrk nghttp2-client (apt-get)"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy wrk nghttp2-client >/dev/null
fi
for tool in wrk taskset curl awk; do
    have "$tool" || die "$tool is needed (bench/run.sh --install installs wrk; taskset is in util-linux)"
done
if [ "$H2" = 1 ] && ! have h2load; then
    say "h2load not installed (nghttp2-client): skipping the HTTP/2 runs"
    H2=0
fi
taskset -c "$PROXY_CPU" true 2>/dev/null || die "cannot pin to core(s) $PROXY_CPU (--proxy-cpu); this machine has $(nproc) cores"
taskset -c "$LOAD_CPU" true 2>/dev/null || die "cannot pin to core(s) $LOAD_CPU (--load-cpu)"
# Cores given to the proxy: its worker count.
PROXY_CORES=$(taskset -c "$PROXY_CPU" nproc)

if [ "$UPSTREAM" = auto ]; then
    if have nginx; then UPSTREAM=nginx; else UPSTREAM=demo; fi
fi
case "$UPSTREAM" in nginx|demo) ;; *) die "--upstream must be nginx or demo" ;; esac
[ "$UPSTREAM" = demo ] || have nginx || die "--upstream nginx needs nginx (bench/run.sh --install)"

# ---------------------------------------------------------------- build
WEFT=${WEFT_BIN:-$ROOT/target/release/weft}
LOADGEN=$ROOT/target/release/weft-loadgen
DEMO=$ROOT/target/release/weft-demo-upstream
FILTER_DIR=$ROOT/target/wasm-filters/wasm32-wasip2/filter
if [ "$BUILD" = 1 ]; then
    have cargo || die "cargo is needed to build weft (or pass --no-build)"
    say "building weft (release) and the filters (cargo skips what is up to date)"
    pkgs=(-p weft-cli -p weft-loadgen)
    [ "$UPSTREAM" = demo ] && pkgs+=(-p weft-demo-upstream)
    (cd "$ROOT" && cargo build --release "${pkgs[@]}")
    if have rustup && ! rustup target list --installed | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2
    fi
    (cd "$ROOT" && cargo build --target wasm32-wasip2 --profile filter --target-dir target/wasm-filters \
        -p weft-filter-api-key -p weft-filter-rate-limit -p weft-filter-headers -p weft-filter-telemetry)
fi
[ -x "$WEFT" ] || die "$WEFT is missing: run without --no-build, or make build"
# The source the binaries were built from, taken now: the tree may change
# during a long run.
SOURCE=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
[ "$RATE" = 0 ] || [ -x "$LOADGEN" ] || die "$LOADGEN is missing: cargo build --release -p weft-loadgen (or --rate 0)"
[ "$UPSTREAM" = nginx ] || [ -x "$DEMO" ] || die "$DEMO is missing: cargo build --release -p weft-demo-upstream"
for f in api_key rate_limit headers telemetry; do
    [ -f "$FILTER_DIR/$f.wasm" ] || die "$FILTER_DIR/$f.wasm is missing: run make filters (or drop --no-build)"
done

# ---------------------------------------------------------------- targets
API_KEY=bench-key-0123456789
ALL_TARGETS="direct weft weft-chain nginx nginx-chain haproxy haproxy-chain weft-tls nginx-tls weft-h2up"
declare -A PORT=([direct]=18000 [weft]=18010 [weft-chain]=18011 [nginx]=18020 [nginx-chain]=18021
                 [haproxy]=18030 [haproxy-chain]=18031 [weft-tls]=18012 [nginx-tls]=18024
                 [weft-h2up]=18013)
declare -A H2PORT=([weft]=18010 [weft-chain]=18011 [nginx]=18022 [nginx-chain]=18023
                   [haproxy]=18032 [haproxy-chain]=18033 [weft-h2up]=18013)
[ "$UPSTREAM" = nginx ] && H2PORT[direct]=18001
declare -A WHAT=([direct]="no proxy: load generator → upstream (the limit)"
                 [weft]="Weft, no filters"
                 [weft-chain]="Weft, Wasm chain api-key → rate-limit → headers → telemetry"
                 [nginx]="nginx, plain proxy"
                 [nginx-chain]="nginx, same work natively"
                 [haproxy]="haproxy, plain proxy"
                 [haproxy-chain]="haproxy, same work natively"
                 [weft-tls]="Weft, no filters, terminating TLS"
                 [nginx-tls]="nginx, plain proxy, terminating TLS"
                 [weft-h2up]="Weft, no filters, HTTP/2 (h2c) to the upstream")
declare -A CONFNAME=([weft]=weft-plain.yaml [weft-chain]=weft-chain.yaml [nginx]=nginx-plain.conf
                     [nginx-chain]=nginx-chain.conf [haproxy]=haproxy-plain.cfg [haproxy-chain]=haproxy-chain.cfg
                     [weft-tls]=weft-tls.yaml [nginx-tls]=nginx-tls.conf [weft-h2up]=weft-h2up.yaml)
declare -A CHECK_SAW=([weft-chain]=weft [nginx-chain]=nginx [haproxy-chain]=haproxy)
TARGETS=()
wanted="${TARGETS_ARG//,/ }"
for t in ${wanted:-$ALL_TARGETS}; do
    case " $ALL_TARGETS " in *" $t "*) ;; *) die "unknown target $t (known: $ALL_TARGETS)" ;; esac
    case "$t" in
        nginx*) have nginx || { say "nginx not installed: skipping $t (--install)"; continue; } ;;
        haproxy*) have haproxy || { say "haproxy not installed: skipping $t (--install)"; continue; } ;;
    esac
    TARGETS+=("$t")
done
[ ${#TARGETS[@]} -gt 0 ] || die "no target to run"
is_target() { case " ${TARGETS[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# TLS targets serve HTTPS on their port and run only the TLS loads.
is_tls() { case "$1" in *-tls) return 0 ;; *) return 1 ;; esac; }
any_tls() { local t; for t in "${TARGETS[@]}"; do is_tls "$t" && return 0; done; return 1; }
scheme() { if is_tls "$1"; then echo https; else echo http; fi; }
# Whether load `mode` applies to target `t`.
applies() { # mode target
    case "$1" in
        tls-*) is_tls "$2" ;;
        h2) ! is_tls "$2" && [ -n "${H2PORT[$2]:-}" ] ;;
        *) ! is_tls "$2" ;;
    esac
}

ports=(18000)
is_target weft-chain && ports+=(18019)
{ [ "$UPSTREAM" = nginx ] || is_target weft-h2up; } && ports+=(18001)
for t in "${TARGETS[@]}"; do
    ports+=("${PORT[$t]}")
    [ -n "${H2PORT[$t]:-}" ] && ports+=("${H2PORT[$t]}")
done
for p in "${ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "127.0.0.1:$p is already in use: stop what listens there (bench/run.sh uses ports 18000-18033)"
    fi
done

# ---------------------------------------------------------------- processes
RUN=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
STARTED=()          # pids this script started (each the root of its process tree)
LOADPID=""
declare -A PID      # target (or "upstream") → pid
declare -A LOGFILE  # target → its access log (lines counted, then truncated)
declare -A CIPHER   # TLS target → the TLS version and cipher curl negotiated
TLS_DIR=$RUN/tls    # the TLS targets' certificate and key

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [ -n "$LOADPID" ] && kill "$LOADPID" 2>/dev/null || true
    for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for p in "${STARTED[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            for c in $(tree_pids "$p"); do kill -KILL "$c" 2>/dev/null || true; done
        fi
    done
    wait 2>/dev/null || true
    if [ "$status" != 0 ] || [ "$KEEP" = 1 ]; then
        echo "bench/run.sh: logs and raw data kept in $RUN" >&2
    else
        rm -rf "$RUN"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A process and its descendants.
tree_pids() {
    local p=$1 c
    [ -d "/proc/$p" ] || return 0
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}
# "utime stime" (clock ticks) of a process tree.
cpu_ticks() {
    local user=0 sys=0 p stat rest
    for p in $(tree_pids "$1"); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        # shellcheck disable=SC2086
        set -- $rest
        user=$((user + ${12})) sys=$((sys + ${13}))
    done
    echo "$user $sys"
}
# VmRSS (KiB) of a process tree.
rss_kib() {
    local sum=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
CLK_TCK=$(getconf CLK_TCK)
# CPU seconds per 10k requests from clock ticks.
per10k() { # ticks requests
    awk -v d="$1" -v hz="$CLK_TCK" -v r="$2" \
        'BEGIN{ if (r > 0) printf "%.4f", d / hz / r * 10000; else print "NA" }'
}

wait_ready() { # name port pid
    local name=$1 port=$2 pid=$3 code
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$RUN/$name"/*.log >&2 2>/dev/null || true
            die "$name exited while starting (logs above, in $RUN/$name)"
        }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --insecure "$(scheme "$name")://127.0.0.1:$port/" || true)
        [ "$code" != 000 ] && [ -n "$code" ] && return 0
        sleep 0.1
    done
    die "$name did not answer on 127.0.0.1:$port within 60 s (logs in $RUN/$name)"
}

start_upstream() {
    local dir=$RUN/upstream
    mkdir -p "$dir/tmp"
    if [ "$UPSTREAM" = nginx ]; then
        taskset -c "$LOAD_CPU" nginx -p "$dir/" -c "$CONF/nginx-upstream.conf" -e stderr \
            >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
    else
        taskset -c "$LOAD_CPU" "$DEMO" --listen 127.0.0.1:18000 >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
    fi
    PID[upstream]=$!
    STARTED+=("$!")
    wait_ready upstream 18000 "${PID[upstream]}"
    # nginx serves h2c on 18001 too; the demo needs a second process for it.
    if [ "$UPSTREAM" = demo ] && is_target weft-h2up; then
        taskset -c "$LOAD_CPU" "$DEMO" --listen 127.0.0.1:18001 --h2c \
            >>"$dir/stdout-h2c.log" 2>>"$dir/stderr-h2c.log" &
        PID[upstream-h2c]=$!
        STARTED+=("$!")
        wait_ready upstream 18001 "${PID[upstream-h2c]}"
    fi
}

start_target() {
    local t=$1 dir=$RUN/$1
    case "$t" in
        direct) PID[$t]=${PID[upstream]}; return 0 ;;
    esac
    mkdir -p "$dir/tmp"
    local conf=$CONF/${CONFNAME[$t]:-}
    if is_tls "$t"; then
        # The certificate's paths are the run directory's.
        sed "s|@TLS_DIR@|$TLS_DIR|g" "$conf" >"$dir/${CONFNAME[$t]}"
        conf=$dir/${CONFNAME[$t]}
    fi
    case "$t" in
        weft|weft-chain|weft-tls|weft-h2up)
            "$WEFT" validate --config "$conf" >/dev/null || die "$conf does not validate"
            # The access log (telemetry filter) is written to the proxy's log, stderr.
            LOGFILE[$t]=$dir/access.log
            taskset -c "$PROXY_CPU" \
                "$WEFT" run --config "$conf" --workers "$PROXY_CORES" --log-level info >>"$dir/stdout.log" 2>>"${LOGFILE[$t]}" &
            ;;
        nginx|nginx-chain|nginx-tls)
            LOGFILE[$t]=$dir/access.log
            taskset -c "$PROXY_CPU" nginx -p "$dir/" -c "$conf" -e stderr \
                >>"$dir/stdout.log" 2>>"$dir/stderr.log" &
            ;;
        haproxy|haproxy-chain)
            LOGFILE[$t]=$dir/access.log
            taskset -c "$PROXY_CPU" haproxy -f "$CONF/${CONFNAME[$t]}" -db \
                >>"${LOGFILE[$t]}" 2>>"$dir/stderr.log" &
            ;;
    esac
    PID[$t]=$!
    STARTED+=("$!")
    wait_ready "$t" "${PORT[$t]}" "${PID[$t]}"
}

# The target does the work it is meant to: 200 with the key, and for the
# chains 401 without, 403 with a wrong one, the header added, the consumer
# named and the key stripped on the way upstream.
check_target() {
    local t=$1 url="$(scheme "$1")://127.0.0.1:${PORT[$1]}/bench" hdr=$RUN/check.hdr body=$RUN/check.body code seen
    local tls_args=()
    is_tls "$t" && tls_args=(--cacert "$TLS_DIR/cert.pem")
    code=$(curl -s -o "$body" -D "$hdr" -w '%{http_code}' --max-time 5 "${tls_args[@]}" \
        -H "x-api-key: $API_KEY" -H 'x-bench-check: 1' "$url" || true)
    [ "$code" = 200 ] || die "$t: GET $url with the key answered $code, not 200"
    if [ -n "${CHECK_SAW[$t]:-}" ]; then
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
        [ "$code" = 401 ] || die "$t: expected 401 without a key, got $code"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'x-api-key: wrong-key' "$url" || true)
        [ "$code" = 403 ] || die "$t: expected 403 with an unknown key, got $code"
    fi
    if [ "$UPSTREAM" = nginx ]; then
        seen=$(tr -d '\r' <"$hdr" | awk -F': ' 'tolower($1)=="x-saw-bench"{print $2}')
        [ "$seen" = "${CHECK_SAW[$t]:-}" ] || die "$t: the upstream saw x-bench '$seen', expected '${CHECK_SAW[$t]:-}'"
        if [ -n "${CHECK_SAW[$t]:-}" ]; then
            grep -qi '^x-saw-consumer: bench' "$hdr" || die "$t: the upstream did not get x-consumer: bench"
            ! grep -qi '^x-saw-api-key:' "$hdr" || die "$t: the API key was not stripped"
        fi
        if [ "$t" = weft-h2up ]; then
            grep -qi '^x-saw-protocol: HTTP/2' "$hdr" || die "$t: the upstream was not reached over HTTP/2"
        fi
    elif [ -n "${CHECK_SAW[$t]:-}" ]; then
        grep -q "\"x-bench\":\"${CHECK_SAW[$t]}\"" "$body" || die "$t: the upstream did not see x-bench: ${CHECK_SAW[$t]}"
    fi
    if [ "$H2" = 1 ] && [ -n "${H2PORT[$t]:-}" ]; then
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --http2-prior-knowledge \
            -H "x-api-key: $API_KEY" "http://127.0.0.1:${H2PORT[$t]}/bench" || true)
        [ "$code" = 200 ] || die "$t: HTTP/2 (prior knowledge) on port ${H2PORT[$t]} answered $code"
    fi
    if is_tls "$t"; then
        local version
        version=$(curl -s -o /dev/null -w '%{http_version}' --max-time 5 --http2 "${tls_args[@]}" \
            -H "x-api-key: $API_KEY" "$url" || true)
        [ "$version" = 2 ] || die "$t: HTTPS with ALPN h2 offered was answered over HTTP/$version"
        CIPHER[$t]=$(curl -sv -o /dev/null --max-time 5 --http1.1 "${tls_args[@]}" "$url" 2>&1 |
            sed -n 's/^\* SSL connection using //p' | head -n 1)
    fi
}

count_and_truncate_log() { # target → access log lines since the last call
    local f=${LOGFILE[$1]:-} n=0
    if [ -n "$f" ] && [ -f "$f" ]; then
        n=$(grep -c '"type":"access"' "$f" || true)
        : >"$f"
    fi
    echo "${n:-0}"
}

# ---------------------------------------------------------------- load
RUNS=$RUN/runs.tsv
printf 'mode\ttarget\tround\trps\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\tmean_us\terrors\tcpu_s_per_10k\tuser_s_per_10k\tsys_s_per_10k\trss_kib\trequests\tlog_lines\n' >"$RUNS"

# Runs the load generator in the background (so a signal reaches it), bounded.
load() { # outfile cmd...
    local out=$1
    shift
    taskset -c "$LOAD_CPU" timeout -k 5 $((DURATION + WARMUP + 30)) "$@" >"$out" 2>&1 &
    LOADPID=$!
    local status=0
    wait "$LOADPID" || status=$?
    LOADPID=""
    return "$status"
}

measure() { # mode target round
    local mode=$1 t=$2 round=$3 out=$RUN/last.out pid=${PID[$2]} c0 c1 requests
    local proxied=1
    [ "$t" = direct ] && proxied=0
    c0=$(cpu_ticks "$pid")
    case "$mode" in
        h1-c* | h1-rate | tls-c* | tls-new)
            if [ "$mode" = h1-rate ]; then
                load "$out" "$LOADGEN" --addr "127.0.0.1:${PORT[$t]}" --path /bench --rate "$RATE" \
                    --connections "$RATE_CONNS" --duration "$DURATION" \
                    --header "x-api-key: $API_KEY" --header 'user-agent: weft-loadgen-bench' ||
                    { cat "$out" >&2; die "weft-loadgen failed against $t"; }
            else
                # tls-new: every request on a new connection, a full TLS handshake each.
                local conns=${mode#*-c} extra=()
                [ "$mode" = tls-new ] && conns=$TLS_NEW_CONNS extra=(-H 'Connection: close')
                load "$out" wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s "${extra[@]}" -s "$BENCH/lib/wrk.lua" \
                    "$(scheme "$t")://127.0.0.1:${PORT[$t]}/bench" || { cat "$out" >&2; die "wrk failed against $t"; }
            fi
            c1=$(cpu_ticks "$pid")
            local line
            line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; die "no summary from the load generator against $t"; }
            # shellcheck disable=SC2034  # bytes: set from the summary line, not reported
            local requests duration_us connect_errors read_errors write_errors status_errors timeouts \
                p50_us p90_us p99_us p999_us max_us mean_us bytes
            local kv
            for kv in ${line#BENCH }; do local "${kv%%=*}=${kv#*=}"; done
            local errors=$((connect_errors + read_errors + write_errors + status_errors + timeouts))
            local rps
            rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN{printf "%.1f", r / (d / 1e6)}')
            ;;
        h2)
            load "$out" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" \
                -H "x-api-key: $API_KEY" -H 'user-agent: h2load-weft-bench' \
                "http://127.0.0.1:${H2PORT[$t]}/bench" || { cat "$out" >&2; die "h2load failed against $t"; }
            c1=$(cpu_ticks "$pid")
            local rps requests errors mean_us p50_us=NA p90_us=NA p99_us=NA p999_us=NA max_us=NA
            rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")
            # requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout
            requests=$(awk '/^requests:/ {print $8}' "$out")
            errors=$(awk '/^requests:/ {f=$10+$12+$14} /^status codes:/ {s=$5+$7+$9} END {print f+s}' "$out")
            mean_us=$(awk '/^time for request:/ {v=$6; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                       m=(u=="s")?1e6:(u=="ms")?1e3:1; printf "%.1f", v*m}' "$out")
            [ -n "$rps" ] && [ -n "$requests" ] || { cat "$out" >&2; die "cannot read h2load's output for $t"; }
            ;;
    esac
    local cpu10k=NA user10k=NA sys10k=NA rss=NA lines=NA
    if [ "$proxied" = 1 ]; then
        local u0 s0 u1 s1
        read -r u0 s0 <<<"$c0"
        read -r u1 s1 <<<"$c1"
        cpu10k=$(per10k $((u1 + s1 - u0 - s0)) "$requests")
        user10k=$(per10k $((u1 - u0)) "$requests")
        sys10k=$(per10k $((s1 - s0)) "$requests")
        rss=$(rss_kib "$pid")
        lines=$(count_and_truncate_log "$t")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$t" "$round" "$rps" \
        "$p50_us" "$p90_us" "$p99_us" "$p999_us" "$max_us" "$mean_us" "$errors" "$cpu10k" "$user10k" "$sys10k" "$rss" \
        "$requests" "$lines" >>"$RUNS"
    printf '[bench] %-6s %-14s round %s: %9s req/s  p50 %6s µs  p99 %6s µs  errors %s\n' \
        "$mode" "$t" "$round" "$rps" "$p50_us" "$p99_us" "$errors"
    [ "$errors" = 0 ] || say "WARNING: $t had $errors failed or non-2xx requests in this run"
    sleep 1
}

# ---------------------------------------------------------------- go
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "run directory $RUN"
say "pinning: proxies under test on core(s) $PROXY_CPU; load generator and upstream on core(s) $LOAD_CPU"
start_upstream
if any_tls; then
    have openssl || die "openssl is needed for the TLS targets (weft-tls, nginx-tls)"
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>"$TLS_DIR/openssl.log" ||
        die "openssl could not make the TLS certificate (see $TLS_DIR/openssl.log)"
fi
# Weft caches compiled filters on disk (module_cache): a first start compiles
# the chain's four filters, later starts map them. Start weft-chain once with
# a cold cache of its own to note that first start, then measure as a
# restarted proxy runs.
export WEFT_MODULE_CACHE=$RUN/module-cache
RSS_COLD=""
if is_target weft-chain; then
    start_target weft-chain
    sleep 1
    RSS_COLD=$(rss_kib "${PID[weft-chain]}")
    kill "${PID[weft-chain]}"; wait "${PID[weft-chain]}" 2>/dev/null || true
fi
for t in "${TARGETS[@]}"; do start_target "$t"; done
for t in "${TARGETS[@]}"; do check_target "$t"; done
say "every target answers as expected"
sleep 1
declare -A RSS_IDLE
for t in "${TARGETS[@]}"; do
    [ "$t" = direct ] && continue
    RSS_IDLE[$t]=$(rss_kib "${PID[$t]}")
done
WEFT_THREADS=""
for t in weft weft-chain weft-h2up; do
    is_target "$t" || continue
    WEFT_THREADS+="${WEFT_THREADS:+; }$t: $(cat /proc/"${PID[$t]}"/task/*/comm | sort | uniq -c | awk '{printf "%s%s×%s", sep, $1, $2; sep=", "}')"
done

MODES=("h1-c$CONNS" "h1-c1")
[ "$RATE" -gt 0 ] && MODES+=(h1-rate)
[ "$H2" = 1 ] && MODES+=(h2)
any_tls && MODES+=("tls-c$CONNS" tls-new)
if [ "$WARMUP" -gt 0 ]; then
    say "warm-up: ${WARMUP}s per target"
    for t in "${TARGETS[@]}"; do
        load "$RUN/warmup.out" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$BENCH/lib/wrk.lua" \
            "$(scheme "$t")://127.0.0.1:${PORT[$t]}/bench" || true
        count_and_truncate_log "$t" >/dev/null
    done
fi
for round in $(seq "$ROUNDS"); do
    for mode in "${MODES[@]}"; do
        for t in "${TARGETS[@]}"; do
            applies "$mode" "$t" || continue
            measure "$mode" "$t" "$round"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
# Weft's own account of its filter instances: created beyond the one per
# chain entry at load means requests waited for new ones; failures should be 0.
WEFT_METRICS=""
if is_target weft-chain; then
    WEFT_METRICS=$(curl -s --max-time 5 http://127.0.0.1:18019/metrics |
        grep -E '^weft_filter_(instances_created|failures)_total' || true)
fi

# ---------------------------------------------------------------- report
# median, min, max of column `col` over the runs of (mode, target); NA if none.
stat() { # mode target col
    awk -F'\t' -v m="$1" -v t="$2" -v col="$3" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        $1 == m && $2 == t && $c != "NA" { v[n++] = $c + 0 }
        END {
            if (n == 0) { print "NA NA NA"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
            med = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
            print med, v[0], v[n - 1]
        }' "$RUNS"
}
med() { stat "$@" | cut -d' ' -f1; }
# "median (min–max)" with a printf format; only the median for one round.
cell() { # mode target col format
    local s
    s=$(stat "$1" "$2" "$3")
    awk -v s="$s" -v f="$4" -v r="$ROUNDS" 'BEGIN {
        split(s, a, " ")
        if (a[1] == "NA") { print "—"; exit }
        out = sprintf(f, a[1])
        if (r > 1) out = out " (" sprintf(f, a[2]) "–" sprintf(f, a[3]) ")"
        print out }'
}
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k == "NA") print "—"; else printf "%.1f", k / 1024 }'; }
ratio() { # a b format → a/b
    awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "—"; else printf f, a / b }'
}
percent() { # a b → a/b in %
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b + 0 == 0) print "—"; else printf "%.1f%%", 100 * a / b }'
}
diff_us() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA") print "—"; else printf "%+.0f µs", a - b }'
}
# The cells of a latency table's row: req/s, p50, p99, p99.9, p50 added over
# direct's (`ref`), proxy CPU.
latency_cells() { # mode target ref
    local m=$1 t=$2 added=—
    [ "$t" = direct ] || added=$(diff_us "$(med "$m" "$t" p50_us)" "$3")
    echo "$(cell "$m" "$t" rps %.0f) | $(cell "$m" "$t" p50_us %.0f) | $(cell "$m" "$t" p99_us %.0f) | $(cell "$m" "$t" p999_us %.0f) | $added | $(cell "$m" "$t" cpu_s_per_10k %.3f)"
}

TP="h1-c$CONNS"
{
    if [ "$QUICK" = 1 ]; then
        echo "# Benchmark results — SMOKE RUN (--quick)"
        echo
        echo "**This is a smoke test of the harness (short runs, one round), not a measurement.**"
    else
        echo "# Benchmark results"
    fi
    echo
    echo "Produced by \`$ORIG_CMD\` on $(date -u '+%Y-%m-%d %H:%M UTC'); see [README.md](README.md) for the method."
    echo
    echo "## Machine"
    echo
    echo "- CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores (nproc)"
    echo "- kernel: $(uname -sr); memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "- load average (1/5/15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
    echo "- weft: $SOURCE, $("$WEFT" --version 2>/dev/null || true); $(rustc --version 2>/dev/null || true)"
    have nginx && echo "- $(nginx -v 2>&1)"
    have haproxy && echo "- $(haproxy -v 2>/dev/null | head -n 1)"
    echo "- $(wrk -v 2>&1 | head -n 1 || true)"
    [ "$H2" = 1 ] && echo "- $(h2load --version 2>&1 | head -n 1)"
    echo
    echo "## Setup"
    echo
    echo "- CPU pinning: each proxy under test runs on core(s) $PROXY_CPU (\`taskset -c $PROXY_CPU\`); the load generator and the upstream on core(s) $LOAD_CPU. Workers: nginx \`worker_processes 1\`, haproxy \`nbthread 1\`, Weft \`--workers $PROXY_CORES\`."
    echo "- Weft threads at start: ${WEFT_THREADS:-—}"
    echo "- Upstream: $( [ "$UPSTREAM" = nginx ] && echo 'nginx, 1 worker, a fixed 12-byte JSON answer, no log' || echo 'weft-demo-upstream (JSON echo of the request)'), on 127.0.0.1:18000$(is_target weft-h2up && echo '; weft-h2up sends to its h2c (prior knowledge) port 127.0.0.1:18001')."
    echo "- Load: wrk 1 thread, HTTP/1.1 keep-alive, closed loop: $CONNS connections (throughput) and 1 connection (latency).$( [ "$RATE" -gt 0 ] && echo " weft-loadgen (bench/loadgen), open loop: $RATE req/s over $RATE_CONNS connections.") Every request carries the API key, to every target.$( [ "$H2" = 1 ] && echo " h2load 1 thread, $H2_CONNS connections × $H2_STREAMS streams, h2c prior knowledge.")"
    echo "- ${DURATION} s per run, ${WARMUP} s warm-up per target first, $ROUNDS round(s) interleaved (every target in turn, then again). Medians, with min–max over the rounds when there are several."
    [ -n "$RSS_COLD" ] && echo "- Weft caches compiled filters on disk (\`module_cache\`, here in the run directory). RSS idle of weft-chain is that of a restart (cache warm); its first start, compiling the four filters, idled at $(mib "$RSS_COLD") MiB."
    echo "- Proxy CPU: utime+stime (user, system) of the proxy's processes (/proc/PID/stat) over the run, per 10k requests. RSS: VmRSS of the proxy's processes (nginx: master + worker), idle after start and the largest after a throughput run."
    echo
    echo "## HTTP/1.1, $CONNS connections (throughput)"
    echo
    echo "| target | what | req/s | p50 µs | p99 µs | p99.9 µs | proxy CPU s / 10k req | RSS idle MiB | RSS after load MiB | errors |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for t in "${TARGETS[@]}"; do
        is_tls "$t" && continue
        rss_after=$(stat "$TP" "$t" rss_kib | cut -d' ' -f3)
        echo "| $t | ${WHAT[$t]} | $(cell "$TP" "$t" rps %.0f) | $(cell "$TP" "$t" p50_us %.0f) | $(cell "$TP" "$t" p99_us %.0f) | $(cell "$TP" "$t" p999_us %.0f) | $(cell "$TP" "$t" cpu_s_per_10k %.3f) | $(mib "${RSS_IDLE[$t]:-}") | $(mib "$rss_after") | $(stat "$TP" "$t" errors | cut -d' ' -f3) |"
    done
    echo
    echo "## HTTP/1.1, 1 connection (latency)"
    echo
    echo "| target | req/s | p50 µs | p99 µs | p99.9 µs | p50 added over direct | proxy CPU s / 10k req |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    d50=$(med h1-c1 direct p50_us)
    for t in "${TARGETS[@]}"; do
        is_tls "$t" && continue
        echo "| $t | $(latency_cells h1-c1 "$t" "$d50") |"
    done
    if [ "$RATE" -gt 0 ]; then
        echo
        echo "## HTTP/1.1, fixed rate: $RATE req/s over $RATE_CONNS connections (latency, CPU for the same work)"
        echo
        echo "Open loop (\`weft-loadgen\`): each connection sends its requests at fixed times, the connections' times interleaved evenly; a request due while the previous answer is awaited counts its latency from when it was due. Every target gets the same requests at the same rate, so its CPU per request compares like for like: user time is the proxy's own work, system time mostly the kernel's TCP work and wake-ups."
        echo
        echo "| target | req/s | p50 µs | p99 µs | p99.9 µs | p50 added over direct | proxy CPU s / 10k req | user | system |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        r50=$(med h1-rate direct p50_us)
        for t in "${TARGETS[@]}"; do
            is_tls "$t" && continue
            echo "| $t | $(latency_cells h1-rate "$t" "$r50") | $(cell h1-rate "$t" user_s_per_10k %.3f) | $(cell h1-rate "$t" sys_s_per_10k %.3f) |"
        done
    fi
    if [ "$H2" = 1 ]; then
        echo
        echo "## HTTP/2 (h2c prior knowledge), $H2_CONNS connections × $H2_STREAMS streams"
        echo
        echo "Proxies talk HTTP/1.1 to the upstream (weft-h2up: HTTP/2); \`direct\` is h2load straight to the upstream's h2c port."
        echo
        echo "| target | req/s | mean µs | proxy CPU s / 10k req | errors |"
        echo "| --- | --- | --- | --- | --- |"
        for t in "${TARGETS[@]}"; do
            [ -n "${H2PORT[$t]:-}" ] || continue
            echo "| $t | $(cell h2 "$t" rps %.0f) | $(cell h2 "$t" mean_us %.0f) | $(cell h2 "$t" cpu_s_per_10k %.3f) | $(stat h2 "$t" errors | cut -d' ' -f3) |"
        done
    fi
    if any_tls; then
        TK="tls-c$CONNS"
        echo
        echo "## HTTPS (TLS termination)"
        echo
        echo "Both terminate TLS with the same ECDSA P-256 certificate (made with openssl for the run, in the run directory) and proxy plain HTTP/1.1 to the upstream, as \`weft\` and \`nginx\` above; both offer TLS 1.2 and 1.3, ALPN h2 and http/1.1, and session tickets, and use their default cipher order (the negotiated one is in the table). wrk (OpenSSL, HTTP/1.1, no session resumption): **keep-alive** ($TK), $CONNS connections, many requests each; **new connections** (tls-new), $TLS_NEW_CONNS connections each sending \`Connection: close\`, so that every request is a new TCP connection and a full TLS handshake (ECDHE key exchange and an ECDSA signature): its req/s is new TLS connections per second."
        echo
        echo "| target | load | req/s | p50 µs | p99 µs | proxy CPU s / 10k req | errors | negotiated |"
        echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
        for t in "${TARGETS[@]}"; do
            is_tls "$t" || continue
            for m in "$TK" tls-new; do
                echo "| $t | $m | $(cell "$m" "$t" rps %.0f) | $(cell "$m" "$t" p50_us %.0f) | $(cell "$m" "$t" p99_us %.0f) | $(cell "$m" "$t" cpu_s_per_10k %.3f) | $(stat "$m" "$t" errors | cut -d' ' -f3) | ${CIPHER[$t]:-—} |"
            done
        done
        if is_target weft-tls && is_target nginx-tls; then
            echo
            for m in "$TK" tls-new; do
                echo "- weft-tls vs nginx-tls, $m: throughput $(ratio "$(med "$m" weft-tls rps)" "$(med "$m" nginx-tls rps)" '%.2f×'), CPU per request $(ratio "$(med "$m" weft-tls cpu_s_per_10k)" "$(med "$m" nginx-tls cpu_s_per_10k)" '%.2f×')"
            done
        fi
    fi
    echo
    echo "## Ratios (of medians)"
    echo
    echo "Throughput: req/s at $CONNS connections. CPU: proxy CPU seconds per 10k requests at $CONNS connections$( [ "$RATE" -gt 0 ] && echo ", and user CPU per request at the fixed rate"). Latency: p50 at 1 connection."
    echo
    rate_head="" rate_sep=""
    [ "$RATE" -gt 0 ] && rate_head=" user CPU per request, $RATE req/s |" rate_sep=" --- |"
    echo "| comparison | throughput | CPU per request | p50 latency, 1 connection |$rate_head"
    echo "| --- | --- | --- | --- |$rate_sep"
    if is_target direct; then
        for t in "${TARGETS[@]}"; do
            [ "$t" = direct ] && continue
            is_tls "$t" && continue
            echo "| $t vs no proxy | $(percent "$(med "$TP" "$t" rps)" "$(med "$TP" direct rps)") of the limit | — | $(diff_us "$(med h1-c1 "$t" p50_us)" "$d50") |$( [ "$RATE" -gt 0 ] && echo " — |")"
        done
    fi
    for pair in "weft-chain nginx-chain" "weft-chain haproxy-chain" "weft nginx" "weft haproxy" "weft-chain weft" "weft-h2up weft"; do
        read -r a b <<<"$pair"
        is_target "$a" && is_target "$b" || continue
        echo "| $a vs $b | $(ratio "$(med "$TP" "$a" rps)" "$(med "$TP" "$b" rps)" '%.2f×') | $(ratio "$(med "$TP" "$a" cpu_s_per_10k)" "$(med "$TP" "$b" cpu_s_per_10k)" '%.2f×') | $(diff_us "$(med h1-c1 "$a" p50_us)" "$(med h1-c1 "$b" p50_us)") |$( [ "$RATE" -gt 0 ] && echo " $(ratio "$(med h1-rate "$a" user_s_per_10k)" "$(med h1-rate "$b" user_s_per_10k)" '%.2f×') |")"
    done
    echo
    echo "## Notes"
    echo
    echo "- The no-proxy limit shares core(s) $LOAD_CPU between wrk and the upstream, exactly as in the proxied runs: no proxy can exceed it here."
    echo "- The native configs do the chain's work with built-in features: the API key is compared as text (Weft's api-key checks a key's SHA-256 digest in constant time the first time and remembers an accepted key by a SipHash tag; its rate-limit keeps buckets in state shared by every worker, by the SHA-256 of the bucket key, remembered the same way). Weft's telemetry runs with \`trace: false, metrics: false\`: the native configs neither propagate \`traceparent\` nor keep Prometheus request metrics. Weft's access log goes through its log (stderr, redirected to a file), which a writer thread writes in batches (one write(2) per 10 ms); nginx batches its access log the same way (\`buffer=256k flush=10ms\`); haproxy writes one line per request."
    echo "- At 1 connection a proxied request crosses between cores $PROXY_CPU and $LOAD_CPU four times (a direct one never does), each a wake-up of an idle core: the added p50 includes that cost, the same for every proxy."
    echo "- Access log lines counted per run (raw data below) check that logging really happened."
    if [ -n "$WEFT_METRICS" ]; then
        echo "- weft-chain's filter instances after all runs (from its /metrics; one per chain entry is made at load, more only when concurrent requests needed them or one failed):"
        echo
        echo '```'
        echo "$WEFT_METRICS"
        echo '```'
    fi
    echo
    echo "<details><summary>Raw runs (runs.tsv)</summary>"
    echo
    echo '```'
    cat "$RUNS"
    echo '```'
    echo
    echo "</details>"
} >"$OUT.tmp"
# The control plane's section belongs to bench/control-plane (weft-cp-bench):
# keep it as it is.
if [ -f "$OUT" ] && grep -q '^<!-- control-plane:begin -->$' "$OUT"; then
    { echo; sed -n '/^<!-- control-plane:begin -->$/,/^<!-- control-plane:end -->$/p' "$OUT"; } >>"$OUT.tmp"
fi
mv "$OUT.tmp" "$OUT"
say "results written to $OUT"
echo
sed -n '/^## HTTP\/1.1, '"$CONNS"'/,/^## Notes/p' "$OUT" | sed '$d'
