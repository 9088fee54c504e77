#!/usr/bin/env bash
# Starts the whole stack on the embedded default: Omega (SQLite under ./data/) and Envoy in
# front of it. REST on :8080/omega, gRPC and gRPC-Web on :8080 too (or :50051 straight to Omega).
# Ctrl-C stops both. Every OMEGA_* variable in the README's configuration table applies.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-tools.sh
echo "building omega (release)…" >&2
cargo build --release --quiet --bin omega
omega=target/release/omega

export OMEGA_DATABASE_URL="${OMEGA_DATABASE_URL:-sqlite://data/omega.db?mode=rwc}"
export OMEGA_LISTEN_ADDR="${OMEGA_LISTEN_ADDR:-127.0.0.1:50051}"
# Envoy, started below on this machine, reaches Omega over loopback: trust its X-Forwarded-For
# (the client's real address, for the failed-authentication limit).
export OMEGA_TRUSTED_PROXIES="${OMEGA_TRUSTED_PROXIES:-127.0.0.1,::1}"
envoy_port="${OMEGA_ENVOY_PORT:-8080}"
admin_port="${OMEGA_ENVOY_ADMIN_PORT:-9901}"

# First start: no key exists yet, so make a platform key and show it (once: only its hash is kept).
if [ -z "${OMEGA_BOOTSTRAP_API_KEY:-}" ] && [ "$("$omega" keys list 2>/dev/null | wc -l)" -le 1 ]; then
  key="$("$omega" keys create --label "first platform key (make run)" 2>/dev/null)"
  echo
  echo "  Your platform API key (shown once, keep it):"
  echo "    export OMEGA_KEY=$key"
  echo
fi

config="$("$omega" envoy-config --out-dir target/envoy --listen-port "$envoy_port" --admin-port "$admin_port" --upstream "$OMEGA_LISTEN_ADDR")"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$omega" serve &
pids+=($!)
.venv/bin/envoy -c "$config" --use-dynamic-base-id --log-level warn &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$envoy_port/omega/health" >/dev/null 2>&1; then
    echo "Omega is up: REST http://127.0.0.1:$envoy_port/omega/…  gRPC ${OMEGA_LISTEN_ADDR} (direct) or :$envoy_port (Envoy)"
    echo "  try: curl -H \"X-API-KEY: \$OMEGA_KEY\" http://127.0.0.1:$envoy_port/omega/health/db"
    break
  fi
  sleep 0.2
done

# Stop everything as soon as either process exits.
wait -n "${pids[@]}"
