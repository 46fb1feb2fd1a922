#!/usr/bin/env bash
# Install (once) and run the whole test suite: `bash scripts/test.sh [pytest args...]`.
# The tests run on every core (pytest-xdist, `-n auto`; tests/conftest.py gives each worker its share of
# torch threads). DECODEBENCH_TEST_WORKERS=1 runs them in one process; `-n 0` among the args does too.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" --browser  # --browser: chromium for the leaderboard test
cd "$root"
workers="${DECODEBENCH_TEST_WORKERS:-auto}"
if [ "$workers" = 1 ]; then
  exec "${DECODEBENCH_VENV:-.venv}/bin/python" -m pytest "$@"
fi
# worksteal: an idle worker takes tests queued on a busy one, so one long module does not hold the end
exec "${DECODEBENCH_VENV:-.venv}/bin/python" -m pytest -n "$workers" --dist worksteal "$@"
