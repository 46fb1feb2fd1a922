"""The run verb's table for a person (decodebench/cli/summary.py): headline metrics on stderr."""

from __future__ import annotations

import io

from decodebench.cli import summary


def res_with(metrics: dict, **kw) -> dict:
    return {"run_dir": "outputs/runs/x", "metrics": metrics, "num_records": 12, "strategy": "topp", **kw}


def row(text: str, label: str) -> list[str]:
    """The cells of the row whose label is `label`."""
    hits = [line for line in text.splitlines() if line.startswith(f"  {label}  ")]
    assert len(hits) == 1, (label, text)
    return hits[0].split()


def test_each_headline_metric_has_its_value_and_interval():
    m = {"tokens_per_s": 135.4321, "diversity": 0.053821, "diversity_ci_low": 0.041, "diversity_ci_high": 0.0679,
         "perplexity": 6.78912, "perplexity_std": 0.25, "wall_time_s": 42.06, "rep_2": float("nan")}
    text = summary.table(res_with(m))
    assert text.splitlines()[0] == "decodebench: 12 generations, strategy topp, 42.1 s"
    assert row(text, "generation speed")[2:4] == ["135.4", "tokens/s"]
    assert row(text, "diversity")[1:4] == ["0.05382", "[0.041,", "0.0679]"]
    assert row(text, "perplexity")[1:4] == ["6.789", "±", "0.25"]
    assert row(text, "rep-2")[1] == "undefined"  # NaN: too few words for bigrams, said as such
    assert "distinct-2" not in text and "length" not in text  # not computed: no row, no made-up value
    assert text.splitlines()[-1] == "results: outputs/runs/x  (generations.jsonl, metrics.json)"


def test_offline_wandb_run_says_how_to_upload_it_and_goes_to_stderr(capsys):
    d = "outputs/runs/x/wandb/offline-run-20261202_000000-abc"
    summary.print_summary(res_with({"tokens_per_s": 1.0}, wandb_dir=d))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"W&B offline run; upload it with: wandb sync {d}"
    buf = io.StringIO()
    summary.print_summary(res_with({"tokens_per_s": 1.0}, wandb_dir="/runs/online-dir"), file=buf)
    assert buf.getvalue().splitlines()[-1] == "W&B run: /runs/online-dir"


def test_every_row_is_a_metric_the_default_scorers_report():
    """The table's keys are real metric names: the run metrics or a scorer's (a rename would drop a row)."""
    from decodebench.runner import run_metrics
    from decodebench.scorers import resolve_scorers

    class Stats:
        generated_tokens = prompt_tokens = forward_passes = tokens_processed = row_steps = 1
        decode_s, compile_s, ttft_s, step_ms = 1.0, 0.0, [0.1], [1.0]

    names = set(run_metrics(Stats(), 1.0, "cpu"))
    names |= {k for scorer, _ in resolve_scorers({"names": "all"}).entries for k in scorer.metric_names}
    assert {key for key, _, _ in summary.ROWS} <= names
