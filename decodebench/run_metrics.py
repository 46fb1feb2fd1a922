"""A run's speed and memory figures (metrics.json's engine part) from the engine's BatchStats."""

from __future__ import annotations

import statistics
from typing import Optional

from decodebench.run_state import MemoryMark, lifetime_peak_mb


def run_metrics(stats, wall: float, device: str, mark: Optional[MemoryMark] = None) -> dict:
    from decodebench.decoding.search.power_sampling import power_metrics
    from decodebench.decoding.search.speculative import speculative_metrics

    gen_s = max(stats.decode_s, 1e-9)
    ttft_total = sum(stats.ttft_s)
    peak = mark.peak_mb() if mark is not None else lifetime_peak_mb(device)
    return {
        "tokens_per_s": stats.generated_tokens / gen_s,
        "prefill_tokens_per_s": stats.prompt_tokens / ttft_total if ttft_total else 0.0,
        "time_to_first_token_s": statistics.median(stats.ttft_s) if stats.ttft_s else 0.0,
        "per_token_latency_ms": statistics.median(stats.step_ms) if stats.step_ms else 0.0,
        "peak_memory_mb": peak,
        "forward_passes_per_token": stats.forward_passes / max(stats.generated_tokens, 1),
        "row_step_efficiency": stats.generated_tokens / stats.row_steps if stats.row_steps else 1.0,
        "compile_time_s": stats.compile_s,
        "tokens_processed_per_token": stats.tokens_processed / max(stats.generated_tokens, 1),
        "generated_tokens": float(stats.generated_tokens),
        "generation_time_s": stats.decode_s,
        "wall_time_s": wall,
        **speculative_metrics(getattr(stats, "extra", {})),
        **power_metrics(getattr(stats, "extra", {})),
    }
