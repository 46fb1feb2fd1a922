"""The command line: the verbs (verbs.py), the checks before Hydra runs (preflight.py), the Hydra entry of
a run (entry.py) and the `score` verb (score.py). Glue only: the work is done in runner, sweep, report."""
