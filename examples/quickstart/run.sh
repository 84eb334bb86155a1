#!/usr/bin/env bash
# Runs the demo upstream on 127.0.0.1:9000 and weft on 127.0.0.1:8080 with
# examples/quickstart/weft.yaml until Ctrl-C. Expects `make build filters`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
"$root/target/release/weft-demo-upstream" --listen 127.0.0.1:9000 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT INT TERM
"$root/target/release/weft" validate --config "$root/examples/quickstart/weft.yaml"
cat <<'TXT'

weft is starting on http://127.0.0.1:8080 — try, from another terminal:
  curl -i http://127.0.0.1:8080/hello
  curl -i http://127.0.0.1:8080/api/orders                              # 401: no API key
  curl -i -H 'x-api-key: wrong' http://127.0.0.1:8080/api/orders        # 403
  curl -i -H 'x-api-key: quickstart-key' http://127.0.0.1:8080/api/orders
  curl -i http://127.0.0.1:8080/anything                                # x-served-by and x-request-id from the headers filter
Press Ctrl-C to stop.

TXT
"$root/target/release/weft" run --config "$root/examples/quickstart/weft.yaml" --watch
