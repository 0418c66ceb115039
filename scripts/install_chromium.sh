#!/usr/bin/env bash
# Install Chromium for the HTML report's headless browser test (tests/test_report.py).
# Idempotent: returns at once when a Chromium or Chrome is already on PATH (or $CROSSPATH_CHROMIUM
# points at one). Otherwise installs the distribution's package: Debian `chromium`, Fedora
# `chromium`, Alpine `chromium`, macOS Homebrew `chromium`. Needs root (or sudo) on Linux.
# Ubuntu's `chromium` / `chromium-browser` packages are snap stubs that do not run in containers:
# there, install Google Chrome yourself and point CROSSPATH_CHROMIUM at it.
set -euo pipefail

for exe in "${CROSSPATH_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable chrome; do
  if [ -n "$exe" ] && command -v "$exe" >/dev/null 2>&1; then
    echo "chromium: found $(command -v "$exe")"
    exit 0
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "chromium: not found, and installing it needs root (no sudo here)" >&2; exit 1
  fi
fi

if command -v apt-get >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  # fonts-dejavu-core: text in screenshots renders without the recommended font set
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
elif command -v dnf >/dev/null 2>&1; then
  $SUDO dnf install -y -q chromium
elif command -v apk >/dev/null 2>&1; then
  $SUDO apk add --no-cache chromium
elif command -v brew >/dev/null 2>&1; then
  brew install --cask chromium
else
  echo "chromium: no known package manager; install Chromium and put it on PATH" >&2; exit 1
fi

for exe in chromium chromium-browser; do
  if command -v "$exe" >/dev/null 2>&1; then
    echo "chromium: installed $(command -v "$exe")"
    exit 0
  fi
done
echo "chromium: the package installed, but no chromium executable is on PATH" >&2
exit 1
