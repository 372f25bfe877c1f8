#!/usr/bin/env bash
# The whole product end to end, from a fresh clone or an existing checkout: sets up the environment
# when it is missing or stale (scripts/setup.sh --if-needed), then runs `taseg demo` (arguments are
# passed on, e.g. scripts/demo.sh --output my_demo; see taseg demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --if-needed
exec "${VIRTUAL_ENV:-.venv}/bin/taseg" demo "$@"
