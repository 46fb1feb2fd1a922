"""Grids of one strategy: the `sweep` verb and what Hydra's multirun shares with it.

    plan.py      the grid's points, their configs and fusion groups, the sweep directory (no model)
    execute.py   one model load, fused batches (a prompt prefilled once for all points), a run directory
                 per point, resume
    verb.py      python -m decodebench strategy=... sweep
    callback.py  the Hydra callback that ends a multirun with a leaderboard
"""
