"""Adaptive-P (llama.cpp PR 17927, `llama_sampler_init_adaptive_p(target, decay, seed)`): the chain's final
selector. It steers a moving average of the chosen tokens' (original) probabilities toward `adaptive_target`.

Per row and step, as llama.cpp's `llama_sampler_adaptive_p_apply` / `_accept` (float32 throughout):

1. `p` = softmax of the row's candidates (its finite logits; llama.cpp leaves `-inf` logits alone too);
2. `adapted = clamp(2 * target - weighted_sum / total_weight, 0, 1)`;
3. each candidate's new logit is `5 - 10 * d * d / (1 + d)` with `d = |p - adapted| * (1 / 0.3)`: tokens near
   the adapted target are favoured, quadratic near it and linear in the tails;
4. the token is drawn from the softmax of the new logits (here: by the engine's exponential race, keyed by
   (row key, step), so a row's draw never depends on its batch-mates);
5. after the draw: `weighted_sum = p[token] + decay * weighted_sum`, `total_weight = 1 + decay * total_weight`,
   both primed at `target / (1 - decay)` and `1 / (1 - decay)`, as if the target had been met so far.

`adaptive_target` < 0 turns it off (the row samples from its distribution unchanged); `adaptive_decay` is in
[0, 0.99] (llama.cpp clamps to that range, we refuse values outside it). Keep it last: `ORDERS` puts it after
every other transform, as llama.cpp appends it after its whole chain. The new logits are rounded to the logits
dtype on bf16/fp16 logits.

    >>> logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    >>> x, _ = adaptive_p(logits, adapted_target(torch.tensor([0.3]), torch.tensor([3.0]), torch.tensor([10.0])))
    >>> int(x.argmax())           # the token closest to the target 0.3 gets the peak logit 5
    1
"""

from __future__ import annotations

import torch
from torch import Tensor

from decodebench.decoding.transforms.filters import column
from decodebench.decoding.transforms.binding import builtin
from decodebench.decoding.transforms.registry import PackContext, StatefulStep, Step

PEAK, SHARPNESS, INV_WIDTH = 5.0, 10.0, float(torch.tensor(1.0 / 0.3, dtype=torch.float32))


def adapted_target(target: Tensor, weighted_sum: Tensor, total_weight: Tensor) -> Tensor:
    """`[B]` float32: `clamp(2 * target - weighted_sum / total_weight, 0, 1)` (the target itself while no
    weight has accumulated, as llama.cpp's `total_weight == 0` branch)."""
    t = target.float().clamp(0.0, 1.0)
    ema = weighted_sum.float() / torch.where(total_weight == 0, 1.0, total_weight.float())
    return torch.where(total_weight == 0, t, 2.0 * t - ema).clamp(0.0, 1.0)


def adaptive_p(logits: Tensor, adapted, on=True) -> tuple[Tensor, Tensor]:
    """`[B, V]` -> (new logits `[B, V]` in the logits dtype, the original float32 probabilities `[B, V]`).
    `adapted`: `[B]` adapted targets (`adapted_target`); rows with `on` False keep their logits."""
    x = logits.float()
    probs = x.softmax(dim=-1)
    d = ((probs - column(adapted, logits, torch.float32, "adapted")) * INV_WIDTH).abs()
    new = PEAK - SHARPNESS * d * d / (1.0 + d)  # llama.cpp's evaluation order
    keep = ~torch.isfinite(x) | ~column(on, logits, torch.bool, "on")
    return torch.where(keep, logits, new.to(logits.dtype)), probs


def update_ema(weighted_sum: Tensor, total_weight: Tensor, decay: Tensor, chosen_p: Tensor) -> tuple[Tensor, Tensor]:
    """One accepted token per row: llama.cpp's `_accept` (`[B]` float32 each)."""
    return chosen_p + decay * weighted_sum, 1.0 + decay * total_weight


class AdaptivePStep(StatefulStep):
    """The packed adaptive-P step: per-row target, decay and moving average, built once at bind time.

    `update(tokens)` reads the chosen tokens' original probabilities from the last call (a gather: no host
    sync); `adopt` carries the moving average of rows kept across a rebuilt chain."""

    def __init__(self, ctx: PackContext, on: list[bool]) -> None:
        f32 = dict(dtype=torch.float32, device=ctx.device)
        target = [r.adaptive_target if o else -1.0 for r, o in zip(ctx.rows, on)]
        decay = [min(max(r.adaptive_decay, 0.0), 0.99) if o else 0.0 for r, o in zip(ctx.rows, on)]
        self.target, self.decay = torch.tensor(target, **f32), torch.tensor(decay, **f32)
        self.on = torch.tensor([o and t >= 0 for o, t in zip(on, target)], dtype=torch.bool, device=ctx.device)
        self.weighted_sum = self.target / (1.0 - self.decay)  # primed as if the target had been met
        self.total_weight = 1.0 / (1.0 - self.decay)
        self._probs: Tensor | None = None

    def __call__(self, logits: Tensor, tables) -> Tensor:
        out, self._probs = adaptive_p(logits, adapted_target(self.target, self.weighted_sum, self.total_weight),
                                      self.on)
        return out

    def update(self, tokens: Tensor) -> None:
        if self._probs is None:
            return
        chosen = self._probs.gather(1, tokens.to(self._probs.device).long().view(-1, 1))[:, 0]
        ws, tw = update_ema(self.weighted_sum, self.total_weight, self.decay, chosen)
        self.weighted_sum = torch.where(self.on, ws, self.weighted_sum)
        self.total_weight = torch.where(self.on, tw, self.total_weight)
        self._probs = None

    def adopt(self, old: "AdaptivePStep", index: list[int | None]) -> None:
        kept = [j for j, i in enumerate(index) if i is not None]
        if kept:
            dst = torch.tensor(kept, device=self.weighted_sum.device)
            src = torch.tensor([index[j] for j in kept], device=old.weighted_sum.device)
            self.weighted_sum, self.total_weight = self.weighted_sum.clone(), self.total_weight.clone()
            self.weighted_sum[dst] = old.weighted_sum[src].to(self.weighted_sum.device)
            self.total_weight[dst] = old.total_weight[src].to(self.total_weight.device)


@builtin("adaptive_p", adaptive_p)
def _adaptive_p(ctx: PackContext, on: list[bool]) -> Step:
    return AdaptivePStep(ctx, on)
