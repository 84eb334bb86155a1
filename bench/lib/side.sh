# Sourced by bench/ab.sh and bench/instructions.sh: a scratch directory
# removed on exit with the processes started into PIDS, and the nginx
# upstream on 127.0.0.1:18000 (bench/configs/nginx-upstream.conf), started
# on core 0 unless one already answers. Needs ROOT and NAME set.

RUN=$(mktemp -d "/tmp/weft-$NAME.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT

# The bench configs' API key (bench/configs/weft-chain.yaml).
KEY='x-api-key: bench-key-0123456789'
mkdir -p "$RUN/up/tmp"
if ! curl -s -o /dev/null --max-time 1 http://127.0.0.1:18000/; then
    taskset -c 0 nginx -p "$RUN/up/" -c "$ROOT/bench/configs/nginx-upstream.conf" -e stderr \
        >/dev/null 2>&1 &
    PIDS+=("$!")
fi
