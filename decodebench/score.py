"""The `score` verb: score an existing generations file with the scorers registry.

    python -m decodebench score generations=outputs/runs/.../generations.jsonl scorers=text
    python -m decodebench score generations=../shared/conformance/webtext-gpt2-large/nucleus.json

Writes `metrics.json` in its run directory (hydra.run.dir) and logs to W&B like a run. The scoring model
for model metrics is `model=...` (by default the embedded model; for a decodebench run directory, the
model that generated it, read from its config.yaml).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from decodebench import models, results, wandb_sink
from decodebench.config import ConfigError, prefix_key, register_configs

register_configs()
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _generations_path(p: str) -> Path:
    path = Path(p).expanduser()
    if path.is_dir():
        path = path / results.GENERATIONS
    return path


def _model_of_run(path: Path, cfg: DictConfig) -> models.ModelConfig:
    run_cfg = path.parent / "config.yaml"
    if run_cfg.is_file() and cfg.model.name_or_path == models.EMBEDDED:
        m = OmegaConf.load(run_cfg).get("model")
        if m is not None:
            return models.ModelConfig(**OmegaConf.to_container(m, resolve=True))
    return models.ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))


def prepare(cfg: DictConfig):
    from decodebench.scorers import load_generations, resolve_scorers

    try:
        plan = resolve_scorers(OmegaConf.to_container(cfg.scorers, resolve=True))
    except ValueError as e:
        raise ConfigError(prefix_key("scorers", str(e))) from None
    from decodebench.runner import check_scoring_models

    try:
        check_scoring_models(plan)  # a scoring model whose tokenizer cannot load: before any model loads
        models.check_load_options(models.ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)),
                                  models.pick_device(str(cfg.device)), generate=False)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    path = _generations_path(cfg.generations)
    try:
        records = load_generations(path, text_field=cfg.text_field, prompt_field=cfg.prompt_field,
                                   reference_field=cfg.reference_field, id_field=cfg.id_field,
                                   sample_field=cfg.sample_field)
    except ValueError as e:
        raise ConfigError(f"generations: {e}") from None
    if plan.needs_references and not any(r.get("reference") for r in records):
        raise ConfigError(f"generations: {path} has no references, which the chosen scorers need; "
                          "set reference_field=<field> or choose scorers without references")
    return plan, records, path


def score(cfg: DictConfig, run_dir: str) -> dict:
    t0 = time.perf_counter()
    plan, records, path = prepare(cfg)
    model = tok = None
    device = models.pick_device(str(cfg.device))
    if plan.needs_model:
        mcfg = _model_of_run(path, cfg)
        model, tok = models.load_model(mcfg, device=device, dtype=models.pick_dtype(str(cfg.dtype), device))
    dtype = models.pick_dtype(str(cfg.dtype), device)
    from decodebench.runner import scoring_models

    scoring = scoring_models(plan.scoring_models(), device, dtype)
    metrics = plan.score(records, model=model, tokenizer=tok, device=device, seed=int(cfg.seed),
                         progress=bool(cfg.progress), models=scoring)
    metrics["wall_time_s"] = time.perf_counter() - t0
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    results.write_json_atomic(Path(run_dir) / results.METRICS, metrics)
    res = {"run_dir": str(run_dir), "metrics": metrics, "num_records": len(records), "generations": str(path)}
    wandb_sink.log_run(cfg, run_dir, metrics, records, job_type="score")
    return res


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="score")
def hydra_main(cfg: DictConfig) -> None:
    import json

    try:
        res = score(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    m = res["metrics"]
    shown = ", ".join(f"{k}={m[k]:.4g}" for k in ("diversity", "gen_length", "distinct_2", "perplexity", "mauve")
                      if isinstance(m.get(k), (int, float)))
    print(f"decodebench score: {res['num_records']} generations from {res['generations']}; {shown}\n"
          f"results: {res['run_dir']}")
    print(json.dumps(results.clean({"run_dir": res["run_dir"], "metrics": m}), sort_keys=True), flush=True)


def main(args: list[str]) -> None:
    from decodebench.preflight import check

    if not any(a.split("=", 1)[0] == "generations" for a in args):
        print("error: generations: missing; give generations=PATH (a generations.jsonl, run directory or JSON file)",
              file=sys.stderr)
        sys.exit(2)
    err = check(args, "score", prepare)
    if err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0]] + args
    hydra_main()
