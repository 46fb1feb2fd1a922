#!/usr/bin/env bash
# Install (once) and run the whole test suite: `bash scripts/test.sh [pytest args...]`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh" --browser  # --browser: chromium for the leaderboard test
cd "$root"
exec "${DECODEBENCH_VENV:-.venv}/bin/python" -m pytest "$@"
