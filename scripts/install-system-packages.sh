#!/usr/bin/env bash
# System packages the test suite needs beyond Python: Debian's Chromium, which the report's
# browser test (tests/release/test_report_browser.py) drives through Playwright. Playwright's
# own browser download is never used: one browser, from the distribution, updated with it.
#
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root, or sudo when not root.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo present) at $CHROMIUM"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $CHROMIUM is missing and apt-get is not available; install Chromium so that $CHROMIUM exists" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "error: installing chromium needs root; run this script as root or install sudo" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
${SUDO[@]+"${SUDO[@]}"} apt-get update
${SUDO[@]+"${SUDO[@]}"} apt-get install -y --no-install-recommends chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "error: apt-get installed chromium but $CHROMIUM does not exist" >&2
    exit 1
fi
echo "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
