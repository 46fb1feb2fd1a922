"""Every finished response on disk as it arrives: append-only JSONL keyed by a hash of its request.

A rerun into the same directory (hydra.run.dir, or a sweep point's) reads the file and requests only what
is missing, so nothing is requested twice. A line cut short by a kill is dropped (and cut off the file, so
the next line starts clean); a complete line is never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

RESPONSES = "api_responses.jsonl"


def request_key(endpoint: str, server: str, body: dict) -> str:
    """The request's identity: endpoint, server kind and the whole body (never the URL or the key, so a
    server restarted on another port still finds its answers)."""
    text = json.dumps({"endpoint": endpoint, "server": server, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ResponseStore:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RESPONSES
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.responses: dict[str, dict] = {}
        if self.path.exists():
            self._load()
        self.f = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good = raw[: raw.rfind(b"\n") + 1]  # a last line without its newline was cut short by a kill
        for line in good.decode("utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                self.responses[entry["key"]] = entry["response"]
        if len(good) != len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(len(good))

    def __contains__(self, key: str) -> bool:
        return key in self.responses

    def get(self, key: str) -> dict:
        return self.responses[key]

    def add(self, key: str, response: dict) -> None:
        self.f.write(json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.responses[key] = response

    def close(self) -> None:
        self.f.close()
