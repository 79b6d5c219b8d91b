#!/usr/bin/env bash
# Installs what the report's browser tests drive: Debian's chromium and chromium-driver (never a
# test tool's own browser download). Does nothing when both are on PATH already. Needs root or
# sudo; fails loudly otherwise.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null; then
    as_root=(sudo)
else
    echo "install-browser: need root or sudo to run: apt-get install -y chromium chromium-driver" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null || {
    echo "install-browser: chromium or chromedriver is still missing after apt-get install" >&2
    exit 1
}
