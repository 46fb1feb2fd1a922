"""MAUVE (Pillutla et al. 2021) of a run's generations against the human references, with the `mauve-text`
package and features from the scoring model: the last layer's hidden state at each text's final token,
as `mauve.utils.featurize_tokens_from_model` computes them, so no model is downloaded.

Protocol of Su & Collier (2023) by default: each generation and its prompt's reference are cut to the
shorter of the two (in the scoring model's tokens), then to `max_text_length` tokens; pairs whose
generation is empty are left out. p = references, q = generations.
"""

from __future__ import annotations

import inspect
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from .inputs import Inputs
from .lm import model_device
from .spec import Scorer, at_least, register


def special_prefix(tokenizer) -> list[int]:
    """The BOS token when the tokenizer adds one by default (mauve tokenizes with `encode(text)`)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return [bos] if bos is not None and ids and ids[0] == bos else []


@torch.no_grad()
def last_token_features(model, sequences: list[list[int]], *, batch_size: int, device=None,
                        progress: bool = False, desc: str = "features") -> np.ndarray:
    """[n, hidden] float32: the final layer's hidden state at each sequence's last token.

    Batches are sorted by length (little padding) and run in the model's dtype; the LM head runs on one
    position only (`logits_to_keep=1`), since only hidden states are read."""
    device = model_device(model, device)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    feats: list = [None] * len(sequences)
    chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, desc=desc, disable=not progress, leave=False):
        rows = [sequences[i] for i in chunk]
        width = max(len(s) for s in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, s in enumerate(rows):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device), output_hidden_states=True,
                    use_cache=False, **keep)
        last = out.hidden_states[-1]
        lengths = torch.tensor([len(s) for s in rows], device=last.device)
        for i, f in zip(chunk, last[torch.arange(len(rows), device=last.device), lengths - 1].float().cpu()):
            feats[i] = f
    return torch.stack(feats).numpy()


def mauve_fn(inputs: Inputs, max_text_length: int, truncate_to_pair: bool, num_buckets: int,
             scaling_factor: float, kmeans_num_redo: int, kmeans_max_iter: int, mauve_seed: int,
             batch_size: int, **_) -> dict[str, float]:
    try:
        import mauve
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ValueError(f"the mauve scorer needs the mauve-text package (pip install mauve-text): {exc}") from None
    tok = inputs.tokenizer
    prefix = special_prefix(tok)
    p_seqs, q_seqs = [], []
    for text, ref in zip(inputs.texts, inputs.references):
        q = tok(text, add_special_tokens=False)["input_ids"]
        p = tok(ref, add_special_tokens=False)["input_ids"]
        if truncate_to_pair:
            q, p = q[:len(p)], p[:len(q)]
        q, p = q[:max_text_length], p[:max_text_length]
        if q and p:
            p_seqs.append(prefix + p)
            q_seqs.append(prefix + q)
    if len(q_seqs) < 2:  # nothing to cluster: undefined, like the other metrics of empty text
        return {"mauve": float("nan"), "mauve_frontier_integral": float("nan"), "mauve_num_buckets": float("nan"),
                "mauve_num_pairs": float(len(q_seqs))}
    features = {
        name: last_token_features(inputs.model, seqs, batch_size=batch_size, device=inputs.device,
                                  progress=inputs.progress, desc=f"mauve features {name} {inputs.label}".strip())
        for name, seqs in (("p", p_seqs), ("q", q_seqs))
    }
    out = mauve.compute_mauve(
        p_features=features["p"], q_features=features["q"],
        num_buckets=num_buckets if num_buckets > 0 else "auto", mauve_scaling_factor=scaling_factor,
        kmeans_num_redo=kmeans_num_redo, kmeans_max_iter=kmeans_max_iter, seed=mauve_seed, verbose=False,
    )
    return {"mauve": float(out.mauve), "mauve_frontier_integral": float(out.frontier_integral),
            "mauve_num_buckets": float(out.num_buckets), "mauve_num_pairs": float(len(q_seqs))}


def _check(options: Mapping) -> None:
    for key in ("max_text_length", "kmeans_num_redo", "kmeans_max_iter", "batch_size"):
        at_least(options, key, 1, "mauve")
    at_least(options, "num_buckets", 0, "mauve")
    if options["scaling_factor"] <= 0:
        raise ValueError(f"scorers.mauve.scaling_factor must be > 0; got {options['scaling_factor']!r}")


register(Scorer(
    name="mauve", fn=mauve_fn, per_item=False, needs=frozenset({"texts", "references", "model"}),
    metrics={"mauve": True, "mauve_frontier_integral": False, "mauve_num_buckets": None,
             "mauve_num_pairs": None},
    # mauve-text's defaults, except max_text_length: 200 as in Su & Collier's compute_mauve.py
    options={"max_text_length": 200, "truncate_to_pair": True, "num_buckets": 0, "scaling_factor": 5.0,
             "kmeans_num_redo": 5, "kmeans_max_iter": 500, "mauve_seed": 25, "batch_size": 8,
             "model": ""},  # model "": the model that generated
    check=_check,
    doc="MAUVE of the generations against the references (num_buckets 0: mauve's 'auto', n/10)",
))
