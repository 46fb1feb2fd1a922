"""Prompt sets: the embedded JSONL, local files, local Hub-style dirs; prefixes, chat templates, bad configs."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import fields
from pathlib import Path

import datasets
import pytest
from omegaconf import OmegaConf

from decodebench.data import (
    EMBEDDED_PATH,
    DatasetConfig,
    Prompt,
    check_config,
    load_prompts,
    load_table,
    to_prompts,
)

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = {"story", "news", "dialogue", "technical"}
ROWS = [
    {"id": "007", "category": "story", "prompt": "The cat sat on the mat and looked at the door",
     "ref": "It waited."},
    {"id": "008", "category": "news", "prompt": "NA", "ref": "A short one."},
    {"id": "009", "category": "technical", "prompt": "A hash table maps keys to buckets", "ref": "Fast."},
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path_factory):
    """Local loading must never open a socket; the datasets cache goes to a temporary dir."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets_cache")))


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained in code (lossless decode), with a small Jinja chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    corpus = [r["prompt"] for r in ROWS] * 10 + ["the quick brown fox jumps over the lazy dog"]
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return fast


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows in the format named by the path's suffix."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix in (".csv", ".tsv"):
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    elif suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif suffix == ".txt":
        path.write_text("".join(r["prompt"] + "\n" for r in rows))
    return path


def file_cfg(path: Path, **kw) -> DatasetConfig:
    return DatasetConfig(name="file", path=str(path), **kw)


# ---------------------------------------------------------------------------------------------- embedded


def test_embedded_set_is_a_balanced_unique_benchmark():
    table = load_table(DatasetConfig())
    assert isinstance(table, datasets.Dataset)
    assert set(table.column_names) == {"id", "category", "prompt"}
    prompts = load_prompts(DatasetConfig())
    assert len(prompts) >= 120
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.text.strip().lower() for p in prompts}) == len(prompts)
    counts = Counter(p.category for p in prompts)
    assert set(counts) == CATEGORIES and len(set(counts.values())) == 1, counts
    for p in prompts:
        assert p.id.startswith(p.category + "-"), p.id
        assert 10 <= len(p.text.split()) <= 60, p.id
        assert p.text == p.text.strip() and p.reference is None


def test_embedded_file_is_plain_jsonl():
    lines = EMBEDDED_PATH.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"id", "category", "prompt"} for r in records)
    assert [p.id for p in load_prompts(DatasetConfig())] == [r["id"] for r in records]


def test_limit_keeps_the_first_rows():
    assert [p.id for p in load_prompts(DatasetConfig(limit=3))] == ["story-001", "story-002", "story-003"]
    assert len(load_prompts(DatasetConfig(limit=10_000))) == len(load_prompts(DatasetConfig()))


def test_accepts_an_omegaconf_config():
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"limit": 2})
    assert len(load_prompts(cfg)) == 2
    bad = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"limit": 0})  # no __post_init__ on a DictConfig
    with pytest.raises(ValueError, match=r"^dataset\.limit:"):
        load_table(bad)


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_local_files(tmp_path, suffix):
    path = write(tmp_path / f"data{suffix}", ROWS)
    prompts = load_prompts(file_cfg(path, reference_column="ref"))
    assert prompts == [Prompt(r["id"], r["prompt"], r["category"], r["ref"]) for r in ROWS]  # "007", "NA" kept


def test_text_file_one_prompt_per_line(tmp_path):
    prompts = load_prompts(file_cfg(write(tmp_path / "p.txt", ROWS), prompt_column="text"))
    assert [(p.id, p.text, p.category) for p in prompts] == [
        ("0000", ROWS[0]["prompt"], None), ("0001", "NA", None), ("0002", ROWS[2]["prompt"], None)]


def test_missing_optional_columns_give_numbered_ids(tmp_path):
    rows = [{"text": f"prompt number {i}"} for i in range(3)]
    prompts = load_prompts(file_cfg(write(tmp_path / "d.csv", rows), prompt_column="text", limit=2))
    assert [(p.id, p.text, p.category) for p in prompts] == [("0000", "prompt number 0", None),
                                                             ("0001", "prompt number 1", None)]
    with_ids = write(tmp_path / "ids.jsonl", ROWS)
    assert [p.id for p in load_prompts(file_cfg(with_ids, id_column=None))] == ["0000", "0001", "0002"]


def test_renamed_columns(tmp_path):
    rows = [{"uid": 1, "kind": "a", "body": "hello world", "gold": "bye"}]
    cfg = file_cfg(write(tmp_path / "r.jsonl", rows), prompt_column="body", id_column="uid",
                   category_column="kind", reference_column="gold")
    assert load_prompts(cfg) == [Prompt("1", "hello world", "a", "bye")]


# ---------------------------------------------------------------------------------------------- hub


def test_hub_local_data_dir_with_splits(tmp_path):
    (tmp_path / "ds" / "data").mkdir(parents=True)
    write(tmp_path / "ds" / "data" / "train.jsonl", ROWS)
    write(tmp_path / "ds" / "data" / "test.jsonl", ROWS[:1])
    cfg = DatasetConfig(name="hub", path=str(tmp_path / "ds"), split="test")
    assert [p.id for p in load_prompts(cfg)] == ["007"]
    assert len(load_prompts(DatasetConfig(name="hub", path=str(tmp_path / "ds")))) == 3
    with pytest.raises(ValueError, match=r"^dataset\.split:.*validation"):
        load_table(DatasetConfig(name="hub", path=str(tmp_path / "ds"), split="validation"))
    with pytest.raises(ValueError, match=r"^dataset\.subset:.*nope"):
        load_table(DatasetConfig(name="hub", path=str(tmp_path / "ds"), subset="nope"))


def test_hub_dir_written_by_save_to_disk(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert len(load_prompts(DatasetConfig(name="hub", path=str(tmp_path / "single")))) == 3
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS[:2])}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_prompts(DatasetConfig(name="hub", path=str(tmp_path / "dict"), split="test"))) == 2
    with pytest.raises(ValueError, match=r"^dataset\.split: split 'train' not found.*available: test"):
        load_table(DatasetConfig(name="hub", path=str(tmp_path / "dict")))


# ---------------------------------------------------------------------------------------------- tokenizer steps


def test_prefix_tokens_split_prompt_and_reference(tokenizer, tmp_path, caplog):
    path = write(tmp_path / "d.jsonl", ROWS)
    n = 4
    with caplog.at_level(logging.WARNING, logger="decodebench.data"):
        prompts = load_prompts(file_cfg(path, prefix_tokens=n), tokenizer)
    assert [p.id for p in prompts] == ["007", "009"]  # "NA" has fewer than n+1 tokens: dropped
    assert "dropped 1 of 3" in caplog.text
    for p, row in zip(prompts, [ROWS[0], ROWS[2]]):
        ids = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        assert p.text + p.reference == row["prompt"]  # byte-level BPE is lossless
        assert p.text == tokenizer.decode(ids[:n]) and p.reference == tokenizer.decode(ids[n:])
        assert p.category == row["category"]
    with pytest.raises(ValueError, match=r"^dataset\.prefix_tokens: all 3 rows"):
        load_prompts(file_cfg(path, prefix_tokens=10_000), tokenizer)


def test_chat_template(tokenizer):
    cfg = DatasetConfig(limit=1, chat_template=True)
    (p,) = load_prompts(cfg, tokenizer)
    raw = load_prompts(DatasetConfig(limit=1))[0].text
    assert p.text == f"<|user|>{raw}\n<|assistant|>"
    (s,) = load_prompts(DatasetConfig(limit=1, chat_template=True, system_prompt="Be brief."), tokenizer)
    assert s.text == f"<|system|>Be brief.\n<|user|>{raw}\n<|assistant|>"


def test_prefix_then_chat_template(tokenizer, tmp_path):
    cfg = file_cfg(write(tmp_path / "d.jsonl", ROWS[:1]), prefix_tokens=3, chat_template=True)
    (p,) = load_prompts(cfg, tokenizer)
    ids = tokenizer(ROWS[0]["prompt"], add_special_tokens=False)["input_ids"]
    assert p.text == f"<|user|>{tokenizer.decode(ids[:3])}\n<|assistant|>"
    assert p.reference == tokenizer.decode(ids[3:])


def test_to_prompts_on_an_in_memory_table():
    table = datasets.Dataset.from_dict({"prompt": ["a b c", "d e f"]})
    assert [p.id for p in to_prompts(table, DatasetConfig())] == ["0000", "0001"]


# ---------------------------------------------------------------------------------------------- bad inputs


def bad_cases(tmp: Path) -> list[tuple[str, dict, str]]:
    """(expected key, DatasetConfig kwargs, file to write) for each config mistake."""
    data = write(tmp / "data.jsonl", ROWS)
    dup = write(tmp / "dup.jsonl", [ROWS[0], ROWS[0]])
    ints = write(tmp / "ints.jsonl", [{"prompt": 1}, {"prompt": 2}])
    (tmp / "empty.jsonl").write_text("")
    (tmp / "broken.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
    (tmp / "data.xlsx").write_text("x")
    (tmp / "header_only.csv").write_text("id,prompt\n")
    return [
        ("name", dict(name="fil"), "did you mean 'file'"),
        ("path", dict(name="embedded", path=str(data)), "set dataset.name=file"),
        ("path", dict(name="file"), "required"),
        ("path", dict(name="file", path=str(tmp / "missing.jsonl")), "not found"),
        ("path", dict(name="file", path=str(tmp / "empty.jsonl")), "empty"),
        ("path", dict(name="file", path=str(tmp / "data.xlsx")), "unsupported file type '.xlsx'"),
        ("path", dict(name="file", path=str(tmp / "broken.jsonl")), "could not read"),
        ("path", dict(name="file", path=str(tmp / "header_only.csv")), "could not read header_only.csv"),
        ("path", dict(name="hub", path=str(tmp / "no_such_dir")), "could not load"),
        ("split", dict(name="file", path=str(data), split="test"), "single split"),
        ("subset", dict(name="file", path=str(data), subset="x"), "only used with dataset.name=hub"),
        ("prompt_column", dict(name="file", path=str(data), prompt_column="txt"),
         "column 'txt' not found in data.jsonl; available: id, category, prompt, ref; set dataset.prompt_column="),
        ("prompt_column", dict(name="file", path=str(ints)), "holds int64, not text"),
        ("prompt_column", dict(prompt_column=""), "empty"),
        ("reference_column", dict(name="file", path=str(data), reference_column="gold"), "column 'gold' not found"),
        ("reference_column", dict(reference_column="prompt", prefix_tokens=4), "cannot be combined"),
        ("id_column", dict(name="file", path=str(data), id_column="uid"), "column 'uid' not found"),
        ("id_column", dict(name="file", path=str(dup)), "duplicate id '007'"),
        ("category_column", dict(category_column="topic"), "column 'topic' not found"),
        ("limit", dict(limit=0), ">= 1"),
        ("limit", dict(limit=-3), ">= 1"),
        ("prefix_tokens", dict(prefix_tokens=0), ">= 1"),
        ("prefix_tokens", dict(prefix_tokens=4), "needs a tokenizer"),
        ("chat_template", dict(chat_template=True), "needs a tokenizer"),
        ("system_prompt", dict(system_prompt="Be brief."), "set dataset.chat_template=true"),
    ]


def test_every_bad_input_is_one_line_naming_the_key(tmp_path):
    for key, kwargs, fragment in bad_cases(tmp_path):
        with pytest.raises(ValueError) as info:
            load_prompts(DatasetConfig(**kwargs))  # config-only mistakes raise already in DatasetConfig(...)
        message = str(info.value)
        assert message.startswith(f"dataset.{key}: "), (kwargs, message)
        assert fragment in message, (kwargs, message)
        assert "\n" not in message, (kwargs, message)


def test_chat_template_needs_a_template_on_the_tokenizer(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(ValueError, match=r"^dataset\.chat_template: the tokenizer has no chat template"):
        load_prompts(DatasetConfig(limit=1, chat_template=True), plain)


def test_check_config_on_plain_attributes():
    cfg = OmegaConf.create({f.name: getattr(DatasetConfig(), f.name) for f in fields(DatasetConfig)})
    check_config(cfg)
    cfg.name = "hubb"
    with pytest.raises(ValueError, match=r"^dataset\.name: .*did you mean 'hub'"):
        check_config(cfg)


# ---------------------------------------------------------------------------------------------- config files


@pytest.mark.parametrize("option", ["embedded", "file", "hub"])
def test_conf_yaml_matches_the_schema(option):
    node = OmegaConf.load(REPO / "conf" / "dataset" / f"{option}.yaml")
    assert list(node) == [f.name for f in fields(DatasetConfig)]
    merged = OmegaConf.merge(OmegaConf.structured(DatasetConfig), node)
    assert merged.name == option
    if option == "embedded":
        assert OmegaConf.to_object(merged) == DatasetConfig()
    else:  # the path is the one thing to add, and leaving it out says so
        with pytest.raises(ValueError, match=rf"^dataset\.path: required with dataset\.name={option}"):
            OmegaConf.to_object(merged)


# ---------------------------------------------------------------------------------------------- offline


def test_loads_with_offline_env_vars(tmp_path):
    """A fresh interpreter with HF_HUB_OFFLINE/HF_DATASETS_OFFLINE set and sockets refused loads everything local."""
    write(tmp_path / "d.csv", ROWS)
    write(tmp_path / "d.parquet", ROWS)
    (tmp_path / "hubdir").mkdir()
    write(tmp_path / "hubdir" / "train.jsonl", ROWS)
    script = textwrap.dedent(
        f"""
        import socket
        def refuse(self, *a, **k):
            raise AssertionError("network access attempted")
        socket.socket.connect = refuse
        import datasets
        assert datasets.config.HF_HUB_OFFLINE
        from decodebench.data import DatasetConfig, load_prompts
        tmp = {str(tmp_path)!r}
        n = [len(load_prompts(DatasetConfig())),
             len(load_prompts(DatasetConfig(name="file", path=tmp + "/d.csv"))),
             len(load_prompts(DatasetConfig(name="file", path=tmp + "/d.parquet"))),
             len(load_prompts(DatasetConfig(name="hub", path=tmp + "/hubdir")))]
        try:
            load_prompts(DatasetConfig(name="hub", path="nobody/no-such-dataset"))
        except ValueError as e:
            assert str(e).startswith("dataset.path: could not load"), e
        print(n)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(tmp_path / "cache"))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == f"[{len(load_prompts(DatasetConfig()))}, 3, 3, 3]"
