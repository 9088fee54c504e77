#!/usr/bin/env bash
# Fuzzes the REST surface as an outside integrator's tools would: schemathesis generates requests
# from the OpenAPI document Omega serves (built from the protos) and sends them through a real
# Envoy with the project's config to a fresh Omega on SQLite. Any 5xx, or an answer whose content
# type the document does not declare, fails the run. Bounded in examples and in time.
set -euo pipefail
cd "$(dirname "$0")/.."

omega="${OMEGA_BIN:-target/debug/omega}"
work="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
omega_port="$(free_port)"
envoy_port="$(free_port)"
admin_port="$(free_port)"
key="omk_$(python3 -c 'import secrets; print(secrets.token_hex(20))')"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export OMEGA_DATABASE_URL="sqlite://$work/omega.db?mode=rwc"
export OMEGA_LISTEN_ADDR="127.0.0.1:$omega_port"
export OMEGA_BOOTSTRAP_API_KEY="$key"
# The fuzzer sends bad keys on purpose; the failure limiter would leave most operations untested.
export OMEGA_AUTH_FAILURES_PER_MINUTE=0
export OMEGA_LOG="${OMEGA_LOG:-warn}"
# The fuzzer registers webhook endpoints with whatever URLs it makes up: nothing is sent to them.
export OMEGA_WEBHOOKS_WORKERS=0
config="$("$omega" envoy-config --out-dir "$work/envoy" --listen-port "$envoy_port" --admin-port "$admin_port" \
  --upstream "$OMEGA_LISTEN_ADDR")"
"$omega" serve >"$work/omega.log" 2>&1 &
pids+=($!)
.venv/bin/envoy -c "$config" --use-dynamic-base-id --log-level error >"$work/envoy.log" 2>&1 &
pids+=($!)

base="http://127.0.0.1:$envoy_port"
for _ in $(seq 1 300); do
  curl -fsS "$base/omega/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$base/omega/health" >/dev/null

status=0
timeout "${FUZZ_TIMEOUT_SECS:-300}" .venv/bin/schemathesis run "$base/omega/openapi.json" --url "$base" \
  -H "X-API-KEY: $key" \
  --checks not_a_server_error,content_type_conformance \
  --phases coverage,fuzzing \
  --max-examples "${FUZZ_MAX_EXAMPLES:-15}" \
  --workers 2 \
  --seed "${FUZZ_SEED:-20261201}" \
  --no-color >"$work/schemathesis.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
  cat "$work/schemathesis.log"
  echo "--- omega's log (last 50 lines)"
  tail -50 "$work/omega.log"
  exit "$status"
fi
grep -E "generated|passed" "$work/schemathesis.log" | tail -2 >&2
