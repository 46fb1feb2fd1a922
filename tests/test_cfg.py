"""Classifier-free guidance in the running batch, against transformers on the embedded model (float32):
greedy tokens equal `generate(guidance_scale=..., negative_prompt_ids=...)`, the first step's guided logits
equal `UnbatchedClassifierFreeGuidanceLogitsProcessor`'s, sampled rows do not depend on the batch size, and
guided rows share a batch with unguided ones. Negative prompts come from the runner as prompts do."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from decodebench import data
from decodebench.decoding.engine import Request, generate, make_context
from decodebench.decoding.engine.kvcache import Runtime
from decodebench.decoding.engine.batch import BatchStats
from decodebench.decoding.engine.running import RunningBatch
from decodebench.decoding.search.spec import build_strategy
from decodebench.runner import build_requests
from decodebench.specs import to_specs
from tests.test_continuous import eos_happy, tiny_requests  # noqa: F401  (a fixture, used by name)

# (prompt, negative prompt or None: then the unconditional sequence starts from the prompt's last token)
CASES = [("Once upon a time, a dog", "sad"), ("The weather today is", None),
         ("My favourite food is", "I hate everything about food")]
NEW = 8


def requests(tok, spec, cases=CASES, seed=0):
    return [Request(prompt_id=str(i), prompt_ids=tok(p)["input_ids"], params=spec.params, seed=seed,
                    negative_prompt_ids=tok(n)["input_ids"] if n else None) for i, (p, n) in enumerate(cases)]


def hf_greedy(model, tok, r: Request, scale: float) -> list[int]:
    ids = torch.tensor([r.prompt_ids])
    kw = {} if r.negative_prompt_ids is None else {"negative_prompt_ids": torch.tensor([r.negative_prompt_ids])}
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW,
                         guidance_scale=scale, pad_token_id=tok.pad_token_id, **kw)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def test_greedy_guided_rows_equal_transformers_generate(embedded):
    model, tok = embedded
    spec = build_strategy({"name": "cfg", "guidance_scale": 1.5, "max_new_tokens": NEW})
    reqs = requests(tok, spec)
    outs, stats = generate(model, tok, reqs, spec, batch_size=len(reqs))
    for r, o in zip(reqs, outs):
        ref = hf_greedy(model, tok, r, 1.5)
        assert o.token_ids == ref, (o.token_ids, ref)
    assert {o.finish_reason for o in outs} == {"eos", "length"}
    # both halves in one forward per step: one prefill, then 2B rows in every decode forward
    assert stats.row_steps == 2 * len(reqs) * (stats.forward_passes - 1)


@torch.no_grad()
@pytest.mark.parametrize("scale", [0.0, 1.5, 3.0])
def test_first_step_guided_logits_equal_the_processor(embedded, scale):
    model, tok = embedded
    spec = build_strategy({"name": "cfg", "guidance_scale": scale, "max_new_tokens": 2})
    reqs = requests(tok, spec)
    ctx = make_context(model, tok, Runtime(model), spec, BatchStats(), batch_size=len(reqs))
    rb = RunningBatch(ctx, spec, len(reqs), 64, mirror=True)
    rb.admit(list(enumerate(reqs)))
    ours = rb.guided_logits(rb.n_running)
    for i, r in enumerate(reqs):
        ids = torch.tensor([r.prompt_ids])
        neg = None if r.negative_prompt_ids is None else torch.tensor([r.negative_prompt_ids])
        proc = hf.UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, model, neg)
        ref = proc(ids, model(ids).logits[:, -1].float())
        assert torch.allclose(ours[i : i + 1], ref, atol=1e-4), (ours[i : i + 1] - ref).abs().max()


@torch.no_grad()
def test_sampled_guided_rows_do_not_depend_on_the_batch_and_mix_with_unguided_rows(embedded):
    model, tok = embedded
    guided = build_strategy({"name": "cfg", "do_sample": True, "top_k": 50, "guidance_scale": 2.0,
                             "max_new_tokens": NEW})
    plain = build_strategy({"name": "topk", "do_sample": True, "top_k": 50, "max_new_tokens": NEW})
    reqs = requests(tok, guided, seed=5)
    alone = [generate(model, tok, [r], guided, batch_size=1)[0][0].token_ids for r in reqs]
    together = [o.token_ids for o in generate(model, tok, reqs, guided, batch_size=3)[0]]
    assert together == alone
    # an unguided row among guided ones gets exactly what it gets alone; with 2 slots the third row
    # joins a freed slot (and its mirror) mid-run
    unguided = requests(tok, plain, seed=5)
    outs = [o.token_ids for o in generate(model, tok, [reqs[0], unguided[1], reqs[2]], guided, batch_size=2)[0]]
    ref_plain = generate(model, tok, [unguided[1]], plain, batch_size=1)[0][0].token_ids
    assert outs == [alone[0], ref_plain, alone[2]]
    assert alone[1] != ref_plain  # and guidance does change that row's tokens (same prompt, same seed)


def test_runner_tokenizes_negative_prompts_as_prompts_chat_template_included(embedded):
    import datasets

    _, tok = embedded
    table = datasets.Dataset.from_list([{"prompt": "Hi there", "neg": "Be rude"},
                                        {"prompt": "Tell a joke", "neg": ""}])
    cfg = data.DatasetConfig(chat_template=True, system_prompt="You are kind.", negative_prompt_column="neg")
    prompts = data.to_prompts(table, cfg, tok)
    spec = build_strategy({"name": "cfg", "guidance_scale": 2.0, "max_new_tokens": 4})
    reqs = build_requests(prompts, tok, spec, 0, True, system_prompt=cfg.system_prompt)
    for r, neg in zip(reqs, ["Be rude", ""]):
        msgs = [{"role": "system", "content": "You are kind."}, {"role": "user", "content": neg}]
        want = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        assert r.negative_prompt_ids == tok(want, add_special_tokens=False)["input_ids"]
    # the strategy's one text for every row; scale 1 leaves guidance (and the negative prompt) off
    spec = build_strategy({"name": "cfg", "guidance_scale": 2.0, "negative_prompt": "dull", "max_new_tokens": 4})
    plain_prompts = data.to_prompts(table, data.DatasetConfig(), tok)
    negs = [r.negative_prompt_ids for r in build_requests(plain_prompts, tok, spec, 0, False)]
    assert negs == [tok("dull")["input_ids"]] * 2
    spec = build_strategy({"name": "cfg", "negative_prompt": "dull", "max_new_tokens": 4})
    assert [r.negative_prompt_ids for r in build_requests(plain_prompts, tok, spec, 0, False)] == [None, None]


def test_mirrors_survive_refills_and_column_moves(eos_happy, monkeypatch):
    """Rows ending at different times, refills, negative prompts longer than their prompts, and almost no
    spare columns (moved back every few steps): each row's tokens equal the row run alone."""
    from decodebench.decoding import engine
    from decodebench.decoding.engine import driver

    model, tok = eos_happy
    guided = build_strategy({"name": "cfg", "do_sample": True, "guidance_scale": 2.5, "max_new_tokens": 24})
    plain = build_strategy({"name": "sample", "do_sample": True, "max_new_tokens": 24})
    reqs = tiny_requests(tok, guided, n=10) + tiny_requests(tok, plain, n=4)
    for i, r in enumerate(reqs[:10]):
        r.negative_prompt_ids = None if i % 3 == 0 else tok("xyz" * (i % 5 + 2))["input_ids"]
    ref = [generate(model, tok, [r], guided, batch_size=1)[0][0].token_ids for r in reqs]
    assert len({len(t) for t in ref}) > 3  # rows end at very different times
    moves = []
    orig = engine.Runtime.allocate

    def small(self, slots, capacity):
        kv = orig(self, slots, capacity)
        shift = kv.shift
        kv.shift = lambda d: (moves.append(d), shift(d))
        return kv

    monkeypatch.setattr(driver, "kv_capacity", lambda reqs, spec, cont: spec.max_new_tokens + 2 + max(
        max(len(r.prompt_ids), len(r.negative_prompt_ids or ())) for r in reqs))
    monkeypatch.setattr(engine.Runtime, "allocate", small)
    for cont in (True, False):
        moves.clear()
        outs, _ = generate(model, tok, reqs, guided, batch_size=4, continuous=cont, sync_every=5)
        assert moves and [o.token_ids for o in outs] == ref, cont


def test_negative_prompts_without_tokens_or_room_are_refused_before_the_model_loads():
    from decodebench import runner
    from decodebench.config import ConfigError
    from tests.conftest import compose

    for neg, needle in (("x " * 600, "has 1200 tokens, more than the 504 positions"), ("", "has no tokens")):
        cfg = compose(["model=tiny", "strategy=cfg", f"strategy.negative_prompt='{neg}'", "dataset.limit=2",
                       "strategy.max_new_tokens=8", "logger=none", "scorers=text"])
        with pytest.raises(ConfigError, match=needle) as e:
            run = to_specs(cfg)
            runner.checked_prompts(run, runner.prepare(run), None, 8)  # tokenizer and model config only
        assert str(e.value).startswith("strategy.negative_prompt: ") and "\n" not in str(e.value)
