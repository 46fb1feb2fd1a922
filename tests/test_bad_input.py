"""Every bad input, on every verb: exit code 2, one line on stderr that names the key, no traceback, and no
model loaded (the loader is counted). Cases run in-process through `decodebench.__main__.main`, as the
command line does, so the table stays fast; the checks that need the model's config use `model=tiny`,
whose tokenizer and config are built in code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_report import m, write_run

# (argv, what the one stderr line must name). Files named in <angle brackets> are made by the fixture.
RUN = [
    (["strategy=topp", "strategy.top_p=1.5"], "strategy.top_p"),
    (["strategy=topp", "strategy.top_p=0"], "strategy.top_p"),
    (["strategy=topk", "strategy.top_k=-1"], "strategy.top_k"),
    (["strategy=sample", "strategy.temperature=-0.5"], "strategy.temperature"),
    (["strategy.max_new_tokens=0"], "strategy.max_new_tokens"),
    (["strategy=topq"], "strategy"),
    (["strategy.top_pp=0.5"], "strategy.top_pp"),
    (["strategy.top_k=abc"], "strategy.top_k"),
    (["strategy=minp", "strategy.min_p=2"], "strategy.min_p"),
    (["strategy=typical", "strategy.typical_p=0"], "strategy.typical_p"),
    (["strategy=epsilon", "strategy.epsilon_cutoff=1.5"], "strategy.epsilon_cutoff"),
    (["strategy=eta", "strategy.eta_cutoff=-1"], "strategy.eta_cutoff"),
    (["strategy.repetition_penalty=0"], "strategy.repetition_penalty"),
    (["strategy.no_repeat_ngram_size=-2"], "strategy.no_repeat_ngram_size"),
    (["strategy.num_return_sequences=0"], "strategy.num_return_sequences"),
    (["strategy=beam", "strategy.num_beams=0"], "strategy.num_beams"),
    (["strategy=beam", "strategy.do_sample=true"], "strategy.do_sample"),
    (["strategy=beam", "strategy.early_stopping=maybe"], "strategy.early_stopping"),
    (["strategy=diverse_beam", "strategy.num_beam_groups=3"], "strategy.num_beam"),
    (["strategy=contrastive", "strategy.penalty_alpha=2"], "strategy.penalty_alpha"),
    (["strategy=contrastive", "strategy.num_return_sequences=2"], "strategy.num_return_sequences"),
    (["strategy.order=[unknown]"], "strategy.order"),
    (["strategy.order=[top_k,top_k]"], "strategy.order"),
    (["strategy.stop=['']"], "strategy.stop"),
    (["strategy.stopping=[nope]"], "strategy.stopping"),
    (["strategy.max_time=0"], "strategy.max_time"),
    (["strategy=beam", "strategy.stream=sometimes"], "strategy.stream"),
    (["strategy=beam", "strategy.stream=lookahead", "strategy.lookahead=0"], "strategy.lookahead"),
    (["strategy=topk", "strategy.extra.top_zz=0.3"], "top_zz"),
    (["seed=-1"], "seed"),
    (["seed=1180591620717411303424"], "seed"),
    (["seed=abc"], "seed"),
    (["seed=2**70"], "seed"),
    (["batch_size=0"], "batch_size"),
    (["device=tpu"], "device"),
    (["dtype=float8"], "dtype"),
    (["record=[nope]"], "record"),
    (["strategy=beam", "record=[entropy]"], "record"),
    (["progress=maybe"], "progress"),
    (["foo"], "'foo'"),
    (["plugins=[no_such_module_xyz]"], "plugins"),
    (["plugins=[boom_plugin_xyz]"], "plugins"),
    (["hydra.run.dir=/proc/decodebench-x"], "hydra.run.dir"),
    (["hydra.run.dir=<file>/sub"], "hydra.run.dir"),
    (["model=embeded"], "model"),
    (["model.name_or_path=/nonexistent/model-dir"], "model.name_or_path"),
    (["model.name_or_path=a/b/c"], "model.name_or_path"),
    (["model.name_or_path=/nonexistent/m.gguf"], "model.name_or_path"),
    (["model.name_or_path=<dir>", "model.gguf_file=x.gguf"], "model.gguf_file"),
    (["model.name_or_path=''"], "model.name_or_path"),
    (["model=tiny", "strategy.max_new_tokens=1000000000000"], "strategy.max_new_tokens"),
    (["model=tiny", "strategy.max_new_tokens=512"], "strategy.max_new_tokens"),
    (["model=tiny", "dataset=file", "dataset.path=<long.jsonl>"], "strategy.max_new_tokens"),
    (["model=tiny", "batch_size=100000000", "strategy.max_new_tokens=200"], "strategy.max_new_tokens: the KV cache"),
    (["model=tiny", "strategy=beam", "dataset=file", "dataset.path=<long.jsonl>"], "dataset.truncate"),
    (["dataset=embeded"], "dataset"),
    (["dataset=file", "dataset.path=/nonexistent/prompts.jsonl"], "dataset.path"),
    (["dataset=file"], "dataset.path"),
    (["dataset=file", "dataset.path=<prompts.xlsx>"], "dataset.path"),
    (["dataset=file", "dataset.path=<zero.jsonl>"], "dataset.path"),
    (["dataset=file", "dataset.path=<latin1.csv>"], "dataset.path"),
    (["dataset=file", "dataset.path=<broken.jsonl>"], "dataset.path"),
    (["dataset=file", "dataset.path=<empty_prompt.csv>"], "dataset.empty_prompts"),
    (["dataset=file", "dataset.path=<dup_ids.jsonl>"], "dataset.id_column"),
    (["dataset=file", "dataset.path=<numbers.jsonl>"], "dataset.prompt_column"),
    (["dataset.prompt_column=nope"], "dataset.prompt_column"),
    (["dataset.id_column=nope"], "dataset.id_column"),
    (["dataset.limit=0"], "dataset.limit"),
    (["dataset.prefix_tokens=-1"], "dataset.prefix_tokens"),
    (["dataset.split=test"], "dataset.split"),
    (["dataset.subset=x"], "dataset.subset"),
    (["dataset.system_prompt=hi"], "dataset.system_prompt"),
    (["dataset.path=x.jsonl"], "dataset.path"),
    (["dataset.truncate=right"], "dataset.truncate"),
    (["dataset.empty_prompts=maybe"], "dataset.empty_prompts"),
    (["dataset.reference_column=text", "dataset.prefix_tokens=4"], "dataset.reference_column"),
    (["logger=wandbb"], "logger"),
    (["logger.mode=sometimes"], "logger.mode"),
    (["logger.init_timeout=0"], "logger.init_timeout"),
    (["logger.num_samples=abc"], "logger.num_samples"),
    (["scorers.names=[nope]"], "scorers.names"),
    (["scorers=nope"], "scorers"),
    (["scorers.bootstrap.nope=1"], "scorers.bootstrap"),
    (["scorers.nope_key=1"], "scorers"),
    (["scorers.perplexity.model=a/b/c"], "scorers.perplexity.model"),
    # issue 19: limits from the model's config and memory, before its weights
    (["model=tiny", "strategy=topk", "strategy.top_k=99999999999999999999"], "strategy.top_k"),
    (["model=tiny", "strategy=topk", "strategy.top_k=100000"], "strategy.top_k"),
    (["model=tiny", "strategy.bad_words_ids=[[99999999]]"], "strategy.bad_words_ids"),
    (["model=tiny", "strategy.logit_bias={99999999:1.0}"], "strategy.logit_bias"),
    (["model=tiny", "strategy.logit_bias={5:abc}"], "strategy.logit_bias"),
    (["model=tiny", "strategy.logit_bias=[5]"], "strategy.logit_bias"),
    (["model=tiny", "strategy=beam", "strategy.num_beams=10000000"], "strategy.num_beams"),
    (["model=tiny", "strategy=beam", "strategy.num_beams=10000000", "batch_size=4"], "strategy.num_beams"),
    (["model=tiny", "strategy.num_return_sequences=1000000000000"], "strategy.num_return_sequences"),
    (["model=tiny", "strategy.max_time=nan"], "strategy.max_time"),
    (["model=tiny", "strategy.min_new_tokens=1000", "strategy.max_new_tokens=8"], "strategy.min_new_tokens"),
    (["model=tiny", "dataset=file", "dataset.path=<space_prompt.csv>"], "dataset.empty_prompts"),
    (["model=tiny", "dataset=file", "dataset.path=<two_prompts.csv>"], "two_prompts.csv:1"),
    (["model=tiny", "dataset=file", "dataset.path=<deep.jsonl>"], "deep.jsonl:2"),
    (["model=tiny", "dataset=file", "dataset.path=<bad_utf8.jsonl>"], "bad_utf8.jsonl:6"),
]
SWEEP = [
    (["strategy=greedy", "sweep"], "sweep.grid"),
    (["strategy=topp", "sweep", "sweep.grid.top_q=[0.5]"], "sweep.grid.top_q"),
    (["strategy=topp", "sweep", "sweep.grid.top_p=0.5"], "sweep.grid.top_p"),
    (["strategy=topp", "sweep", "sweep.grid.top_p=[]"], "sweep.grid.top_p"),
    (["strategy=topp", "sweep", "sweep.grid.top_p=[0.5,0.5]"], "sweep.grid.top_p"),
    (["strategy=topp", "sweep", "sweep.grid.top_p=[1.5]"], "strategy.top_p"),
    (["strategy=topp", "sweep", "sweep.grid.seed=[1]"], "sweep.grid.seed"),
    (["strategy=topp", "sweep", "sweep.seeds=[]"], "sweep.seeds"),
    (["strategy=topp", "sweep", "sweep.seeds=[-1]"], "sweep.seeds"),
    (["strategy=topp", "sweep", "sweep.fuse=0"], "sweep.fuse"),
    (["strategy=topp", "sweep", "seed=-3"], "seed"),
    (["strategy=topp", "sweep", "-m"], "sweep"),
    (["strategy=topp", "sweep", "hydra.run.dir=/tmp/x"], "hydra.run.dir"),
    (["strategy=beam", "sweep", "sweep.grid.top_p=[0.5]"], "sweep.grid.top_p"),
    (["strategy=topp", "sweep", "sweep.dir=<file>"], "sweep.dir"),
    (["strategy=topp", "sweep", "sweep.dir=<other_sweep>"], "sweep.dir"),
    (["strategy=topp", "sweep", "sweep.dir=<run>"], "sweep.dir"),
    (["strategy=topp", "sweep", "model=tiny", "strategy.max_new_tokens=600"], "strategy.max_new_tokens"),
    (["strategy=topp", "sweep", "model=tiny", "dataset=file", "dataset.path=<long.jsonl>"], "strategy.max_new_tokens"),
    (["strategy=topp", "sweep", "model=tiny", "--config-dir", "<listgrid>", "sweep=listgrid"], "listgrid.yaml"),
]
SCORE = [
    (["score"], "generations"),
    (["score", "generations=/nonexistent/generations.jsonl"], "generations"),
    (["score", "generations=<gens.jsonl>", "scorers.names=[nope]"], "scorers.names"),
    (["score", "generations=<gens.jsonl>", "seed=-1"], "seed"),
    (["score", "generations=<gens.jsonl>", "scorers=all"], "reference_field"),
    (["score", "generations=<gens.jsonl>", "device=tpu"], "device"),
    (["score", "generations=<gens.jsonl>", "logger.mode=x"], "logger.mode"),
    (["score", "generations=<gens.jsonl>", "model.name_or_path=/nonexistent/model-dir"], "model.name_or_path"),
    (["score", "generations=<crafted>"], "model.trust_remote_code"),
    (["score", "generations=<zero.jsonl>"], "generations"),
    (["score", "generations=<deep.jsonl>"], "deep.jsonl:2"),
    (["score", "generations=<bad_utf8.jsonl>"], "bad_utf8.jsonl:6"),
]
REPORT = [
    (["report"], "report"),
    (["report", "/nonexistent/runs"], "/nonexistent/runs"),
    (["report", "<dir>"], "<dir>"),
    (["report", "<run>", "--sort", "nope"], "sort"),
    (["report", "<run>", "--pareto", "nope"], "pareto"),
    (["report", "<run>", "--samples", "-1"], "--samples"),
    (["report", "<run>", "--samples", "x"], "--samples"),
    (["report", "<run>", "--out", "<file>"], "--out"),
    (["report", "<run>", "--bogus"], "--bogus"),
    # issue 19: run directories are data; each file's shape is checked and named
    (["report", "<metrics_list>"], "metrics_list/metrics.json"),
    (["report", "<metrics_str>"], "metrics_str/metrics.json"),
    (["report", "<error_list>"], "error_list/error.json"),
    (["report", "<info_list>"], "info_list/run.json"),
    (["report", "<yaml_tag>"], "yaml_tag/config.yaml:1"),
    (["report", "<config_list>"], "config_list/config.yaml"),
    (["report", "<bad_json>"], "bad_json/metrics.json:1"),
    (["report", "<latin1_json>"], "latin1_json/metrics.json"),
    (["report", "<deep_json>"], "deep_json/metrics.json"),
    (["report", "<link_out>"], "link_out/metrics.json"),
]
CASES = RUN + SWEEP + SCORE + REPORT


@pytest.fixture(autouse=True)
def own_log_handlers():
    """An in-process Hydra run binds the root logger's handlers to this test's captured stderr; put the
    handlers back afterwards, so a later test never logs into a closed stream."""
    import logging

    root = logging.getLogger()
    saved = [h for h in root.handlers if not getattr(getattr(h, "stream", None), "closed", False)]
    root.handlers[:] = saved  # an earlier module's in-process Hydra run may have left one on a closed stream
    yield
    root.handlers[:] = saved


def test_the_table_covers_every_verb_with_at_least_80_cases():
    assert len(CASES) >= 80
    assert all(len(t) >= 5 for t in (RUN, SWEEP, SCORE, REPORT))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The files the table names in <angle brackets>."""
    d = tmp_path_factory.mktemp("bad")
    out = {}

    def put(name: str, data: bytes | str) -> None:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        out[f"<{name}>"] = str(p)

    put("long.jsonl", json.dumps({"prompt": "a" * 5000}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    put("prompts.xlsx", "x")
    put("zero.jsonl", "")
    put("latin1.csv", b"prompt\ncaf\xe9\n")
    put("broken.jsonl", '{"prompt": "a"}\n{broken\n')
    put("empty_prompt.csv", 'prompt\nhello\n""\n')
    put("dup_ids.jsonl", '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n')
    put("numbers.jsonl", '{"prompt": 1}\n{"prompt": 2}\n')
    put("gens.jsonl", json.dumps({"prompt_id": "a", "prompt": "p", "sample_index": 0, "text": "t u v"}) + "\n")
    put("file", "not a directory")
    put("space_prompt.csv", 'prompt\nhello\n"  \t "\n')
    put("two_prompts.csv", "prompt,prompt\na,b\n")
    put("deep.jsonl", '{"prompt": "a"}\n{"prompt": ' + "[" * 100000 + "]" * 100000 + "}\n")
    put("bad_utf8.jsonl", "".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)).encode()
        + b'{"prompt": "caf\xe9"}\n')
    put("listgrid/sweep/listgrid.yaml", "grid:\n  - 0.5\n  - 0.9\n")
    out["<listgrid>"] = str(d / "listgrid")
    bad_runs(d, out)
    put("boom_plugin_xyz.py", "raise RuntimeError('boom at import')\n")
    (d / "dir").mkdir()
    out["<dir>"] = str(d / "dir")
    out["<run>"] = str(write_run(d / "run", metrics=m(0.5, 5.0)))
    other = d / "other_sweep"
    other.mkdir()
    (other / "sweep.json").write_text(json.dumps({"fingerprint": "0", "config": {"seed": 1}, "points": []}))
    out["<other_sweep>"] = str(other)
    out["<crafted>"] = str(crafted_run_dir(d / "crafted", d / "marker"))
    out["marker"] = str(d / "marker")
    return out


def bad_runs(d: Path, out: dict) -> None:
    """Run directories whose files are not what a run writes: each is refused naming the file."""
    def bad(name: str, file: str, data: bytes | str) -> None:
        run = write_run(d / name, metrics=m(0.5, 5.0))
        (run / file).unlink(missing_ok=True)
        (run / file).write_bytes(data if isinstance(data, bytes) else data.encode())
        out[f"<{name}>"] = str(run)

    bad("metrics_list", "metrics.json", "[1, 2]")
    bad("metrics_str", "metrics.json", '"fast"')
    bad("info_list", "run.json", "[]")
    bad("yaml_tag", "config.yaml", "!!python/object/apply:os.system ['true']\n")
    bad("config_list", "config.yaml", "- a\n- b\n")
    bad("bad_json", "metrics.json", "{nope")
    bad("latin1_json", "metrics.json", b'{"caf\xe9": 1}')
    bad("deep_json", "metrics.json", "[" * 100000 + "]" * 100000)
    run = write_run(d / "error_list", error="x")
    (run / "error.json").write_text("[]")
    out["<error_list>"] = str(run)
    run = write_run(d / "link_out", metrics=m(0.5, 5.0))
    (run / "metrics.json").unlink()
    (run / "metrics.json").symlink_to("/etc/hostname")
    out["<link_out>"] = str(run)


def crafted_run_dir(run: Path, marker: Path) -> Path:
    """A run directory whose config.yaml names a model directory with an `auto_map`: importing its code
    would write `marker`. trust_remote_code is on in the run's config, as a hostile file would set it."""
    model = run.parent / f"{run.name}-model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.Evil",
                     "AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}))
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    for mod in ("configuration_evil", "modeling_evil", "tokenization_evil"):
        (model / f"{mod}.py").write_text(code)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"model:\n  name_or_path: {model}\n  trust_remote_code: true\n")
    (run / "generations.jsonl").write_text(json.dumps({"prompt_id": "a", "prompt": "p", "sample_index": 0,
                                                       "text": "some text here"}) + "\n")
    return run


@pytest.fixture
def loads(monkeypatch) -> list:
    """Every model load, counted: the cases must refuse before any."""
    from decodebench import models

    seen: list = []
    real = models.load_model

    def counted(*a, **k):
        seen.append(a)
        return real(*a, **k)

    monkeypatch.setattr(models, "load_model", counted)
    return seen


@pytest.mark.parametrize("argv,key", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_before_any_model_loads(argv, key, files, loads, tmp_path, monkeypatch,
                                                             capsys):
    from decodebench.__main__ import main

    monkeypatch.chdir(tmp_path)  # nothing a case writes lands in the repository
    monkeypatch.syspath_prepend(str(Path(files["<file>"]).parent))
    argv = [_fill(a, files) for a in argv]
    key = _fill(key, files)
    if argv[0] not in ("report", "score") and "sweep" not in argv and not any("hydra.run.dir" in a for a in argv):
        argv.append(f"hydra.run.dir={tmp_path / 'run'}")
    if argv[0] == "score":
        argv.append(f"hydra.run.dir={tmp_path / 'score'}")
    with pytest.raises(SystemExit) as exc:
        main(argv + ["logger=none"] if argv[0] != "report" else argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exc.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert key in lines[0], lines[0]
    assert "Traceback" not in err
    assert loads == [], "a model was loaded before the refusal"
    assert not Path(files["marker"]).exists(), "code from an untrusted directory ran"


def _fill(s: str, files: dict) -> str:
    for k, v in files.items():
        s = s.replace(k, v)
    return s


def test_messages_list_known_names_once_and_keep_the_key_apart_from_the_sentence(files, monkeypatch):
    from decodebench.cli.preflight import compose_checked

    err = compose_checked(["scorers.names=[nope]"])[1]
    known = err.split("(known: ")[1].rstrip(")").split(", ")
    assert err.startswith("scorers.names: unknown scorer 'nope'") and len(known) == len(set(known)) > 10
    assert compose_checked(["strategy.order=[unknown]"])[1].startswith("strategy.order: unknown logits transform")
    monkeypatch.syspath_prepend(str(Path(files["<file>"]).parent))
    err = compose_checked(["plugins=[boom_plugin_xyz]"])[1]
    assert "RuntimeError: boom at import" in err and "boom_plugin_xyz.py:1" in err


def test_a_broken_jsonl_logs_nothing_before_its_one_line_error(files):
    import logging

    from decodebench import data

    seen: list = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger("datasets").addHandler(handler)
    try:
        with pytest.raises(ValueError, match="dataset.path: could not read broken.jsonl"):
            data.load_table(data.DatasetConfig(name="file", path=files["<broken.jsonl>"]))
    finally:
        logging.getLogger("datasets").removeHandler(handler)
    assert seen == []
