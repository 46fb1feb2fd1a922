"""Contrastive decoding (`strategy=contrastive_decoding`): Li et al. 2023, "Contrastive Decoding: Open-ended
Text Generation as Optimization"; O'Brien & Lewis 2023, "Contrastive Decoding Improves Reasoning in Large
Language Models".

Each step scores every token v in the plausibility set V_head = {v : p_e(v) >= cd_alpha * max p_e} by

    log p_e(v) - log p_a(v)                      (Li et al.; cd_beta = null)
    (1 + cd_beta) log p_e(v) - cd_beta log p_a(v)  (O'Brien & Lewis)

and every other token by -inf; p_a is the amateur's distribution at `amateur_temperature` (Li et al.'s
student temperature). The amateur is another model sharing the tokenizer (`amateur=<model>`, its own KV
state in step with the target's) or the target truncated to its first N layers (`amateur_layers=N`: its
LM head after the final norm on layer N's output, from the same forward: no second pass).

The scores then go through the strategy's transforms like any logits (repetition penalty, temperature,
top-k, ...) and are sampled from or, greedy, maximised: greedy is the papers' setting. Runs in the engine's
running batch (continuous batching). The authors' released code subtracts the amateur's raw logits, not its
log-probabilities: the two differ by a constant per row, so the tokens chosen and the sampled distribution
are the same (tests/test_contrastive_decoding.py compares with a port of their code).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from decodebench.decoding.engine.layer_runtime import CombinedRuntime, head_logits, load_second_model, num_layers
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec


def contrastive_scores(expert: Tensor, amateur: Tensor, alpha: float, beta: float | None = None,
                       amateur_temperature: float = 1.0) -> Tensor:
    """`[..., V]` expert and amateur logits -> contrastive scores, -inf outside the plausibility set.

    >>> e = torch.tensor([[2.0, 1.0, -3.0]]); a = torch.tensor([[2.0, 0.0, 0.0]])
    >>> contrastive_scores(e, a, alpha=0.1)   # token 2 is implausible (p_e < 0.1 * max p_e)
    tensor([[-0.2395,  0.7605,    -inf]])
    """
    lp_e = expert.log_softmax(dim=-1)
    lp_a = (amateur / amateur_temperature).log_softmax(dim=-1)
    cut = lp_e.amax(dim=-1, keepdim=True) + math.log(alpha)
    score = lp_e - lp_a if beta is None else (1.0 + beta) * lp_e - beta * lp_a
    return score.masked_fill(lp_e < cut, float("-inf"))


def _combine(s: dict, layers, final, hidden, amateur):
    if amateur is None:  # the target's first N layers
        amateur = head_logits(layers, hidden[s["amateur_layers"]], norm=True)
    return contrastive_scores(final, amateur, s["cd_alpha"], s["cd_beta"], s["amateur_temperature"])


def _check_model(spec: StrategySpec, model):
    """The amateur model (loaded once, vocabulary checked), or None after checking amateur_layers."""
    s = spec.search
    if s.get("amateur") is not None:
        return load_second_model(str(s["amateur"]), model, "amateur")
    n, n_layers = s["amateur_layers"], num_layers(model)
    if not 1 <= n < n_layers:
        raise ValueError(f"amateur_layers must be in [1, {n_layers - 1}] for this model ({n_layers} layers), got {n}")
    return None


def make_runtime(model, spec: StrategySpec, **kw) -> CombinedRuntime:
    amateur = _check_model(spec, model)
    combine = partial(_combine, spec.search, model)
    if amateur is not None:
        return CombinedRuntime(model, combine, amateur=amateur, **kw)
    return CombinedRuntime(model, combine, early_layers=True, **kw)


def _validate(spec: StrategySpec) -> None:
    s = spec.search
    if (s.get("amateur") is None) == (s.get("amateur_layers") is None):
        raise ValueError("amateur or amateur_layers must be set for contrastive decoding (a model sharing the "
                         "tokenizer, or the target's first N layers), exactly one of them")
    n = s.get("amateur_layers")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"amateur_layers must be an integer >= 1 (the target's first N layers), got {n!r}")
    a = s.get("cd_alpha")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < a <= 1.0:
        raise ValueError(f"cd_alpha must be in (0, 1] (the plausibility threshold), got {a!r}")
    b = s.get("cd_beta")
    if b is not None and (isinstance(b, bool) or not isinstance(b, (int, float)) or b < 0):
        raise ValueError(f"cd_beta must be >= 0 or null, got {b!r}")
    t = s.get("amateur_temperature")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ValueError(f"amateur_temperature must be > 0, got {t!r}")


METHODS.register("contrastive_decoding", SearchMethod(
    name="contrastive_decoding", unit="row", validate=_validate, runtime=make_runtime, check_model=_check_model))
