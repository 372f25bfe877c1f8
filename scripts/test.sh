#!/usr/bin/env bash
# The tests, from a fresh clone or an existing checkout: sets up the environment when it is missing or
# stale (scripts/setup.sh --if-needed), then runs the whole suite with the linter (pytest; arguments
# are passed on, e.g. scripts/test.sh -m "not slow" or scripts/test.sh test/test_lint.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --if-needed
exec "${VIRTUAL_ENV:-.venv}/bin/python" -m pytest "$@"
