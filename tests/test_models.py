"""The model loader: the embedded GGUF cache is lossless; local directories load offline; no remote code."""

from __future__ import annotations

import torch

from decodebench import models


def test_cached_weights_are_bit_identical_to_dequantized_gguf(embedded, tmp_path, monkeypatch):
    model, tok = embedded  # loaded through the cache (written on first use)
    from transformers import AutoModelForCausalLM

    gguf = models.embedded_gguf()
    assert models._gguf_cache_dir(gguf).joinpath("model.safetensors").is_file()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    a, b = model.state_dict(), direct.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_local_directory_loads_offline_without_remote_code(tmp_path, monkeypatch):
    m, tok = models.tiny_model()
    m.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = {}
    from transformers import AutoModelForCausalLM

    orig = AutoModelForCausalLM.from_pretrained

    def spy(src, **kw):
        seen.update(kw)
        return orig(src, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model, tk = models.load_model(models.ModelConfig(name_or_path=str(tmp_path / "m")), dtype="float32")
    assert seen["trust_remote_code"] is False and seen["local_files_only"] is True
    assert tk.padding_side == "left"
    got, saved = model.state_dict(), m.state_dict()
    assert got.keys() == saved.keys() and all(torch.equal(got[k], saved[k]) for k in saved)


def test_hub_id_goes_offline_when_hub_is_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import socket

    def refuse(*a, **k):
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert models.hub_offline() is True
    assert models.resolve_source(models.ModelConfig(name_or_path="org/model"))[0] == "hub"


def test_bad_model_sources_are_one_line():
    import pytest

    for name, needle in [("/nonexistent/dir", "not a model directory"), ("x.gguf", "does not exist"),
                         ("", "empty")]:
        with pytest.raises(ValueError) as e:
            models.resolve_source(models.ModelConfig(name_or_path=name))
        assert needle in str(e.value) and "\n" not in str(e.value)


def test_device_and_dtype_choice():
    import pytest

    assert models.pick_device("cpu") == "cpu"
    assert models.pick_dtype("auto", "cpu") == "float32"
    assert models.pick_dtype("bfloat16", "cpu") == "bfloat16"
    if not torch.cuda.is_available():
        assert models.pick_device("auto") == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            models.pick_device("cuda")
