"""model=api: decoding studies on any OpenAI-compatible endpoint, through the official `openai` client.

settings.py  the `model=api` schema and its checks      params.py  strategy -> request body per server kind
jobs.py      requests with their seeds; records         client.py  asyncio requests, retries, rate limit
store.py     every response on disk, keyed by request   metrics.py streaming metrics, perplexity, best-of-n
run.py       one run: checks, requests, records, scores
"""

from decodebench.api_models.settings import API, ApiModelConfig, is_api  # noqa: F401
