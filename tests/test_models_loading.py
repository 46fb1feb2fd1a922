"""Loading at scale: straight into the target dtype (resident growth within 1.3x the weights), GGUF
cache keyed by content, and the load options' one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decodebench import models

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh process so the resident set holds nothing but this load. Weights are touched after
# the load (safetensors maps the file lazily), so the figure covers every weight page, not just the map.
PROBE = r"""
import json, os, sys
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
import transformers.models.llama.modeling_llama
from decodebench import models

def status(field):  # bytes; VmHWM is this process's own high-water mark (ru_maxrss is inherited at fork)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts at the resident size now
before = status("VmRSS")
model, tok = models.load_model(models.ModelConfig(name_or_path=sys.argv[1]), dtype="bfloat16")
load_peak = status("VmHWM") - before
touched = sum(float(p.detach().view(-1)[::1024].float().sum()) for p in model.parameters())  # one read per page
print(json.dumps({"dtype": str(model.dtype), "load_peak": load_peak, "resident": status("VmRSS") - before,
                  "peak": status("VmHWM") - before}))
"""


def _bf16_checkpoint(path: Path) -> int:
    """A ~80 MB Llama saved in bfloat16; returns its weight bytes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from decodebench.tiny_tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    cfg = LlamaConfig(vocab_size=16384, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_bf16_checkpoint_loads_in_bf16_within_1_3x_its_weight_bytes(tmp_path):
    # written by a process that has exited, as any real checkpoint is (a living writer's fresh pages
    # fault into the reader's resident set differently)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    write = ("import sys; from pathlib import Path; sys.path.insert(0, 'tests'); "
             "from test_models_loading import _bf16_checkpoint; print(_bf16_checkpoint(Path(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", write, str(tmp_path / "ck")], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    weights = int(out.stdout.strip().splitlines()[-1])
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "ck")], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["dtype"] == "torch.bfloat16"
    # a float32 load then a cast would peak near 3x (float32 copy + bfloat16 copy)
    assert m["load_peak"] <= 1.3 * weights, (m, weights)
    assert m["peak"] <= 1.3 * weights, (m, weights)


def test_gguf_cache_key_is_the_files_content_not_its_path(tmp_path):
    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for p, extra in ((a, b""), (b, b"")):
        p.parent.mkdir()
        p.write_bytes(b"GGUF" + bytes(range(256)) * 10_000 + extra)
    os.utime(b, (1, 1))  # another venv: another path, another mtime
    assert models._gguf_cache_dir(a) == models._gguf_cache_dir(b)
    b.write_bytes(b.read_bytes()[:-1] + b"x")
    assert models._gguf_cache_dir(a) != models._gguf_cache_dir(b)


def test_a_gguf_file_elsewhere_loads_in_the_target_dtype_from_the_same_cache(embedded, tmp_path):
    gguf = models.embedded_gguf()
    other = tmp_path / "venv2" / gguf.name
    other.parent.mkdir()
    other.symlink_to(gguf)
    assert models._gguf_cache_dir(other) == models._gguf_cache_dir(gguf)  # no second dequantization
    seen = []
    from transformers import AutoModelForCausalLM

    orig = AutoModelForCausalLM.from_pretrained
    try:
        AutoModelForCausalLM.from_pretrained = lambda src, **kw: seen.append(kw) or orig(src, **kw)
        model, tok = models.load_model(models.ModelConfig(name_or_path=str(other)), dtype="bfloat16")
    finally:
        AutoModelForCausalLM.from_pretrained = orig
    assert model.dtype == torch.bfloat16
    assert seen and all(kw["dtype"] == torch.bfloat16 and "gguf_file" not in kw for kw in seen)


@pytest.mark.parametrize("opts, needle", [
    (dict(device_map="cuda:7"), "model.device_map=cuda:7"),
    (dict(device_map="gpu0"), "model.device_map='gpu0'"),
    (dict(quantization="4bit"), "bitsandbytes"),
    (dict(quantization="3bit"), "model.quantization='3bit'"),
    (dict(attn_implementation="flash_attention_2"), "model.attn_implementation=flash_attention_2"),
    (dict(attn_implementation="fast"), "model.attn_implementation='fast'"),
])
def test_load_options_this_machine_cannot_serve_are_one_line(opts, needle):
    if opts.get("quantization") == "4bit" and models.importlib.util.find_spec("bitsandbytes"):
        pytest.skip("bitsandbytes is installed")
    if opts.get("device_map") == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ValueError) as e:
        models.check_load_options(models.ModelConfig(name_or_path="org/model", **opts), "cpu")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_default_attention_is_sdpa_and_eager_can_be_chosen(tmp_path):
    m, tok = models.tiny_model()
    m.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, _ = models.load_model(models.ModelConfig(name_or_path=str(tmp_path / "m")))
    assert model.config._attn_implementation == "sdpa"
    model, _ = models.load_model(models.ModelConfig(name_or_path=str(tmp_path / "m"), attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"
