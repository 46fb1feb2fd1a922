"""Shared histories: rows of the running batch whose histories are identical run one forward between them.

Rows with the same prompt admitted together (a study's or a fused sweep's points, which share their noise
by default, or samples of one prompt) have the same next-token logits for as long as they have generated
the same tokens. They form a *group*; its *leader* is one of its rows, and only leaders are fed to the
model. Each step, after sampling, a group splits by the token each member drew:

    the members that drew the leader's token     stay with it
    the members that drew another token t        a new group, led by its lowest slot, whose KV row
                                                  first gets a copy of the old leader's (the fork)

Finished rows leave their group (a group whose leader finished passes its KV to the next leader). A
follower's own KV row is not written while it follows; the fork fills it before it is ever read. A
follower's logits are its leader's (`spread`), so the chain, the sampler and every per-row table see
each row as before: the tokens equal the unshared batch's, as long as a row's logits do not depend on
its batch-mates (the engine's invariant, kvcache.py).

The cost: one host read of the step's tokens per step (grouping is host bookkeeping, a few microseconds
for 64 rows) and, at a fork, one copy per KV tensor. So it is on by default on a CPU, where a host read
costs nothing, and off on accelerators (`share_histories=true` turns it on there too), in compiled steps
(the graph's shapes would change with the groups) and with classifier-free guidance (mirror rows).
When every group is one row, the batch stops reading tokens until rows with a common prompt next join.

    >>> sh = SharedHistories(4)
    >>> sh.admitted([0, 1, 2, 3], [(5, 6), (5, 6), (7,), (5, 6)])
    >>> sh.lead
    [0, 0, 2, 0]
    >>> sh.regroup([9, 9, 4, 8], [False] * 4)     # row 3 drew another token: it forks from row 0
    ([0, 2, 3], [(0, 3)])
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


class SharedHistories:
    """Host bookkeeping of the groups of one running batch of `slots` slots (see the module docstring)."""

    def __init__(self, slots: int):
        self.lead: list[int] = list(range(slots))  # the leader of each slot (itself when alone or idle)
        self.live: list[bool] = [False] * slots  # running and not finished, as the host last saw it
        self.active = False  # some group has more than one live row
        self.fed: Optional[int] = None  # rows the step just run fed (its leaders), when it shared

    def admitted(self, slots: Sequence[int], prompts: Sequence[Sequence[int]]) -> None:
        """Rows joining together: those with the same prompt form a group (their prefill is one)."""
        first: dict = {}
        for s, p in zip(slots, prompts):
            key = tuple(p)
            self.lead[s] = first.setdefault(key, s)
            self.live[s] = True
        self.active = self.active or len(first) < len(slots)

    def regroup(self, tok: Sequence[int], fin: Sequence[bool]) -> tuple[list[int], list[tuple[int, int]]]:
        """The step's groups from the tokens `tok` the first `a` slots drew and their `fin` flags.
        Returns (the leaders, sorted; the forks (source leader, new leader), to copy before the forward)."""
        groups: dict = {}
        for s, (t, f) in enumerate(zip(tok, fin)):
            if not self.live[s]:
                continue
            if f:
                self.live[s] = False
                continue
            groups.setdefault((self.lead[s], t), []).append(s)
        forks, leaders = [], []
        for (old, _), members in groups.items():
            new = old if old in members else members[0]
            if new != old:
                forks.append((old, new))
            for s in members:
                self.lead[s] = new
            leaders.append(new)
        for s in range(len(tok)):  # finished and idle rows lead themselves: nobody reads their logits
            if not self.live[s]:
                self.lead[s] = s
        leaders.sort()
        self.active = len(leaders) < sum(self.live)
        return leaders, forks

    def release(self, dead: Sequence[int]) -> list[tuple[int, int]]:
        """Slots leaving (harvested) that still lead live rows hand their group to its lowest other
        member. Returns the forks (old leader, new leader) to copy before the slots are reused."""
        forks = []
        gone = set(dead)
        for d in dead:
            members = [s for s, l in enumerate(self.lead) if l == d and s != d and self.live[s] and s not in gone]
            if members:
                forks.append((d, members[0]))
                for s in members:
                    self.lead[s] = members[0]
            self.live[d], self.lead[d] = False, d
        return forks

    def compacted(self, live: Sequence[int], slots: int) -> None:
        """Slots `live` became `0..n-1` (compaction); every leader is among them (release ran first)."""
        where = {s: i for i, s in enumerate(live)}
        self.lead = [where.get(self.lead[s], i) for i, s in enumerate(live)] + list(range(len(live), slots))
        self.live = [self.live[s] for s in live] + [False] * (slots - len(live))

    def plan(self, tok: Tensor, fin: Tensor, device) -> tuple[Optional[Tensor], Optional[Tensor], list]:
        """`regroup` from the device's tokens (one host read). Returns (the leaders' KV rows `[m]` and each
        slot's leader's index among them `[a]`, or None, None when every live row leads itself and the plain
        forward serves; the forks)."""
        leaders, forks = self.regroup(tok.tolist(), fin.tolist())
        if not self.active:
            return None, None, forks
        index = {s: i for i, s in enumerate(leaders)}
        self.fed = len(leaders)
        rows = torch.tensor(leaders, dtype=torch.long, device=device)
        where = torch.tensor([index.get(self.lead[s], 0) for s in range(len(tok))], dtype=torch.long, device=device)
        return rows, where, forks


def copy_rows(tensors, forks: Sequence[tuple[int, int]], lo: int, col: int, device) -> None:
    """KV rows' columns `[lo, col)`: row `src` -> row `dst` for each fork, one copy per KV tensor."""
    if not forks:
        return
    src = torch.tensor([f[0] for f in forks], dtype=torch.long, device=device)
    dst = torch.tensor([f[1] for f in forks], dtype=torch.long, device=device)
    for t in tensors:
        t[dst, :, lo:col] = t[src, :, lo:col]
