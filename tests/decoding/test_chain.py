"""LogitsChain and process_logits: HF's order end to end, per-row packing, padding, incremental tables."""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding import DecodeState, LogitsChain, NaNLogitsError, SamplingParams, process_logits

from .helpers import make_logits

V = 40


def _hf_processors(gen_kwargs: dict, prompt_len: int, mask: torch.Tensor):
    """The processor list transformers' generate() itself builds, in its own order."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=1, n_head=1, n_embd=8, vocab_size=V, n_positions=64, bos_token_id=0, eos_token_id=5)
    model = GPT2LMHeadModel(cfg)
    gc = GenerationConfig(do_sample=True, eos_token_id=5, **gen_kwargs)
    gc._eos_token_tensor = torch.tensor([5])  # generate() sets this in _prepare_special_tokens
    return model._get_logits_processor(gc, input_ids_seq_length=prompt_len, device="cpu",
                                       model_kwargs={"attention_mask": mask})


EVERYTHING = dict(
    temperature=0.7, top_k=12, top_p=0.9, min_p=0.02, typical_p=0.95, epsilon_cutoff=1e-3, eta_cutoff=1e-3,
    repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=4,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hf_order_equals_generate_processor_list(dtype):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 8, (4, 9), generator=g)
    x = make_logits(4, V, dtype, seed=1, ties=True)
    kwargs = dict(EVERYTHING, bad_words_ids=[[7], [5]], sequence_bias=[[[3], 1.5], [[9], -0.75]])
    ref = _hf_processors(kwargs, prompt_len=6, mask=torch.ones_like(ids))(ids, x.clone())
    ours, names = process_logits(x, ids, prompt_length=6, eos_token_id=5, bad_words_ids=[7, 5],
                                 logit_bias={3: 1.5, 9: -0.75}, return_chain=True, **EVERYTHING)
    assert torch.equal(ours, ref)
    assert names == ["logit_bias", "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "min_new_tokens",
                     "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"]


def test_only_given_params_apply():
    x = make_logits(2, V, torch.float32, seed=2)
    out, names = process_logits(x, return_chain=True)
    assert names == [] and torch.equal(out, x)
    _, names = process_logits(x, top_p=1.0, top_k=0, temperature=1.0, return_chain=True)
    assert names == []  # generate()'s "off" values stay off


def test_named_orders_and_explicit_lists():
    x = make_logits(2, V, torch.float32, seed=3)
    p = dict(temperature=0.5, top_k=5, min_p=0.1, top_p=0.8)
    assert process_logits(x, order="vllm", return_chain=True, **p)[1] == ["temperature", "min_p", "top_k", "top_p"]
    assert process_logits(x, order="llamacpp", return_chain=True, **p)[1] == ["top_k", "top_p", "min_p", "temperature"]
    out, names = process_logits(x, order=["min_p", "top_k", "temperature", "top_p"], return_chain=True, **p)
    assert names == ["min_p", "top_k", "temperature", "top_p"]
    from decodebench.decoding import min_p, temperature, top_k, top_p

    assert torch.equal(out, top_p(temperature(top_k(min_p(x, 0.1), 5), 0.5), 0.8))


def test_order_errors_are_one_line_with_a_suggestion():
    x = make_logits(1, V, torch.float32, seed=4)
    with pytest.raises(ValueError, match="did you mean 'top_p'"):
        process_logits(x, order=["top_k", "top_pp"], top_k=3)
    with pytest.raises(ValueError, match="did you mean 'vllm'"):
        process_logits(x, order="vlm", top_k=3)
    with pytest.raises(ValueError, match="leaves it out; add 'top_p'"):
        process_logits(x, order=["top_k"], top_k=3, top_p=0.5)
    with pytest.raises(TypeError, match="did you mean 'top_k'"):
        process_logits(x, topk=3)
    rows = [SamplingParams(do_sample=True, order="hf"), SamplingParams(do_sample=True, order="vllm")]
    with pytest.raises(ValueError, match="share one order"):
        LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=None, device="cpu")


def test_per_row_tensor_params_and_their_errors():
    x = make_logits(4, V, torch.float64, seed=5)
    out = process_logits(x, top_k=torch.tensor([1, 0, 3, 0]), temperature=torch.tensor([0.5, 1.0, 2.0, 1.0]))
    assert torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])
    assert torch.equal(out[2:3], process_logits(x[2:3], top_k=3, temperature=2.0))
    with pytest.raises(ValueError, match=r"top_k has shape \(3,\); expected a number or a \[4\] tensor"):
        process_logits(x, top_k=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="top_p must be in"):
        process_logits(x, top_p=torch.tensor([0.5, 1.5, 0.2, 0.3]))


def test_nan_raises_and_missing_inputs_are_named():
    x = make_logits(2, V, torch.float32, seed=6)
    with pytest.raises(NaNLogitsError):
        process_logits(x.index_fill(1, torch.tensor([3]), float("nan")), top_k=3)
    with pytest.raises(ValueError, match="repetition_penalty needs input_ids"):
        process_logits(x, repetition_penalty=1.2)
    with pytest.raises(ValueError, match="presence_penalty needs prompt_length"):
        process_logits(x, torch.zeros(2, 3, dtype=torch.long), presence_penalty=0.5)
    with pytest.raises(ValueError, match="min_new_tokens needs eos_token_id"):
        process_logits(x, torch.zeros(2, 3, dtype=torch.long), prompt_length=1, min_new_tokens=2)


def test_chain_nan_flag_is_read_only_on_demand():
    rows = [SamplingParams(do_sample=True, top_k=3)] * 2
    chain = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=None, device="cpu")
    state = DecodeState(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), 1, 0)
    chain(make_logits(2, V, torch.float32, seed=7), state)
    chain.raise_if_nan()
    chain(torch.full((2, V), float("nan")), state)
    assert bool(chain.nan_flag())
    with pytest.raises(NaNLogitsError):
        chain.raise_if_nan()


def _padded_batch(rows: list[list[int]], pad: int = 1):
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, t - len(r) :], mask[i, t - len(r) :] = torch.tensor(r), 1
    return ids, mask


MIXED = [
    SamplingParams(do_sample=True, temperature=0.8, top_k=7, top_p=0.9, repetition_penalty=1.4, presence_penalty=0.3),
    SamplingParams(),  # greedy, nothing else: every transform must leave it alone
    SamplingParams(do_sample=True, top_p=0.6, frequency_penalty=0.5, no_repeat_ngram_size=2, min_new_tokens=3),
    SamplingParams(do_sample=False, top_k=2, repetition_penalty=1.2, penalize_prompt=False, logit_bias={4: 2.0}),
    SamplingParams(do_sample=True, typical_p=0.8, min_p=0.05, bad_words_ids=(6, 5), min_tokens_to_keep=2),
    SamplingParams(do_sample=True, temperature=0.0, epsilon_cutoff=0.01, eta_cutoff=0.02),
]


def test_mixed_batch_rows_equal_rows_alone_whatever_the_padding():
    prompts = [[3, 4, 3], [2, 2, 2, 2, 2], [7], [4, 4, 8, 9], [6, 6], [1, 3]]
    gen = [[4, 3, 2], [2, 2, 0], [7, 7, 3], [4, 8, 0], [5, 6, 6], [0, 3, 9]]  # 3 generated tokens each
    ids_p, mask_p = _padded_batch(prompts, pad=3)  # the pad id 3 also occurs for real
    ids = torch.cat([ids_p, torch.tensor(gen)], 1)
    mask = torch.cat([mask_p, torch.ones(6, 3, dtype=torch.long)], 1)
    x = make_logits(6, V, torch.float32, seed=8, ties=True)
    chain = LogitsChain.from_rows(MIXED, vocab_size=V, eos_token_id=5, device="cpu")
    out = chain(x, DecodeState(ids, mask, ids_p.shape[1], 3))
    for i, row in enumerate(MIXED):
        alone_ids = torch.tensor([prompts[i] + gen[i]])
        alone = LogitsChain.from_rows([row], vocab_size=V, eos_token_id=5, device="cpu")
        ref = alone(x[i : i + 1], DecodeState(alone_ids, torch.ones_like(alone_ids), len(prompts[i]), 3))
        assert torch.equal(out[i : i + 1], ref), f"row {i}"
        assert torch.equal(out[i], x[i]) == (i == 1), f"row {i}: changed iff it asked for something"
    assert torch.equal(out[1], x[1])  # the plain greedy row is untouched
    assert chain.do_sample.tolist() == [True, False, True, False, True, False]  # temperature 0 is greedy


def test_incremental_counts_equal_rebuilding_from_input_ids():
    rows = [SamplingParams(do_sample=True, repetition_penalty=1.5, frequency_penalty=0.4, presence_penalty=0.2),
            SamplingParams(do_sample=True, repetition_penalty=1.1, penalize_prompt=False)]
    ids, mask = _padded_batch([[2, 3], [4, 4, 4]], pad=9)
    inc = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=None, device="cpu")
    g = torch.Generator().manual_seed(9)
    for step in range(6):
        state = DecodeState(ids, mask, 3, step)
        x = make_logits(2, V, torch.float32, seed=100 + step)
        fresh = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=None, device="cpu")
        assert torch.equal(inc(x, state), fresh(x, state)), f"step {step}"
        new = torch.randint(0, 6, (2,), generator=g)
        inc.update(new)
        ids, mask = torch.cat([ids, new[:, None]], 1), torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)


def test_select_reindexes_rows_and_tables():
    ids, mask = _padded_batch([[2, 3], [4, 4, 4], [5]], pad=0)
    chain = LogitsChain.from_rows(MIXED[:3], vocab_size=V, eos_token_id=5, device="cpu")
    x = make_logits(3, V, torch.float32, seed=10)
    state = DecodeState(ids, mask, 3, 0)
    full = chain(x, state)
    sub = chain.select(torch.tensor([2, 0]))
    out = sub(x[[2, 0]], DecodeState(ids[[2, 0]], mask[[2, 0]], 3, 0))
    assert torch.equal(out, full[[2, 0]]) and sub.names == ["repetition_penalty", "frequency_penalty",
                                                           "presence_penalty", "no_repeat_ngram_size",
                                                           "min_new_tokens", "temperature", "top_k", "top_p"]


def test_each_filter_of_a_mixed_batch_runs_on_its_own_rows_only(monkeypatch):
    """A study's fused batch mixes strategies: each filter is handed only the rows that asked for it (one
    vocabulary pass per row, not per batch row), and every row still equals that row alone."""
    import decodebench.decoding.transforms.filters as filters
    import decodebench.decoding.transforms.llamacpp as llamacpp

    rows = [SamplingParams(do_sample=True, top_k=5), SamplingParams(do_sample=True, min_p=0.1),
            SamplingParams(do_sample=True, eta_cutoff=0.02), SamplingParams(do_sample=True, epsilon_cutoff=0.02),
            SamplingParams(do_sample=True, top_n_sigma=1.0), SamplingParams(do_sample=True, top_p=0.8),
            SamplingParams(do_sample=True, typical_p=0.8), SamplingParams(do_sample=False),
            SamplingParams(do_sample=True, eta_cutoff=0.05)]
    seen: dict = {}
    for mod, name in [(filters, "top_k"), (filters, "min_p"), (filters, "eta"), (filters, "epsilon"),
                      (llamacpp, "top_n_sigma"), (filters, "top_p"), (filters, "typical")]:
        def spy(x, *a, _f=getattr(mod, name), _n=name, **k):
            seen.setdefault(_n, []).append(x.shape[0])
            return _f(x, *a, **k)
        monkeypatch.setattr(mod, name, spy)
    import decodebench.decoding.transforms.filter_binders  # noqa: F401  (binders look the filters up per call)

    x = make_logits(len(rows), V, torch.float32, seed=3, ties=True)
    ids = torch.tensor([[1, 2]] * len(rows))
    out = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=5, device="cpu")(x, DecodeState(ids, torch.ones_like(ids), 2, 0))
    assert {n: s[0] for n, s in seen.items()} == {"top_k": 1, "min_p": 1, "eta": 2, "epsilon": 1, "top_n_sigma": 1,
                                                  "top_p": 1, "typical": 1}
    seen.clear()
    for i, row in enumerate(rows):
        alone = LogitsChain.from_rows([row], vocab_size=V, eos_token_id=5, device="cpu")
        assert torch.equal(out[i : i + 1], alone(x[i : i + 1], DecodeState(ids[:1], torch.ones_like(ids[:1]), 2, 0))), i


def _index_copies(fn):
    """Run `fn()` counting aten.index_copy (a new [B, V] tensor) and aten.index_copy_ (in place)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counts = {"index_copy": 0, "index_copy_": 0}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in counts:
                counts[name] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        out = fn()
    return out, counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_batch_filters_write_their_rows_in_place_into_the_chains_own_logits(dtype):
    """After a step that made new logits (temperature), each row-subset filter writes its rows back in
    place: no [B, V] copy per filter. The first step's input is the caller's: it is copied, never changed.
    Every row still equals that row alone."""
    rows = [SamplingParams(do_sample=True, temperature=0.7, top_k=5), SamplingParams(do_sample=True, temperature=0.7, min_p=0.1),
            SamplingParams(do_sample=True, temperature=0.7, eta_cutoff=0.02), SamplingParams(do_sample=False),
            SamplingParams(do_sample=True, temperature=0.7, top_n_sigma=1.0)]
    x = make_logits(len(rows), V, dtype, seed=5, ties=True)
    keep = x.clone()
    ids = torch.tensor([[1, 2]] * len(rows))
    chain = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=5, device="cpu")
    out, counts = _index_copies(lambda: chain(x, DecodeState(ids, torch.ones_like(ids), 2, 0)))
    assert counts == {"index_copy": 0, "index_copy_": 4}  # top_k, min_p, eta, top_n_sigma after temperature
    assert torch.equal(x, keep)
    for i, row in enumerate(rows):
        alone = LogitsChain.from_rows([row], vocab_size=V, eos_token_id=5, device="cpu")
        assert torch.equal(out[i : i + 1], alone(x[i : i + 1], DecodeState(ids[:1], torch.ones_like(ids[:1]), 2, 0))), i

    # no step before the first filter: its input is the caller's logits, so it writes into a copy
    rows = [SamplingParams(do_sample=True, top_k=5), SamplingParams(do_sample=True, min_p=0.1), SamplingParams(do_sample=False)]
    x = make_logits(len(rows), V, dtype, seed=6, ties=True)
    keep = x.clone()
    chain = LogitsChain.from_rows(rows, vocab_size=V, eos_token_id=5, device="cpu")
    out, counts = _index_copies(lambda: chain(x, DecodeState(ids[:3], torch.ones_like(ids[:3]), 2, 0)))
    assert counts == {"index_copy": 1, "index_copy_": 1}  # top_k copies the caller's, min_p writes into it
    assert torch.equal(x, keep) and not torch.equal(out, x)
