"""The leaderboard report over fake run directories: rows, seeds, Pareto, failures, escaping, the CLI,
and the HTML page in a real headless browser (skipped without Debian's `chromium`)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from decodebench import report

PAYLOAD = "<script>document.title='pwned'</script> & <b>bold</b> | pipe\nnew line"


def write_run(d: Path, *, strategy: str = "topp", params: dict | None = None, seed: int = 0,
              metrics: dict | None = None, texts: list[str] | None = None, model: str = "embedded",
              error: str | None = None) -> Path:
    """A run directory as the runner writes it (config.yaml, run.json, generations.jsonl, metrics.json);
    with `error`, a failed grid point (error.json, no metrics.json)."""
    params = dict(params or {})
    d.mkdir(parents=True)
    cfg = {"model": {"name_or_path": model}, "dataset": {"name": "embedded", "limit": 4},
           "strategy": {"name": strategy, "do_sample": strategy != "greedy", "max_new_tokens": 16,
                        "temperature": None, "top_k": None, "top_p": None, **params},
           "seed": seed, "batch_size": 8, "device": "cpu", "dtype": "float32", "progress": False}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "run.json").write_text(json.dumps({"strategy": {"name": strategy, "method": "sampling", "params": params,
                                                         "search": {}}, "seed": seed, "model": model}))
    if error is not None:
        (d / "error.json").write_text(json.dumps({"error": error, "point": {**params, "seed": seed}}))
        return d
    texts = texts or [f"{strategy} text {i} seed {seed}" for i in range(4)]
    with open(d / "generations.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"prompt_id": f"p{i}", "prompt": f"Prompt {i} <i>&", "sample_index": 0, "text": t,
                                "num_tokens": 16, "finish_reason": "length", "reference": None}) + "\n")
    (d / "metrics.json").write_text(json.dumps(metrics or {}))
    return d


def m(div: float, ppl: float, tps: float = 100.0, **extra) -> dict:
    return {"tokens_per_s": tps, "wall_time_s": 3.0, "diversity": div, "rep_2": 1 - div,
            "perplexity": ppl, "gen_length": 16.0, "perplexity_ci_low": ppl - 1, "perplexity_ci_high": ppl + 1, **extra}


def make_sweep(root: Path) -> Path:
    """top_p in {0.5, 0.9, 0.95} x seeds {0, 1}, a greedy run, a failed point, a model text with markup."""
    for i, (p, div, ppl) in enumerate([(0.5, 0.30, 5.0), (0.9, 0.70, 9.0), (0.95, 0.80, 14.0)]):
        for seed in (0, 1):
            texts = [PAYLOAD, "plain"] if p == 0.9 else None
            write_run(root / f"{i}-strategy.top_p={p}" / f"seed{seed}", params={"top_p": p}, seed=seed,
                      metrics=m(div + 0.01 * seed, ppl + seed, tps=100 + seed), texts=texts)
    write_run(root / "3-greedy", strategy="greedy", metrics=m(0.2, 6.0, tps=120))  # dominated by top_p=0.5
    write_run(root / "4-strategy.top_p=0.99", params={"top_p": 0.99}, error="RuntimeError: CUDA out of memory | x")
    (root / "sweep.json").write_text(json.dumps({"strategy": "topp", "grid": {"top_p": [0.5, 0.9, 0.95, 0.99]}}))
    return root


@pytest.fixture
def sweep(tmp_path) -> Path:
    return make_sweep(tmp_path / "sweep")


def test_rows_group_seeds_and_mark_pareto(sweep):
    rep = report.build_report([sweep])
    by = {r.label: r for r in rep.rows}
    assert set(by) == {"topp top_p=0.5", "topp top_p=0.9", "topp top_p=0.95", "greedy", "topp top_p=0.99 seed=0"}
    r = by["topp top_p=0.9"]
    assert r.seeds == [0, 1] and r.ok
    assert r.stats["diversity"].mean == pytest.approx(0.705)
    assert r.stats["diversity"].std == pytest.approx(0.00707, abs=1e-4)  # sample std over the two seeds
    assert by["greedy"].stats["perplexity"].lo == 5.0  # one seed: the run's own interval
    assert by["topp top_p=0.99 seed=0"].error == "RuntimeError: CUDA out of memory | x"
    # default sort: diversity, highest first; failed last
    assert [r.label for r in rep.rows][0] == "topp top_p=0.95" and rep.rows[-1].label == "topp top_p=0.99 seed=0"
    # default pair: perplexity (lower first) vs diversity (higher); greedy is beaten by top_p=0.5 on both
    assert rep.pareto == ("perplexity", False, "diversity", True)
    assert {r.label for r in rep.rows if r.pareto} == {"topp top_p=0.5", "topp top_p=0.9", "topp top_p=0.95"}
    assert rep.swept == ["top_p"]


def test_sort_and_pareto_choices(sweep):
    rep = report.build_report([sweep], sort="tokens_per_s", pareto="rep_2,perplexity:max")
    assert rep.rows[0].label == "greedy"
    assert rep.pareto == ("rep_2", False, "perplexity", True)
    with pytest.raises(ValueError, match=r"report: --sort: unknown metric 'diversty'; did you mean 'diversity'"):
        report.build_report([sweep], sort="diversty")
    with pytest.raises(ValueError, match="did you mean 'perplexity'"):
        report.build_report([sweep], pareto="perplexty,diversity")
    with pytest.raises(ValueError, match="metric 'gen_length' has no better direction; write gen_length:max"):
        report.build_report([sweep], pareto="diversity,gen_length")
    with pytest.raises(ValueError, match="must end in :max or :min"):
        report.build_report([sweep], pareto="diversity,tokens_per_s:best")


def test_no_runs_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"^report: no runs found under .*empty; give run or sweep directories"):
        report.write_leaderboard([tmp_path / "empty"])
    with pytest.raises(SystemExit) as e:
        report.main([str(tmp_path / "empty")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: report: no runs found under") and err.count("\n") == 1


def test_files_csv_markdown_and_escaping(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    report.main([str(sweep), "--out", str(out), "--samples", "2"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["rows"] == 5 and last["failed"] == 1 and Path(last["leaderboard"]["html"]).is_file()

    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    by = {r["setting"]: r for r in rows}
    assert float(by["topp top_p=0.9"]["diversity_mean"]) == pytest.approx(0.705)
    assert by["topp top_p=0.9"]["seeds"] == "0 1" and by["topp top_p=0.9"]["top_p"] == "0.9"
    assert by["greedy"]["perplexity_std"] == "" and float(by["greedy"]["perplexity_ci_high"]) == 7.0
    failed = by["topp top_p=0.99 seed=0"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: CUDA out of memory | x"
    assert by["greedy"]["pareto"] == "0" and by["topp top_p=0.5"]["pareto"] == "1"

    md = (out / "leaderboard.md").read_text()
    assert "| diversity ↑ |" in md and "rep_2 ↓" in md and "tokens_per_s ↑" in md
    assert "0.705 ± 0.0071" in md and "6 [5, 7]" in md
    assert "CUDA out of memory \\| x" in md  # a pipe in a cell is escaped
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len({len(re.findall(r"(?<!\\)\|", ln)) for ln in table}) == 1  # every row has the same cells

    page = (out / "leaderboard.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "Prompt 0 &lt;i&gt;&amp;" in page
    assert page.count("data:image/png;base64,") == 3  # frontier, metrics against top_p, throughput
    assert "http://" not in page and "https://" not in page


def test_write_leaderboard_defaults_to_the_single_path(sweep):
    res = report.write_leaderboard(sweep, samples=0)
    assert Path(res["markdown"]).parent == sweep and len(res["rows"]) == 5
    assert report.build_report([sweep / "3-greedy"]).rows[0].label == "greedy"  # a single run directory


def test_settings_that_vary_name_the_rows(tmp_path):
    write_run(tmp_path / "a", strategy="topk", params={"top_k": 10}, metrics=m(0.5, 8.0), model="m1")
    write_run(tmp_path / "b", strategy="topk", params={"top_k": 10}, metrics=m(0.6, 9.0), model="m2")
    write_run(tmp_path / "c", strategy="topp", params={"top_p": 0.9, "temperature": 0.7}, metrics=m(0.7, 10.0))
    labels = sorted(r.label for r in report.build_report([tmp_path]).rows)
    # top_k does not vary among topk runs; model varies among all runs
    assert labels == ["topk model=m1", "topk model=m2", "topp model=embedded"]


def test_failed_and_unfinished_points_still_report(tmp_path):
    write_run(tmp_path / "a", params={"top_p": 0.5}, error="Traceback (most recent call last):\nValueError: bad <x>")
    write_run(tmp_path / "b", params={"top_p": 0.9}, metrics=m(0.5, 8.0), texts=["```code``` and ````more````"])
    write_run(tmp_path / "c", params={"top_p": 0.9}, metrics=m(0.5, 8.0))
    (tmp_path / "c" / "metrics.json").unlink()  # killed before scoring
    res = report.write_leaderboard(tmp_path, samples=1)
    assert [(r["setting"], r["status"]) for r in res["rows"]] == [
        ("topp top_p=0.9", "ok"), ("topp top_p=0.5", "failed"), ("topp top_p=0.9 [c]", "failed")]
    assert res["rows"][1]["error"] == "ValueError: bad <x>" and res["rows"][2]["error"].startswith("unfinished")
    md = Path(res["markdown"]).read_text()
    assert "`````text\n```code``` and ````more````\n`````" in md  # the fence outlasts any backtick run
    write_run(tmp_path / "only" / "d", error="boom")
    assert report.write_leaderboard(tmp_path / "only")["rows"][0]["status"] == "failed"


def make_topp6(root: Path) -> Path:
    """The shipped top-p grid (top_p 0.8/0.9/0.95 x temperature 0.7/1.0) as a researcher sees it: close
    quality and diversity (two settings identical), and every text metric, so the table is wide."""
    wide = {k: 0.5 for k in ("distinct_1", "distinct_2", "distinct_3", "distinct_4", "seq_rep_4", "rep_w", "rep_r",
                             "repetition_loop_rate", "self_bleu_4", "compression_ratio", "zipf", "mauve",
                             "coherence", "coherence_embedding", "reference_perplexity", "prefill_tokens_per_s")}
    close = [(0.901, 10.2), (0.905, 10.3), (0.912, 10.9), (0.912, 10.9), (0.925, 11.6), (0.931, 12.0)]
    grid = [(p, temp) for p in (0.8, 0.9, 0.95) for temp in (0.7, 1.0)]
    for (p, temp), (div, ppl) in zip(grid, close):
        write_run(root / f"top_p={p},temperature={temp},seed=0", params={"top_p": p, "temperature": temp},
                  metrics=m(div, ppl, **wide))
    return root


def test_frontier_numbers_never_overlap(tmp_path):
    """Six settings within a few hundredths of each other: every point gets its table number, no two
    numbers overlap, identical settings share one label."""
    from decodebench.report import plots

    rep = report.build_report([make_topp6(tmp_path / "sweep")])
    drawn = {}
    real = plots._png

    def keep(fig, tight=True):
        drawn["fig"] = fig
        return real(fig, tight)

    plots._png = keep
    try:
        assert plots.frontier(rep) is not None
    finally:
        plots._png = real
    fig = drawn["fig"]
    ax = fig.axes[0]
    labels = [t for t in ax.texts]
    assert sorted(t.get_text() for t in labels) == ["1", "2", "3,4", "5", "6"]  # rows 3 and 4 tie on both
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    key = fig.texts[0].get_text().splitlines()
    assert key[0].split() == ["#", "setting"] and len(key) == 7
    assert key[1].split(None, 1) == ["1", rep.rows[0].label]  # the key names each number as the table does


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chrome-profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=60)


def _need_chromium() -> None:
    """CI sets DECODEBENCH_REQUIRE_BROWSER=1 (.ci/run), so there a missing browser fails instead of skipping."""
    if shutil.which("chromium") is None:
        if os.environ.get("DECODEBENCH_REQUIRE_BROWSER"):
            pytest.fail("DECODEBENCH_REQUIRE_BROWSER is set but chromium is missing (scripts/setup.sh --browser)")
        pytest.skip("needs Debian's chromium (bash scripts/setup.sh --browser, or apt-get install chromium)")


def test_html_in_headless_browser(sweep, tmp_path):
    _need_chromium()
    report.write_leaderboard([sweep], tmp_path / "out")
    page = (tmp_path / "out" / "leaderboard.html").as_uri()
    dom = _chromium(["--virtual-time-budget=2000", "--dump-dom", page], tmp_path).stdout
    assert "<title>decodebench leaderboard</title>" in dom  # the payload did not rename the page
    body = re.search(r"<tbody>(.*?)</tbody>", dom, re.S).group(1)
    assert body.count("<tr") == 5 and "failed: RuntimeError: CUDA out of memory" in body
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in dom
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)) == 3


def test_leaderboard_screenshot_of_a_six_point_sweep(tmp_path):
    """What users see first, in a 1400-pixel-wide window. DECODEBENCH_SCREENSHOTS=DIR keeps the PNG there
    for a person to look at."""
    _need_chromium()
    out = report.write_leaderboard([make_topp6(tmp_path / "sweep")], tmp_path / "out")
    shot = tmp_path / "leaderboard.png"
    _chromium([f"--screenshot={shot}", "--window-size=1400,2200", "--hide-scrollbars",
               Path(out["html"]).as_uri()], tmp_path)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1400
    assert len(png) > 50_000  # a blank page is a few kB
    keep = os.environ.get("DECODEBENCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "leaderboard-topp6.png")


def test_wide_table_scrolls_with_the_setting_column_kept_in_view(tmp_path):
    """The page scrolled sideways (a copy with a one-line script, which the real page's CSP forbids): the
    table's right part moves, the #, ★ and setting columns on its left do not."""
    _need_chromium()
    import matplotlib.image as mpimg

    out = report.write_leaderboard([make_topp6(tmp_path / "sweep")], tmp_path / "out", samples=0)
    page = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", Path(out["html"]).read_text())
    shots = []
    for left in (0, 700):
        copy = tmp_path / f"scrolled-{left}.html"
        copy.write_text(page.replace("</body>", f"<script>document.querySelector('.scroll').scrollLeft = {left};"
                                                "</script></body>"))
        shot = tmp_path / f"scrolled-{left}.png"
        _chromium(["--virtual-time-budget=2000", f"--screenshot={shot}", "--window-size=1400,420",
                   "--hide-scrollbars", copy.as_uri()], tmp_path)
        shots.append(mpimg.imread(shot))
    still, moved = shots
    assert still.shape == moved.shape
    # up to the end of the pinned setting column: the same pixels (a composited layer may shade text a
    # few levels differently); past it, the metric columns did scroll
    assert abs(still[:, :420] - moved[:, :420]).max() < 0.1
    assert (abs(still[:, 500:] - moved[:, 500:]) > 0.25).mean() > 0.01

