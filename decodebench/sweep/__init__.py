"""Grids of one strategy (the `sweep` verb, what Hydra's multirun shares with it) and studies across methods.

    plan.py      the grid's points, their configs and fusion groups, the sweep directory (no model)
    execute.py   one model load, fused batches (a prompt prefilled once for all points), a run directory
                 per point, resume
    verb.py      python -m decodebench strategy=... sweep
    callback.py  the Hydra callback that ends a multirun with a leaderboard

Studies (every method of conf/study/<name>.yaml on the same prompts, docs/studies.md):

    study_plan.py    the methods, their points, fusion across strategies, bad input (no model)
    study_run.py     one model load, the points through execute.run_points, the study directory, selection
    study_scores.py  each point's objective per prompt, on dev and on test (cached beside the point)
    select.py        the dev/test split by prompt id, the choice on dev, bootstrap intervals, the paired test
"""
