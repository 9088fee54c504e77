#!/usr/bin/env bash
# Starts N Omega replicas (default 3) on one PostgreSQL database behind one Envoy:
#   OMEGA_DATABASE_URL=postgres://postgres@127.0.0.1:5432/omega scripts/replicas.sh [N]
# Replicas listen on 127.0.0.1:50051, :50052, … (OMEGA_REPLICA_BASE_PORT moves them); Envoy on
# :8080 health-checks them, routes around a failing one and retries what is safe to retry.
# SIGTERM to one replica (`kill -TERM <pid>`, pids printed below) drains it without failing a
# call; Ctrl-C stops everything. Every OMEGA_* variable in the README's configuration table
# applies to every replica; set OMEGA_SECRETS_KEY and OMEGA_TOKEN_SECRET so that they agree.
set -euo pipefail
cd "$(dirname "$0")/.."

replicas="${1:-3}"
: "${OMEGA_DATABASE_URL:?set OMEGA_DATABASE_URL to a postgres:// URL (replicas share one database)}"
case "$OMEGA_DATABASE_URL" in
  postgres://* | postgresql://*) ;;
  *) echo "replicas need PostgreSQL (OMEGA_DATABASE_URL=postgres://…)" >&2; exit 2 ;;
esac
export OMEGA_DATABASE_URL
base_port="${OMEGA_REPLICA_BASE_PORT:-50051}"
envoy_port="${OMEGA_ENVOY_PORT:-8080}"
admin_port="${OMEGA_ENVOY_ADMIN_PORT:-9901}"
export OMEGA_TRUSTED_PROXIES="${OMEGA_TRUSTED_PROXIES:-127.0.0.1,::1}"
# A random secret per process would make one replica's tokens unknown to the others.
if [ -z "${OMEGA_TOKEN_SECRET:-}" ]; then
  OMEGA_TOKEN_SECRET="$(head -c 32 /dev/urandom | base64)"
  export OMEGA_TOKEN_SECRET
  echo "no OMEGA_TOKEN_SECRET: using a random one shared by these replicas (tokens end with them)" >&2
fi

./scripts/ensure-tools.sh
echo "building omega (release)…" >&2
cargo build --release --quiet --bin omega
omega=target/release/omega
"$omega" migrate

upstreams=()
for i in $(seq 0 $((replicas - 1))); do upstreams+=("127.0.0.1:$((base_port + i))"); done
config="$("$omega" envoy-config --out-dir target/envoy-replicas --listen-port "$envoy_port" \
  --admin-port "$admin_port" --upstream "$(IFS=,; echo "${upstreams[*]}")")"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for upstream in "${upstreams[@]}"; do
  OMEGA_LISTEN_ADDR="$upstream" OMEGA_MIGRATE_ON_START=false "$omega" serve &
  pids+=($!)
  echo "replica $upstream: pid $!" >&2
done
.venv/bin/envoy -c "$config" --use-dynamic-base-id --log-level warn &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$envoy_port/omega/health" >/dev/null 2>&1; then
    echo "$replicas replicas behind Envoy: REST http://127.0.0.1:$envoy_port/omega/…, gRPC :$envoy_port"
    echo "  replica health: curl -s http://127.0.0.1:$admin_port/clusters | grep health_flags"
    break
  fi
  sleep 0.2
done

# Replicas may come and go (a SIGTERM-restarted one is yours to start again); stop when Envoy does.
wait "${pids[-1]}"
