#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 20s). The
# targets are found, not listed: every `func FuzzXxx(f *testing.F)` in a
# _test.go file of the module (the bench/ and examples/ modules aside).
# Their seed corpora (f.Add and testdata/fuzz/FuzzXxx/) also run as ordinary
# tests in `make test`; what the fuzzer finds goes to the build cache, and a
# failing input to testdata/fuzz/FuzzXxx/ (commit it with the fix).
# Usage: scripts/fuzz.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
t="${1:-20s}"
found=0
while IFS=: read -r file _ line; do
  name="${line#func }"
  name="${name%%(*}"
  pkg="./$(dirname "$file")"
  echo "== $name ($pkg) for $t"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg"
  found=$((found + 1))
done < <(grep -rn --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' . \
  | grep -v -E '^\./(bench|examples)/' | sed 's#^\./##' | sort)
if [ "$found" -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi
echo "== $found fuzz targets run"
