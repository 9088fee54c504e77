#!/usr/bin/env bash
# Builds the page's script: the Connect-ES client generated from the repository's protos
# (into gen/, never committed), type-checked, and bundled with the page's code into dist/main.js.
# Needs `npm ci` here and the project's buf (scripts/ensure-tools.sh installs both).
set -euo pipefail
cd "$(dirname "$0")"
buf="${BUF:-../../.tools/node_modules/.bin/buf}"
rm -rf gen dist
"$buf" generate ../.. --template buf.gen.yaml
node_modules/.bin/tsc -p tsconfig.json
node_modules/.bin/esbuild main.ts --bundle --format=esm --target=es2022 --outfile=dist/main.js --log-level=warning
