"""llama.cpp's own server (the `xllamacpp` wheel) serving the embedded GGUF on 127.0.0.1, for the API tests.

It runs in a child process, so a test can kill it mid-run (`kill -9`) as a crashed server would die.

    python tests/api_server.py PORT [PARALLEL]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"  # never another interface
ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def serve(port: int, parallel: int) -> None:
    import xllamacpp as x

    from decodebench.models import embedded_gguf

    p = x.CommonParams()
    p.model.path = str(embedded_gguf())
    p.model_alias = {ALIAS}
    p.hostnames = [HOST]
    p.port = port
    p.n_parallel = parallel
    p.n_ctx = 1024 * parallel
    for cpu in (p.cpuparams, p.cpuparams_batch):
        cpu.n_threads = 1  # a shared, loaded test machine: more threads only contend
        cpu.poll = 0  # sleep while waiting, do not spin
    p.cache_prompt = False  # a cached prefix must not change a later request's numbers
    server = x.Server(p)
    print(f"listening {server.listening_address}", flush=True)
    while True:
        time.sleep(3600)


def base(url: str, *overrides) -> list[str]:
    """A small model=api run's overrides against `url` (2 prompts, 6 tokens, cheap scorers), one request at
    a time unless told otherwise: llama.cpp's batched decoding is not batch-invariant, so a near-tie can
    go either way when two requests share a batch."""
    one = [] if any(o.startswith("model.concurrency=") for o in overrides) else ["model.concurrency=1"]
    return ["model=api", *one, f"model.base_url={url}", f"model.name={ALIAS}", "model.server=llamacpp", "logger=none",
            "progress=false", "dataset.limit=2", "strategy.max_new_tokens=6", "scorers.names=[gen_length,perplexity]",
            "scorers.bootstrap.samples=0", *overrides]


def api_run(url, run_dir, *overrides) -> dict:
    """One run in this process, as the command line would run it (decodebench.cli.entry.run)."""
    from decodebench.cli.entry import run
    from tests.conftest import compose

    return run(compose(base(url, *overrides)), str(run_dir))


class LlamaServer:
    """`with LlamaServer() as s:` s.url is the /v1 base URL; s.kill() ends it as a crash would."""

    def __init__(self, parallel: int = 2, port: int | None = None):
        self.parallel, self.port = parallel, port or free_port()
        self.url = f"http://{HOST}:{self.port}/v1"
        self.proc = None

    def start(self, timeout: float = 120.0) -> "LlamaServer":
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.port), str(self.parallel)], cwd=root,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**__import__("os").environ, "PYTHONPATH": str(root)})
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with {self.proc.returncode}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the llama.cpp server did not start")
        self._wait_ready(t0 + timeout)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import urllib.request

        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the llama.cpp server never became healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2)
