#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: every CUDA test, then the engine benchmark in bf16, in under 8 minutes.
#   bash scripts/gpu_check.sh            (installs into .venv first, as scripts/test.sh does)
# Prints the card, the test summary and the benchmark table; the benchmark's last line is JSON.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -z "${DECODEBENCH_VENV:-}" ] && python3 -c "import torch, transformers; assert torch.cuda.is_available()" 2>/dev/null; then
  py=python3   # a machine that already has a CUDA torch: use it as it is
  python3 -m pip install -q --no-deps -e . >/dev/null 2>&1 || true
else
  bash scripts/setup.sh
  py="${DECODEBENCH_VENV:-.venv}/bin/python"
fi
export PYTHONUNBUFFERED=1
"$py" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
timeout 240 "$py" -m pytest tests/test_cuda.py -q -p no:cacheprovider -rs
timeout 200 "$py" scripts/bench_engine.py --device cuda --dtype bfloat16 --workload natural --prompts 128 \
  --batch-sizes 64 --max-new-tokens 256 --strategies greedy,topp --engines ours,ours_static,generate,generate_static
