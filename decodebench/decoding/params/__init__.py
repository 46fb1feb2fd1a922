"""The parameter table (`table.py`, pure data: one `Param` row per sampling parameter, `SamplingParams` built
from it) and the value checks its rows name (`checks.py`). A leaf: it imports nothing else of decodebench;
checks that need a registry are named on their row by module path and run where the registry is."""

from decodebench.decoding.params.table import (BY_NAME, PARAMS, SAMPLING_ONLY, Param, SamplingParams, asks_for,
                                               off_value, transform_params)

__all__ = ["BY_NAME", "PARAMS", "SAMPLING_ONLY", "Param", "SamplingParams", "asks_for", "off_value",
           "transform_params"]
