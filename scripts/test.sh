#!/usr/bin/env bash
# Runs every check and test: proto lint and format (buf), rustfmt and clippy, then the Rust unit and end-to-end
# tests on both databases, through real Omega and Envoy processes. Needs PostgreSQL at
# OMEGA_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-tools.sh
buf=.tools/node_modules/.bin/buf
echo "buf lint + format…" >&2
"$buf" lint
"$buf" format --diff --exit-code

echo "rustfmt + clippy…" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

export OMEGA_TEST_ENVOY="$PWD/.venv/bin/envoy"
cargo test --workspace --all-targets --no-fail-fast "$@"

# The benchmark in a tiny configuration: it must run, its figures are not judged here.
echo "benchmark smoke run…" >&2
cargo run --quiet --bin omega-bench -- --messages 20 --workers 2 --out target/bench/smoke.json >/dev/null
