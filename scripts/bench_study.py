"""Times a study fused (one command, one model load, every method's points in shared batches) against the
same points run as one `sweep` command per method (a plain run for a method without a grid) and as one
Hydra multirun per method, in one run of this script, and prints the ratios. Goal (issue 20): >= 3x for
the open_ended study on 16 prompts x 32 tokens on the CPU machine.

    python scripts/bench_study.py                                  # open_ended, 16 prompts x 32 tokens
    python scripts/bench_study.py --limit 4 --max-new-tokens 8 --no-multirun   # a quick smoke check

Every variant scores with the cheap `gen_length` scorer only, so the times are generation plus fixed costs
(interpreter, imports, model loads); the leaderboard of the fused study is left out for the same reason.
Each variant writes under a fresh temporary directory. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def study_methods(name: str) -> dict:
    from hydra import compose, initialize_config_dir

    from decodebench.config import conf_dir, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"study={name}"])
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.study.methods, resolve=True)


def _list(vals: list) -> str:
    return "[" + ",".join(json.dumps(v) if isinstance(v, str) else str(v) for v in vals) + "]"


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="open_ended")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--no-multirun", action="store_true", help="skip the Hydra multiruns (the slowest variant)")
    a = ap.parse_args()
    py = [sys.executable, "-m", "decodebench"]
    shared = [f"model={a.model}", f"dataset.limit={a.limit}", f"strategy.max_new_tokens={a.max_new_tokens}",
              "logger=none", "progress=false", "scorers.names=[gen_length]", "scorers.bootstrap.samples=0"]
    methods = study_methods(a.study)
    tmp = Path(tempfile.mkdtemp(prefix="bench_study-"))
    times = {"fused": timed(py + [f"study={a.study}", *shared, f"study.dir={tmp / 'study'}", "study.leaderboard=false",
                                  "study.select.metric=gen_length"])}
    per_method, multirun = 0.0, 0.0
    for label, m in methods.items():
        strategy = m.get("strategy") or label
        fixed = [f"strategy.{k}={v}" for k, v in (m.get("settings") or {}).items()]
        common = py + [f"strategy={strategy}", *shared, *fixed, *study_dataset(a.study)]
        grid = m.get("grid") or {}
        if grid:
            per_method += timed(common[:3] + ["sweep"] + common[3:] + [f"sweep.dir={tmp / 'sweep' / label}",
                                "sweep.leaderboard=false", *[f"++sweep.grid.{k}={_list(v)}" for k, v in grid.items()]])
        else:
            per_method += timed(common + [f"hydra.run.dir={tmp / 'run' / label}"])
        if not a.no_multirun:
            sweeps = [f"strategy.{k}={','.join(str(x) for x in v)}" for k, v in grid.items()]
            multirun += timed(py + ["-m"] + common[3:] + [*sweeps, f"hydra.sweep.dir={tmp / 'multirun' / label}",
                                        "hydra.callbacks.leaderboard.enabled=false"])
    parts = fused_breakdown(tmp / "study", times["fused"])
    times["sweep_per_method"] = per_method
    if not a.no_multirun:
        times["multirun_per_method"] = multirun
    print(f"{a.study}: {len(methods)} methods, {a.limit} prompts x {a.max_new_tokens} tokens, model={a.model} "
          f"(wall-clock, including each command's start-up and model load)")
    for k, v in times.items():
        ratio = "" if k == "fused" else f"  ({v / times['fused']:.2f}x the fused study)"
        print(f"  {k:>20}: {v:7.1f} s{ratio}")
    print(f"  fused study: generation {parts['generation_s']:.1f} s ({parts['one_token_s']:.1f} s in the running batch "
          f"of one-token-per-step points, {parts['search_s']:.1f} s in search methods' batches), the other "
          f"{parts['other_s']:.1f} s start-up, config, model load, scoring and writing")
    print(f"  one-token-per-step rows: {parts['distinct_prefix_share']:.0%} of their row-steps are distinct (prompt, "
          f"sample, tokens so far); with shared noise the others repeat another row's forward")
    print(json.dumps({"study": a.study, "limit": a.limit, "max_new_tokens": a.max_new_tokens, "times_s": times,
                      "ratios": {k: v / times["fused"] for k, v in times.items() if k != "fused"},
                      "fused_breakdown": parts}))


def fused_breakdown(sdir: Path, wall: float) -> dict:
    """Where the fused study's time went, from its points' own records: each point's generation_time_s is its
    share of its fused batches' time, so their sum per kind is the time in those batches. Also the share of the
    one-token-per-step row-steps whose (prompt, tokens so far) is distinct: the forwards a batch must run."""
    one, search, prefixes, row_steps = 0.0, 0.0, set(), 0
    for d in sorted(p for p in sdir.iterdir() if (p / "metrics.json").is_file()):
        gen = float(json.loads((d / "metrics.json").read_text()).get("generation_time_s") or 0.0)
        info = json.loads((d / "run.json").read_text())
        if info["strategy"].get("method", "sampling") != "sampling":  # beam, contrastive, ...: own batches
            search += gen
            continue
        one += gen
        for line in (d / "generations.jsonl").read_text().splitlines():
            r = json.loads(line)
            ids = r["token_ids"]
            row_steps += len(ids)
            prefixes.update((r["prompt_id"], r["sample_index"], tuple(ids[:t])) for t in range(len(ids)))
    return {"generation_s": one + search, "one_token_s": one, "search_s": search, "other_s": wall - one - search,
            "distinct_prefix_share": len(prefixes) / row_steps if row_steps else float("nan")}


def study_dataset(name: str) -> list[str]:
    """The dataset and loop settings the study file sets, as overrides for the commands it is timed against
    (study=... itself would run the study)."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "study" / f"{name}.yaml"), resolve=False)
    out = []
    for item in d.get("defaults") or []:
        for k, v in (item.items() if isinstance(item, dict) else []):
            if k.split()[-1].lstrip("/") == "dataset":
                out.append(f"dataset={v}")
    for k, v in (d.get("strategy") or {}).items():
        if k != "max_new_tokens":
            out.append(f"strategy.{k}={json.dumps(v) if isinstance(v, list) else v}")
    return out


if __name__ == "__main__":
    main()
