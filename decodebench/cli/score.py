"""The `score` verb: score an existing generations file with the scorers registry.

    python -m decodebench score generations=outputs/runs/.../generations.jsonl scorers=text
    python -m decodebench score generations=../shared/conformance/webtext-gpt2-large/nucleus.json

Writes `metrics.json` in its run directory (hydra.run.dir) and logs to W&B like a run. The scoring model
for model metrics is `model=...` (by default the embedded model; for a decodebench run directory, the
model that generated it, read from its config.yaml).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from decodebench import models, results, wandb_sink
from decodebench.config import ConfigError, check_device, check_logger, check_seed, conf_dir, prefix_key, register_configs
from decodebench.dirlock import DirLock

log = logging.getLogger("decodebench")
register_configs()


def _generations_path(p: str) -> Path:
    path = Path(p).expanduser()
    if path.is_dir():
        path = path / results.GENERATIONS
    return path


# What a run directory may tell the score verb about its model: names only. Never trust_remote_code,
# which only this command line can turn on (a run directory is someone else's file).
RUN_MODEL_KEYS = ("name_or_path", "gguf_file", "revision")


def _model_of_run(path: Path, cfg: DictConfig) -> tuple[models.ModelConfig, Optional[Path]]:
    """The scoring model: `model=...` from the command line, or (model left at its default) the name of the
    model that generated a decodebench run directory, read from its config.yaml as data. Second: the run's
    config.yaml when it asked for remote code and this command line trusts it (to say so once)."""
    mine = models.ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    run_cfg = path.parent / "config.yaml"
    if not run_cfg.is_file() or cfg.model.name_or_path != models.EMBEDDED:
        return mine, None
    try:
        m = OmegaConf.to_container(OmegaConf.load(run_cfg), resolve=False).get("model")
    except Exception as e:  # noqa: BLE001 - a broken file is bad input, not a crash
        raise ConfigError(f"generations: cannot read {run_cfg} ({' '.join(str(e).split())[:200]}); score it with "
                          "model=<the model that generated it>") from None
    if not isinstance(m, dict):
        return mine, None
    picked = {k: m.get(k) for k in RUN_MODEL_KEYS}
    if not all(v is None or isinstance(v, str) for v in picked.values()) or not picked["name_or_path"]:
        raise ConfigError(f"generations: {run_cfg} names no usable model; give model.name_or_path=<model>")
    asked = run_cfg if m.get("trust_remote_code") is True and mine.trust_remote_code else None
    return models.ModelConfig(**picked, trust_remote_code=mine.trust_remote_code, cache=mine.cache), asked


def check_remote_code(mcfg: models.ModelConfig, asked_by: str) -> None:
    """A local model directory whose config maps classes to its own Python files (`auto_map`) needs remote
    code; refuse it unless this command line trusts it, before transformers would be asked to load it."""
    import json

    kind, p = models.resolve_source(mcfg)
    if kind != "local" or mcfg.trust_remote_code:
        return
    try:
        auto_map = json.loads((p / "config.json").read_text()).get("auto_map")
    except (OSError, ValueError, AttributeError):
        return  # the load will say what is wrong with the file
    if auto_map:
        raise ConfigError(f"model.trust_remote_code: model {mcfg.name_or_path} ({asked_by}) ships its own code "
                          "(auto_map in its config.json), which is never run unless this command line says "
                          "model.trust_remote_code=true")


def prepare(cfg: DictConfig):
    from decodebench.scorers import load_generations, resolve_scorers

    check_seed("seed", cfg.seed)
    check_logger(cfg.logger)
    check_device(cfg)
    try:
        models.pick_device(str(cfg.device))
    except ValueError as e:
        raise ConfigError(str(e)) from None

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
    if plan.needs_references and not any(r.reference for r in records):
        raise ConfigError(f"generations: {path} has no references, which the chosen scorers need; "
                          "set reference_field=<field> or choose scorers without references")
    if plan.needs_model:
        mcfg, _ = _model_of_run(path, cfg)
        from_run = mcfg.name_or_path != cfg.model.name_or_path
        try:
            check_remote_code(mcfg, f"named by {path.parent / 'config.yaml'}" if from_run else "model.name_or_path")
            models.resolve_source(mcfg)
        except ValueError as e:
            msg = str(e)
            raise ConfigError(msg if not from_run or msg.startswith("model.trust") else
                              f"{msg} (the model named by {path.parent / 'config.yaml'}; or give model=...)") from None
    return plan, records, path


def score(cfg: DictConfig, run_dir: str) -> dict:
    t0 = time.perf_counter()
    plan, records, path = prepare(cfg)
    model = tok = None
    device = models.pick_device(str(cfg.device))
    if plan.needs_model:
        mcfg, asked = _model_of_run(path, cfg)
        if asked is not None:
            log.warning("model.trust_remote_code=true (this command line): running the code of model %s, "
                        "which %s asks for", mcfg.name_or_path, asked)
        model, tok = models.load_model(mcfg, device=device, dtype=models.pick_dtype(str(cfg.dtype), device))
    dtype = models.pick_dtype(str(cfg.dtype), device)
    from decodebench.runner import scoring_models

    scoring = scoring_models(plan.scoring_models(), device, dtype)
    metrics = plan.score(records, model=model, tokenizer=tok, device=device, seed=int(cfg.seed),
                         progress=bool(cfg.progress), models=scoring)
    metrics["wall_time_s"] = time.perf_counter() - t0
    with DirLock(run_dir, "hydra.run.dir"):
        results.write_text(Path(run_dir) / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        results.write_json_atomic(Path(run_dir) / results.METRICS, metrics)
    res = {"run_dir": str(run_dir), "metrics": metrics, "num_records": len(records), "generations": str(path)}
    wandb_sink.log_run(OmegaConf.to_container(cfg.logger, resolve=True), results.read_run(run_dir), records,
                       job_type="score")
    return res


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="score")
def hydra_main(cfg: DictConfig) -> None:
    import json

    try:
        res = score(cfg, HydraConfig.get().runtime.output_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # one line naming the path, not Hydra's traceback
        print(f"error: {results.os_error_line(e)}", file=sys.stderr)
        sys.exit(1)
    m = res["metrics"]
    shown = ", ".join(f"{k}={m[k]:.4g}" for k in ("diversity", "gen_length", "distinct_2", "perplexity", "mauve")
                      if isinstance(m.get(k), (int, float)))
    print(f"decodebench score: {res['num_records']} generations from {res['generations']}; {shown}\n"
          f"results: {res['run_dir']}")
    print(json.dumps(results.clean({"run_dir": res["run_dir"], "metrics": m}), sort_keys=True), flush=True)


def main(args: list[str]) -> None:
    from decodebench.cli.preflight import check

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
