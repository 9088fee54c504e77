#!/usr/bin/env bash
# Runs every check and test: proto lint and format (buf), rustfmt and clippy, then the Rust unit and end-to-end
# tests on both databases, through real Omega and Envoy processes, and schemathesis over the OpenAPI. Needs PostgreSQL at
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

# The generated OpenAPI document against the OpenAPI 3.0 specification (a standard validator).
echo "openapi-spec-validator…" >&2
cargo build --quiet --bin omega
mkdir -p target
target/debug/omega openapi --out target/openapi.json
.venv/bin/openapi-spec-validator target/openapi.json

# The REST surface fuzzed from the generated OpenAPI through the real Envoy: no 5xx, no undeclared
# content types.
echo "schemathesis over the OpenAPI…" >&2
cargo build --quiet --bin omega
./scripts/fuzz.sh

# The benchmark in a tiny configuration, on both databases: it must run, its figures are not judged here.
echo "benchmark smoke run…" >&2
cargo build --quiet --bins
target/debug/omega-bench --scale tiny --samples 5 --messages 40 --out target/bench/smoke --work-dir target/bench/smoke-work >/dev/null
