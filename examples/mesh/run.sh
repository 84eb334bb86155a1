#!/usr/bin/env bash
# The mesh quickstart: the demo upstream on 127.0.0.1:9000, a control plane
# on 127.0.0.1:7070 and two proxies of group `web` on 127.0.0.1:8081 and
# :8082; pushes the api-key and headers filters, applies mesh.yaml, and
# runs until Ctrl-C. Expects `make build filters`. State goes under
# target/mesh-demo (removed at start).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
weft="$root/target/release/weft"
wasm="$root/target/wasm-filters/wasm32-wasip2/filter"
state="$root/target/mesh-demo"
export WEFT_CONTROL=http://127.0.0.1:7070
rm -rf "$state" && mkdir -p "$state"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM

"$root/target/release/weft-demo-upstream" --listen 127.0.0.1:9000 2>"$state/upstream.log" &
pids+=($!)
"$weft" control --listen 127.0.0.1:7070 --data "$state/cp-data" 2>"$state/control.log" &
pids+=($!)
for _ in $(seq 100); do "$weft" status >/dev/null 2>&1 && break; sleep 0.1; done

"$weft" push "$wasm/api_key.wasm" --name api-key
"$weft" push "$wasm/headers.wasm" --name headers
"$weft" apply -f "$root/examples/mesh/mesh.yaml" --group web

for i in 1 2; do
    "$weft" run --config "$root/examples/mesh/web-$i.yaml" --control "$WEFT_CONTROL" \
        --node "web-$i" --group web --cache "$state/cache-web-$i" 2>"$state/web-$i.log" &
    pids+=($!)
done
for _ in $(seq 100); do
    [ "$("$weft" status --group web --output json | grep -o '"serving_version":1' | wc -l)" = 2 ] && break
    sleep 0.1
done
"$weft" status

cat <<'TXT'

Two proxies of group web serve mesh.yaml (logs in target/mesh-demo). Try, from another terminal:
  curl -i http://127.0.0.1:8081/anything                                 # x-mesh-version: 1
  curl -i http://127.0.0.1:8082/api/orders                               # 401: no API key
  curl -i -H 'x-api-key: mesh-key' http://127.0.0.1:8082/api/orders      # 200
  sed 's/x-mesh-version: "1"/x-mesh-version: "2"/' examples/mesh/mesh.yaml > /tmp/mesh-v2.yaml
  target/release/weft apply -f /tmp/mesh-v2.yaml --group web --wait 10
  curl -i http://127.0.0.1:8081/anything                                 # x-mesh-version: 2, on both proxies
  target/release/weft status; target/release/weft modules
Press Ctrl-C to stop.

TXT
wait
