"""The engine: requests and outputs (`batch.py`), the static KV state and its forward (`kvcache.py`), the one
decode step (`step.py`), the running batch (`running.py`), finished rows, stop rules, streamers and
telemetry, and `generate` (`driver.py`), which sends every request through its strategy's search method."""

from decodebench.decoding.engine.batch import (BatchContext, BatchStats, Output, Request, eos_ids, pack_left, positions,
                                              request_keys)
from decodebench.decoding.engine.driver import (CPU_AUTO_BATCH, CUDA_AUTO_CAP, auto_batch_size, check_kv_fits,
                                                generate, iter_batches, make_context, shares_histories)
from decodebench.decoding.engine.kvcache import Runtime

__all__ = ["BatchContext", "BatchStats", "Output", "Request", "eos_ids", "pack_left", "positions", "request_keys", "CPU_AUTO_BATCH",
           "CUDA_AUTO_CAP", "auto_batch_size", "check_kv_fits", "generate", "iter_batches", "make_context", "Runtime",
           "shares_histories"]
