#!/usr/bin/env bash
# Install what the tests need, then run them: the README's test command, and what CI runs.
#   bash tests/run.sh [pytest arguments]      e.g. bash tests/run.sh -m "not slow" (the fast tier, ~1 min)
#                                             or -m "not slow and not network" (offline)
# Installs Debian's chromium when missing (apt-get), the project with its [dev] extra into .venv
# (pip; TensorFlow CPU, Keras, ai-edge-litert, Playwright, pytest), then runs pytest. build.py,
# called by the site tests, fetches Pyodide and PyScript with npm and the Pyodide wheels with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian chromium"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
for tool in npm python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required (apt-get install nodejs npm python3-venv)"; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
# Install once per version of pyproject.toml (the project itself is an editable install, so code changes need none).
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "== installing rendernet[dev] into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

echo "== running the tests"
status=0
# Downloads (npm, pip) and caches go to the project's .cache/tests, never the user's ~/.cache/rendernet.
export RENDERNET_CACHE="${RENDERNET_CACHE:-$PWD/.cache/tests}"
TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python -m pytest "$@" || status=$?
if [ "$status" = 5 ]; then
  echo "error: pytest collected no tests (exit 5); treating that as a failure"
  exit 1
fi
exit "$status"
