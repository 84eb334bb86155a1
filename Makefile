# Weft's developer entry points. `make quickstart` and `make test` are the
# two commands the README starts with; .ci/run runs `make test` and `make lint`.

CARGO ?= cargo
WASM_TARGET := wasm32-wasip2
WASM_DIR := target/wasm-filters
# proxy-wasm filters (examples/proxy-wasm): core modules, a workspace of their own.
PROXY_WASM_TARGET := wasm32-wasip1
PROXY_WASM_MANIFEST := --manifest-path examples/proxy-wasm/Cargo.toml
PROXY_WASM_DIR := target/proxy-wasm
# Every workspace crate but the host-only ones (the `weft` binary, the proxy, the control-plane
# protocol and library, the demo upstream, the test harness, the SDK macros,
# the bench load generator and the control-plane bench) is a filter component.
FILTER_CRATES := --workspace --exclude weft --exclude weft-cli --exclude weft-api --exclude weft-control --exclude weft-demo-upstream --exclude weft-test-harness --exclude weft-sdk-macros --exclude weft-loadgen --exclude weft-cp-bench

.PHONY: setup build filters quickstart mesh test lint metrics-checkers

## setup: install the Wasm targets filters are built for (components, and
## core modules for the proxy-wasm filters).
setup:
	rustup target add $(WASM_TARGET) $(PROXY_WASM_TARGET)

## build: the proxy and the demo upstream (release).
build:
	$(CARGO) build --release -p weft-cli -p weft-demo-upstream

## filters: every built-in and example filter, into target/wasm-filters; the
## proxy-wasm examples into target/proxy-wasm/wasm32-wasip1/release.
filters: setup
	$(CARGO) build --target $(WASM_TARGET) --profile filter --target-dir $(WASM_DIR) $(FILTER_CRATES)
	$(CARGO) build $(PROXY_WASM_MANIFEST) --workspace --target $(PROXY_WASM_TARGET) --release --target-dir $(PROXY_WASM_DIR)

## quickstart: set up, build, and run weft in front of the demo upstream.
quickstart: setup build filters
	./examples/quickstart/run.sh

## mesh: a control plane and two proxies of one group (examples/mesh).
mesh: setup build filters
	./examples/mesh/run.sh

## test: the whole test suite (unit and end-to-end). The metrics checks
## need promtool and the OpenMetrics parser: installed here (Debian's
## packages), and required by the tests.
test: setup metrics-checkers
	WEFT_REQUIRE_PROMTOOL=1 WEFT_REQUIRE_OPENMETRICS_PARSER=1 $(CARGO) test --release --workspace

## metrics-checkers: promtool and python3's prometheus_client (apt-get as root).
metrics-checkers:
	@if ! command -v promtool >/dev/null || ! /usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus python3-prometheus-client; \
	fi

## lint: formatting and clippy, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt $(PROXY_WASM_MANIFEST) --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) --profile filter --target-dir $(WASM_DIR) $(FILTER_CRATES) -- -D warnings
	$(CARGO) clippy $(PROXY_WASM_MANIFEST) --workspace --all-targets --target $(PROXY_WASM_TARGET) --release --target-dir $(PROXY_WASM_DIR) -- -D warnings
