"""Logits transforms: pure batched functions `[B, V] -> [B, V]` with per-row `[B]` parameters, their registry
and named orders (`registry.py`), how a batch is packed (`binding.py` and each sampler's own binder), the chain
packed once per batch (`chain.py`), and `process_logits` (`api.py`)."""
