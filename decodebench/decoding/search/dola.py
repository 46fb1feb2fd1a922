"""DoLa (`strategy=dola`): Chuang et al. 2024, "DoLa: Decoding by Contrasting Layers Improves Factuality in
Large Language Models", as the transformers-community `dola` custom-generate code computes it.

Each step takes the final logits and, for each candidate ("premature") layer l, `lm_head(hidden_states[l])`
(no final norm, as there; layer 0 is the embeddings). With several candidates, a row contrasts with the one
whose distribution is furthest from the final one (largest Jensen-Shannon divergence, averaged over the
vocabulary). The next-token logits are then

    log_softmax(final) - log_softmax(premature)   on {v : p_final(v) >= 0.1 * max p_final}
    -inf                                          elsewhere (the premature side there is -1e-3)

and go through the strategy's transforms (repetition_penalty: 1.2 is the paper's advice) before greedy or
sampling. `dola_layers`: `low` / `high` (the lower or upper half of the layers, every second one, from
layer 2 when the embeddings are tied to the LM head) or a list of layer indices.

One difference from the Hub code, on purpose: there, with several candidates, the layer is chosen by the
divergence averaged over the whole batch, so a row's output depends on its batch-mates; here each row
chooses its own. At batch size 1 (and with one candidate layer, at any size) the two are the same.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from decodebench.decoding.engine.layer_runtime import CombinedRuntime, head_logits, num_layers
from decodebench.decoding.search.methods import METHODS, SearchMethod
from decodebench.decoding.search.spec import StrategySpec

RELATIVE_TOP = 0.1
BASE_FILTER = -1e-3


def candidate_layers(dola_layers, final_layer: int, tied: bool) -> list[int]:
    """The Hub code's candidate layers for `low` / `high`; a list is checked against the model."""
    if isinstance(dola_layers, (list, tuple)):
        bad = [i for i in dola_layers if not 0 <= int(i) < final_layer]
        if bad:
            raise ValueError(f"dola_layers {bad} are outside the model: layers are 0 (the embeddings) to "
                             f"{final_layer - 1}")
        return [int(i) for i in dola_layers]
    start = 0 if not tied else 2 if final_layer > 2 else 1 if final_layer == 2 else 0
    if dola_layers == "low":
        if start == final_layer // 2:
            return [start]
        return list(range(start, final_layer // 2, 2)) if final_layer <= 40 else list(range(start, 20, 2))
    return (list(range(final_layer // 2, final_layer, 2)) if final_layer <= 40
            else list(range(final_layer - 20, final_layer, 2)))


def dola_logits(final: Tensor, premature: Tensor) -> Tensor:
    """final `[B, V]`, premature `[C, B, V]` (one per candidate layer) -> DoLa's contrast logits `[B, V]`."""
    if premature.shape[0] == 1:
        base = premature[0]
    else:
        avg = 0.5 * (F.softmax(final, dim=-1)[None] + F.softmax(premature, dim=-1))
        kl1 = F.kl_div(F.log_softmax(final, dim=-1)[None], avg, reduction="none").mean(-1)
        kl2 = F.kl_div(F.log_softmax(premature, dim=-1), avg, reduction="none").mean(-1)
        js = 0.5 * (kl1 + kl2)  # [C, B]
        pick = js.argmax(dim=0)  # per row (the Hub code: one layer for the batch)
        base = premature.gather(0, pick[None, :, None].expand(1, *premature.shape[1:]))[0]
    lf, lb = final.log_softmax(dim=-1), base.log_softmax(dim=-1)
    cut = lf.amax(dim=-1, keepdim=True) + math.log(RELATIVE_TOP)
    out = lf.masked_fill(lf < cut, float("-inf")) - lb.masked_fill(lf < cut, BASE_FILTER)
    return out


def _combine(layers: list[int], model, final, hidden, amateur):
    n, q, v = final.shape
    prem = torch.stack([head_logits(model, hidden[i], norm=False) for i in layers])  # [C, n, q, V]
    out = dola_logits(final.reshape(n * q, v), prem.reshape(len(layers), n * q, v))
    return out.view(n, q, v)


def make_runtime(model, spec: StrategySpec, **kw) -> CombinedRuntime:
    layers = candidate_layers(spec.search["dola_layers"], num_layers(model), bool(getattr(model.config, "tie_word_embeddings", False)))
    return CombinedRuntime(model, partial(_combine, layers, model), early_layers=True, **kw)


def _validate(spec: StrategySpec) -> None:
    d = spec.search.get("dola_layers")
    if isinstance(d, (list, tuple)):
        if not d or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in d):
            raise ValueError(f"dola_layers must be low, high or a non-empty list of layer indices >= 0, got {d!r}")
    elif d not in ("low", "high"):
        raise ValueError(f"dola_layers must be low, high or a list of layer indices, got {d!r}")


def _check_model(spec: StrategySpec, model) -> None:
    candidate_layers(spec.search["dola_layers"], num_layers(model), False)


METHODS.register("dola", SearchMethod(name="dola", unit="row", validate=_validate, runtime=make_runtime,
                                      check_model=_check_model))
