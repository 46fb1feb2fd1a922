"""Grids of one strategy: the `sweep` verb and what Hydra's multirun shares with it.

    plan.py      the grid's points, their configs and fusion groups, the sweep directory (no model)
    execute.py   one model load, fused batches, a run directory per point, resume
    prefill.py   a prompt prefilled once for every point that shares it
    verb.py      python -m decodebench strategy=... sweep
    callback.py  the Hydra callback that ends a multirun with a leaderboard
"""
