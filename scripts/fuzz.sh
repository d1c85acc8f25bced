#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 20s).
# Usage: scripts/fuzz.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-20s}"
targets=(
  "./channel/grpcchannel FuzzDecodeFrame"
  "./channel FuzzAcceptHello"
  "./state FuzzApply"
  "./batch FuzzCommandJSON"
)
for entry in "${targets[@]}"; do
  set -- $entry
  echo "== $2 ($1) for $t"
  go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" "$1"
done
