#!/usr/bin/env bash
# The dashboard in a real browser (scripts/browser_e2e.py): Debian's headless Chromium driven
# through WebDriver by Selenium, against a cluster of debug builds on free loopback ports.
#
# Installs what is missing: chromium and chromium-driver (apt), Selenium into a virtualenv under
# target/ (the only steps that need the network). Selenium runs offline (SE_OFFLINE=true): it
# uses /usr/bin/chromedriver and never downloads a driver or a browser. Prints one
# `SKIP browser e2e: reason` line only where Chromium cannot be installed; a Chromium that is
# installed but cannot start fails the test with the reason. Screenshots of each step are left
# in target/browser-e2e/.
set -euo pipefail
cd "$(dirname "$0")/.."

SELENIUM_VERSION=4.51.0
venv=target/browser-e2e/venv-$SELENIUM_VERSION

say() { echo "browser-e2e: $*"; }

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  say "installing chromium and chromium-driver"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    echo "SKIP browser e2e: chromium and chromium-driver cannot be installed"
    exit 0
  fi
fi

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    say "installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  say "installing selenium $SELENIUM_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION"
fi

command -v redis-server >/dev/null || { say "redis-server is missing"; exit 1; }
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --quiet -p cluster-lb -p cluster-app -p clusterctl

SE_OFFLINE=true exec "$venv/bin/python" scripts/browser_e2e.py
