#!/usr/bin/env bash
# Install (once) and run decodebench: `bash scripts/run.sh [verb] [overrides...]`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "${DECODEBENCH_VENV:-.venv}/bin/python" -m decodebench "$@"
