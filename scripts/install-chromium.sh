#!/usr/bin/env bash
# Installs Chromium for the dashboard's browser test (cmd/exchange,
# TestDashboard), from Debian's packages. Idempotent: does nothing when a
# chromium is already on PATH. Needs root (as on CI) or sudo.
set -euo pipefail

for c in chromium chromium-browser; do
	if command -v "$c" >/dev/null 2>&1; then
		exit 0
	fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
command -v chromium >/dev/null
