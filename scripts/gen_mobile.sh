#!/usr/bin/env bash
# Generates the Kotlin/Java/Objective-C (and, online, Swift) clients from buf.gen.yaml.
#   scripts/gen_mobile.sh OUT_DIR [--offline]
# --offline drops the remote (Buf Schema Registry) plugins, i.e. Swift.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gen_mobile.sh OUT_DIR [--offline]}
template=buf.gen.yaml
if [ "${2:-}" = "--offline" ]; then
  template=$(mktemp --suffix=.yaml)
  trap 'rm -f "$template"' EXIT
  # Keep every plugin block except the remote ones.
  awk '/^  - remote:/{skip=1; next} /^  - /{skip=0} !skip' buf.gen.yaml > "$template"
fi
mkdir -p "$out"
node_modules/.bin/buf generate --template "$template" -o "$out"
