"""One run on an API model: checks before any request, the requests (concurrent, resumable), records on
disk, metrics (streaming ones beside the usual throughput), scorers.

The run directory is the usual one (config.yaml, run.json, generations.jsonl, metrics.json last) plus
api_responses.jsonl, every response as it arrived: a rerun into the same directory requests only what is
missing.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path


from decodebench import results
from decodebench.api_models import client as C
from decodebench.api_models.jobs import LOGPROBS_KIND, build_jobs, make_records
from decodebench.api_models.metrics import api_metrics, perplexity_from_logprobs
from decodebench.api_models.params import refused
from decodebench.api_models.settings import api_key, check_settings
from decodebench.api_models.store import RESPONSES, ResponseStore
from decodebench.config import ConfigError

RECORDABLE = ("entropy", "logprob")


class ApiRunError(ConfigError):
    """The endpoint failed during the run; str() is one line naming the URL and what is saved."""


def _model_scorers(plan):
    return [(s, o) for s, o in plan.entries if "model" in s.needs_for(o) and not o.get("model")]


def check_api_run(run, prep) -> None:
    """Everything an API run (a RunSpec) can check before its first request: ConfigError with one line."""
    m, spec = run.model, prep.spec
    try:
        check_settings(m)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if spec.method != "sampling":
        raise ConfigError(f"strategy: {spec.method} needs the model's logits at every step, which an API model "
                          "does not give; choose a sampling strategy (the selectors self_consistency, best_of_n "
                          "and mbr work on API samples)")
    lines = refused(spec, m.server)
    if lines:
        raise ConfigError(lines[0])
    if run.task is not None:
        raise ConfigError("task: lm-eval tasks score log-likelihoods under a local model; drop task for model=api")
    if run.dataset.chat_template or run.dataset.prefix_tokens is not None:
        key = "chat_template" if run.dataset.chat_template else "prefix_tokens"
        raise ConfigError(f"dataset.{key}: needs a local tokenizer; with model=api set dataset.{key}="
                          f"{'false' if key == 'chat_template' else 'null'} (model.endpoint=chat applies the "
                          "server's own chat template)")
    if m.endpoint == "completions" and run.dataset.system_prompt:
        raise ConfigError("dataset.system_prompt: the completions endpoint has no system message; "
                          "set model.endpoint=chat, or drop it")
    for f in prep.record:
        if f not in RECORDABLE:
            raise ConfigError(f"record: model=api records only {' and '.join(RECORDABLE)} (from the server's "
                              f"log-probs); drop {f}")
    if prep.record and not (m.logprobs and (m.top_logprobs or "entropy" not in prep.record)):
        raise ConfigError("record: needs the server's log-probs; set model.logprobs=true and model.top_logprobs>0")
    for s, _ in _model_scorers(prep.plan):
        if s.name != "perplexity":
            raise ConfigError(f"scorers.{s.name}: needs a local model's weights, which an API model does not give; "
                              f"set scorers.{s.name}.model=embedded (or another local model), or drop it")
        if not m.logprobs:
            raise ConfigError("scorers.perplexity: needs the generating model's log-probs; set model.logprobs=true, "
                              "or scorers.perplexity.model=<a local model>, or drop perplexity")
    if spec.search.get("selector") == "best_of_n" and spec.search.get("reward") is None and not m.logprobs:
        raise ConfigError("strategy.selector=best_of_n ranks samples by their log-probs; set model.logprobs=true "
                          "or strategy.reward=<name>")


def prepare_api(run, prep):
    """runner.prepare's plan for model=api: its device is for local scoring models only."""
    from decodebench import models

    check_api_run(run, prep)
    try:
        device = models.pick_device(run.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return replace(prep, device=device, dtype=models.pick_dtype(run.dtype, device))


def _saved_line(store: ResponseStore, jobs, run_dir: Path) -> str:
    rows = sum(len(j.samples) for j in jobs if j.key in store)
    total = sum(len(j.samples) for j in jobs)
    return (f"{rows} of {total} rows are saved in {run_dir / RESPONSES}; rerun with the same hydra.run.dir "
            "to request only the rest")


def _failure_line(e: BaseException, m) -> str:
    if isinstance(e, C.ApiFailure):
        return str(e)
    if isinstance(e, C.openai.RateLimitError):
        return (f"model.base_url: the server at {m.base_url} still answered 429 (rate limit) after "
                f"{m.max_retries} retries; lower model.concurrency or set model.requests_per_minute")
    what = "timed out" if isinstance(e, C.openai.APITimeoutError) else "stopped answering"
    return (f"model.base_url: the server at {m.base_url} {what} ({type(e).__name__}) after {m.max_retries} "
            "retries")


@dataclass
class Target:
    """One run directory's requests: its jobs, its response file, its counts."""

    run_dir: Path
    jobs: list
    store: ResponseStore
    counts: dict = field(default_factory=dict)

    def todo(self) -> list:
        return [j for j in self.jobs if j.key not in self.store]


async def _fetch_all(items: list, m, bar) -> None:
    """Every (target, job) through one client, one concurrency limit and one rate limit: a sweep's points
    fan out into the same pool of concurrent requests."""
    client = C.make_client(m.base_url, api_key(m), float(m.timeout))
    sem = asyncio.Semaphore(int(m.concurrency))
    limit = C.RateLimit(getattr(m, "requests_per_minute", None), getattr(m, "tokens_per_minute", None))
    backoff = C.Backoff(float(m.retry_base_s), float(m.retry_max_s), random.Random())
    t0, sent = time.perf_counter(), {"requests": 0}
    failed: list = []  # after a fatal error no request starts (no storm of refused requests)

    async def one(target, job):
        async with sem:
            if failed:
                return
            try:
                res = await C.send_with_retries(client, m.endpoint, job.body, bool(m.stream), m, backoff, limit,
                                                target.counts)
            except BaseException as e:
                failed.append(e)
                raise
        target.store.add(job.key, res)  # on disk before anything else happens
        sent["requests"] += 1
        bar.update(len(job.samples))
        bar.set_postfix_str(f"{sent['requests'] / max(time.perf_counter() - t0, 1e-9):.2f} req/s", refresh=False)

    tasks = [asyncio.ensure_future(one(t, j)) for t, j in items]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


def request_missing(run, targets: list) -> None:
    """Send every target's jobs whose responses are not on disk; ApiRunError (one line) when the endpoint
    fails, naming what each directory has saved."""
    from tqdm.auto import tqdm

    m = run.model
    items = [(t, j) for t in targets for j in t.todo()]
    for t in targets:
        todo = t.todo()
        t.counts.update(requests=0, retries=0, cached=len(t.jobs) - len(todo), sent=len(todo), wall_s=0.0)
    t0 = time.perf_counter()
    with tqdm(total=sum(len(j.samples) for _, j in items), desc=f"{run.strategy['name']} @ {m.name}", unit="seq",
              disable=not run.progress, file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            asyncio.run(_fetch_all(items, m, bar))
        except (C.ApiFailure, *C.RETRYABLE) as e:
            saved = "; ".join(_saved_line(t.store, t.jobs, t.run_dir) for t in targets)
            raise ApiRunError(f"{_failure_line(e, m)}; {saved}") from None
    for t in targets:
        t.counts["wall_s"] = time.perf_counter() - t0
        t.counts["new_tokens"] = sum(int((t.store.get(j.key).get("usage") or {}).get("completion_tokens") or 0)
                                     for owner, j in items if owner is t)


def start(run, run_dir: Path, prep, prompts) -> tuple[Target, dict]:
    """A run directory's config.yaml, run.json and requests, its response file opened."""
    spec = prep.spec
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_text(run_dir / results.CONFIG, run.to_yaml())
    jobs = build_jobs(run.model, spec, prompts, run.seed, run.dataset.system_prompt)
    info = {"strategy": spec.describe(), "model": f"api:{run.model.name}", "device": prep.device,
            "dtype": prep.dtype, "seed": run.seed, "batch_size": int(run.model.concurrency),
            "batch_size_setting": "model.concurrency", "num_prompts": len(prompts),
            "num_rows": sum(len(j.samples) for j in jobs), "empty_prompts_skipped": prep.empty_skipped,
            "api": api_info(run.model)}
    results.write_json_atomic(run_dir / results.RUN_INFO, info)
    return Target(run_dir, jobs, ResponseStore(run_dir)), info


def execute(run, run_dir, prep) -> dict:
    """runner.execute for model=api: {"run_dir", "metrics", "num_records", "strategy"}."""
    from decodebench.dirlock import DirLock

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    with DirLock(run_dir, "hydra.run.dir"):
        prompts = load_prompts(run, prep)
        target, info = start(run, run_dir, prep, prompts)
        try:
            results.note_kept(f"every finished response is in {run_dir / RESPONSES}; rerun with the same "
                              "hydra.run.dir to request only the rest")
            request_missing(run, [target])
        finally:
            target.store.close()
        return finish(run, run_dir, prep, info, target.jobs, target.store, prompts, target.counts, t_start)


def load_prompts(run, prep) -> list:
    """The dataset's prompts as the server will get them (no local tokenizer: no chat template here)."""
    from decodebench import data
    from decodebench.config import prefix_key

    try:
        prompts = data.to_prompts(prep.table, run.dataset, None)
    except ValueError as e:
        raise ConfigError(prefix_key("dataset", str(e))) from None
    if not prompts:
        raise ConfigError("dataset: no prompts left after loading; check dataset.limit")
    return prompts


def api_info(m) -> dict:
    return {"base_url": m.base_url, "name": m.name, "server": m.server, "endpoint": m.endpoint,
            "stream": bool(m.stream), "logprobs_kind": LOGPROBS_KIND[m.server] if m.logprobs else None}


def finish(run, run_dir: Path, prep, info: dict, jobs, store, prompts, counts: dict, t_start: float) -> dict:
    by_id = {p.id: p for p in prompts}
    records = [r for j in jobs for r in make_records(j, store.get(j.key), by_id[j.prompt_id], prep.spec, run.model,
                                                       tuple(prep.record))]
    writer = results.GenerationsWriter(run_dir)
    writer.write(records)
    order = {p.id: k for k, p in enumerate(prompts)}
    writer.close(sort_key=lambda r: (order[r["prompt_id"]], r["sample_index"]))
    info["strategy"]["chain"] = []  # the server applied its own chain
    results.write_json_atomic(run_dir / results.RUN_INFO, info)
    metrics = api_metrics([store.get(j.key) for j in jobs], counts)
    metrics.update(score(run, prep, run_dir, results.read_generations(run_dir)))
    metrics["wall_time_s"] = time.perf_counter() - t_start
    (run_dir / "error.json").unlink(missing_ok=True)
    results.write_json_atomic(run_dir / results.METRICS, metrics)
    results.note_kept(f"the run is complete in {run_dir}")
    return {"run_dir": str(run_dir), "metrics": metrics, "num_records": len(records), "strategy": spec_name(prep)}


def spec_name(prep) -> str:
    return prep.spec.name


def score(run, prep, run_dir: Path, records: list) -> dict:
    """The scorers: perplexity from the server's log-probs, the rest as for local runs (their own local
    scoring models where `scorers.<name>.model` names one)."""
    from decodebench.run_state import scoring_models
    from decodebench.scorers.plan import ScorerPlan

    own = _model_scorers(prep.plan)
    plan = ScorerPlan(entries=tuple(e for e in prep.plan.entries if e not in own), bootstrap=prep.plan.bootstrap)
    out = {}
    if own:
        out.update(perplexity_from_logprobs(records, run.model.base_url))
    models = scoring_models(plan.scoring_models(), prep.device, prep.dtype)
    out.update(plan.score(records, model=None, tokenizer=None, device=prep.device, seed=run.seed,
                          progress=run.progress, models=models))
    if prep.spec.search.get("selector") is not None:
        from decodebench.api_models.metrics import select

        chosen = select(records, prep.spec.search)
        writer = results.GenerationsWriter(run_dir, name="selected.jsonl")
        writer.write(chosen)
        writer.close()
        from decodebench.selectors import PREFIX

        m = plan.score(chosen, model=None, tokenizer=None, device=prep.device, seed=run.seed,
                       progress=run.progress, models=models)
        out.update({PREFIX + k: v for k, v in m.items()})
    return out
