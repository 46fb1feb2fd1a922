"""Fused sweep vs one Hydra job per grid point, on the same grid, in one run of this script.

    .venv/bin/python scripts/bench_sweep.py [--limit 16] [--max-new-tokens 32] [--strategy topp] [--out DIR]
                                            [-- extra overrides for both]

Both sides run as the user would run them, each in its own fresh process, with the same overrides:

    fused:    python -m decodebench strategy=topp sweep ...                       (the grid of conf/sweep/topp.yaml)
    multirun: python -m decodebench -m strategy=topp strategy.top_p=0.8,0.9,0.95 strategy.temperature=0.7,1.0 ...
              (Hydra's basic launcher: one job per point, one after another, in one process; the model is loaded
              once and reused, so the difference is the batching, not model loading)

It reports the wall-clock time of each command (the median of --repeat alternated runs), the generation
seconds summed over the points of the last run (from each point's metrics.json), and checks that both sides generated the same tokens for every point. The last line
is JSON. Scorers default to the cheap text metrics with no bootstrap (scorers=text
scorers.bootstrap.samples=0), so the figures are about decoding; add overrides after `--` to change that.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from decodebench import results
from decodebench.config import conf_dir

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> float:
    t = time.perf_counter()
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def point_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json"))


def key_of(d: Path, grid: dict) -> tuple:
    cfg = results.read_run(d).config
    return tuple(float(cfg["strategy"][k]) for k in grid) + (int(cfg["seed"]),)


def tokens(d: Path) -> list:
    return [r.token_ids for r in results.read_generations(d)]


def gen_seconds(dirs: list[Path]) -> float:
    return sum(results.read_metrics(d)["generation_time_s"] for d in dirs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategy", default="topp")
    ap.add_argument("--limit", type=int, default=16, help="dataset.limit: prompts of the embedded set")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--out", help="where both write (default: a temporary directory)")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the two commands N times; medians reported")
    ap.add_argument("extra", nargs="*", help="overrides for both sides (after --)")
    args = ap.parse_args()

    grid = yaml.safe_load((conf_dir() / "sweep" / f"{args.strategy}.yaml").read_text())
    seeds = grid.get("seeds") or [0]
    grid = grid["grid"]
    common = [f"strategy={args.strategy}", f"dataset.limit={args.limit}",
              f"strategy.max_new_tokens={args.max_new_tokens}", "logger=none", "progress=false", "scorers=text",
              "scorers.bootstrap.samples=0", *args.extra]
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_sweep-"))
    py = [sys.executable, "-m", "decodebench"]
    sweeps = [f"strategy.{k}={','.join(map(str, v))}" for k, v in grid.items()] + [f"seed={','.join(map(str, seeds))}"]

    walls: dict[str, list] = {"fused": [], "multirun": []}
    for i in range(args.repeat):  # alternated, so a busy spell of the machine hits both sides
        if i:
            shutil.rmtree(out / "fused")
            shutil.rmtree(out / "multirun")
        walls["fused"].append(run(py + common + ["sweep", f"sweep.dir={out / 'fused'}", "sweep.leaderboard=false"]))
        walls["multirun"].append(run(py + ["-m"] + common + sweeps + [f"hydra.sweep.dir={out / 'multirun'}"]))
    t_fused, t_multi = statistics.median(walls["fused"]), statistics.median(walls["multirun"])

    fused = {key_of(d, grid): d for d in point_dirs(out / "fused")}
    multi = {key_of(d, grid): d for d in point_dirs(out / "multirun")}
    n_points = len(list(itertools.product(*grid.values()))) * len(seeds)
    assert len(fused) == len(multi) == n_points, (len(fused), len(multi), n_points)
    same = all(tokens(fused[k]) == tokens(multi[k]) for k in fused)
    rows = sum(len(tokens(d)) for d in fused.values())
    res = {
        "grid": grid, "seeds": seeds, "points": n_points, "rows": rows, "limit": args.limit,
        "max_new_tokens": args.max_new_tokens, "overrides": common,
        "fused_wall_s": round(t_fused, 2), "multirun_wall_s": round(t_multi, 2),
        "walls_s": {k: [round(x, 2) for x in v] for k, v in walls.items()},
        "speedup_wall": round(t_multi / t_fused, 2),
        "fused_generation_s": round(gen_seconds(list(fused.values())), 2),
        "multirun_generation_s": round(gen_seconds(list(multi.values())), 2),
        "identical_tokens": same, "out": str(out),
    }
    res["speedup_generation"] = round(res["multirun_generation_s"] / max(res["fused_generation_s"], 1e-9), 2)
    print(f"{n_points} points x {rows // n_points} rows, max_new_tokens={args.max_new_tokens}: "
          f"fused sweep {t_fused:.1f} s, Hydra multirun {t_multi:.1f} s -> {res['speedup_wall']}x wall-clock "
          f"({res['speedup_generation']}x in generation); same tokens for every point: {same}")
    print(json.dumps(res), flush=True)
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
