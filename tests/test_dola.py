"""DoLa against a port of the transformers-community `dola` custom-generate code (custom_generate/generate.py:
`_relative_top_filter`, `_dola_select_contrast`, the greedy loop of `_dola_decoding`): on fixed logits, and
token for token through the engine on the embedded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from decodebench.decoding.search.dola import candidate_layers, dola_logits
from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from decodebench.specs import to_specs
from tests.test_search_beam import one_thread  # noqa: F401  (autouse fixture)


def hub_relative_top_filter(scores, baseline_scores, relative_top=0.1, filter_value=-float("Inf"),
                            base_filter_value=-1e-3, min_tokens_to_keep=1):
    scores_normalized = scores.log_softmax(dim=-1)
    baseline_scores_normalized = baseline_scores.log_softmax(dim=-1)
    sorted_logits, _ = torch.sort(scores_normalized, descending=True)
    min_thresh = sorted_logits[..., min_tokens_to_keep - 1]
    probs_max = torch.max(scores_normalized, dim=-1).values
    probs_thresh = torch.min(min_thresh, probs_max + np.log(relative_top)).unsqueeze(-1)
    baseline_scores_normalized[scores_normalized < probs_thresh] = base_filter_value
    scores_normalized[scores_normalized < probs_thresh] = filter_value
    return scores_normalized, baseline_scores_normalized


def hub_select_contrast(layers, premature, final_logits):
    if len(layers) == 1:
        f, b = hub_relative_top_filter(final_logits, premature[layers[0]])
        return f - b
    stacked = torch.stack([premature[i] for i in layers], dim=0)
    avg = 0.5 * (F.softmax(final_logits, dim=-1)[None, :, :] + F.softmax(stacked, dim=-1))
    kl1 = F.kl_div(F.log_softmax(final_logits, dim=-1)[None, :, :], avg, reduction="none").mean(-1)
    kl2 = F.kl_div(F.log_softmax(stacked, dim=-1), avg, reduction="none").mean(-1)
    js = (0.5 * (kl1 + kl2)).mean(-1)  # the Hub code averages over the batch
    f, b = hub_relative_top_filter(final_logits, premature[layers[int(js.argmax().item())]])
    return f - b


def test_contrast_equals_hub_code_on_fixed_logits():
    g = torch.Generator().manual_seed(0)
    final = 2 * torch.randn(1, 400, generator=g)
    prem = {i: 2 * torch.randn(1, 400, generator=g) + final * (i / 10) for i in range(5)}
    layers = [0, 2, 4]
    ours = dola_logits(final, torch.stack([prem[i] for i in layers]))
    assert torch.allclose(ours, hub_select_contrast(layers, prem, final), atol=1e-6)
    # one candidate layer: the same at any batch size
    final8, base8 = 2 * torch.randn(8, 400, generator=g), 2 * torch.randn(8, 400, generator=g)
    assert torch.allclose(dola_logits(final8, base8[None]), hub_select_contrast([3], {3: base8}, final8), atol=1e-6)


def test_candidate_layers_as_the_hub_code():
    assert candidate_layers("low", 30, True) == [2, 4, 6, 8, 10, 12, 14]
    assert candidate_layers("high", 30, True) == list(range(15, 30, 2))
    assert candidate_layers("low", 2, True) == [1]
    assert candidate_layers("low", 48, False) == list(range(0, 20, 2))
    assert candidate_layers("high", 48, False) == list(range(28, 48, 2))
    with pytest.raises(ValueError, match=r"dola_layers \[30\] are outside the model: layers are 0 .* to 29"):
        candidate_layers([4, 30], 30, True)


@torch.inference_mode()
def hub_dola_greedy(model, prompt, dola_layers, n_new, repetition_penalty, eos):
    """The Hub code's greedy loop at batch size 1, every step from scratch (no cache)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    final_layer = model.config.num_hidden_layers
    layers = candidate_layers(dola_layers, final_layer, model.config.tie_word_embeddings)
    lm_head = model.get_output_embeddings()
    ids, out = list(prompt), []
    for _ in range(n_new):
        outputs = model(torch.tensor([ids]), output_hidden_states=True)
        final_logits = outputs.logits[:, -1, :].float()
        prem = {i: lm_head(outputs.hidden_states[i][:, -1, :]) for i in layers}
        scores = hub_select_contrast(layers, prem, final_logits)
        scores = RepetitionPenaltyLogitsProcessor(repetition_penalty)(torch.tensor([ids]), scores)
        tok = int(scores.argmax(-1))
        out.append(tok)
        ids.append(tok)
        if tok == eos:
            break
    return out


def _check_greedy(model, tok, texts, layers, n_new, batch_size):
    spec = build_strategy({"name": "dola", "method": "dola", "dola_layers": layers, "repetition_penalty": 1.2,
                           "max_new_tokens": n_new})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(texts)]
    outs, _ = generate(model, tok, reqs, spec, batch_size=batch_size)
    eos = model.generation_config.eos_token_id
    for r, o in zip(reqs, outs):
        assert o.token_ids == hub_dola_greedy(model, r.prompt_ids, layers, n_new, 1.2, eos)


def test_greedy_token_for_token_on_the_embedded_model(embedded):
    model, tok = embedded
    _check_greedy(model, tok, ["The capital of France is", "Water boils at"], "high", 5, batch_size=2)


def test_greedy_with_several_candidates_per_row():
    """Each row picks its own premature layer (the Hub code at batch size 1), with continuous refills."""
    from tests.test_search_beam import TEXTS, peaky_tiny

    model, tok = peaky_tiny()
    _check_greedy(model, tok, TEXTS, [0, 1], 6, batch_size=3)


@pytest.mark.parametrize("d, msg", [({"dola_layers": None}, "dola_layers must be low, high or a list"),
                                    ({"dola_layers": "mid"}, "dola_layers must be low, high or a list"),
                                    ({"dola_layers": []}, "non-empty list")])
def test_bad_settings(d, msg):
    with pytest.raises(ValueError, match=msg):
        build_strategy({"name": "dola", "method": "dola", **d})


def test_layers_outside_the_model_before_generation(tiny):
    model, tok = tiny
    spec = build_strategy({"name": "dola", "method": "dola", "dola_layers": [1, 5]})
    with pytest.raises(ValueError, match=r"dola_layers \[5\] are outside the model"):
        generate(model, tok, [Request(prompt_id="0", prompt_ids=[1, 2], params=spec.params)], spec)


def test_run_refuses_layers_outside_the_model_before_generation(cfg_of, tmp_path):
    from decodebench.config import ConfigError
    from decodebench.runner import execute

    cfg = cfg_of(["model=tiny", "strategy=dola", "strategy.dola_layers=[0,7]", "logger=none", "progress=false"])
    with pytest.raises(ConfigError, match=r"^strategy\.dola_layers \[7\] are outside the model: layers are 0 "):
        execute(to_specs(cfg), tmp_path)
    assert not (tmp_path / "generations.jsonl").exists()
