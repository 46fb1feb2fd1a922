"""Diverse (group) beam search against a slow reference: a plain Python transcription of transformers'
former `_group_beam_search` (v4.x: `BeamHypotheses`, `BeamSearchScorer.process`/`finalize`,
`HammingDiversityLogitsProcessor`), one prompt at a time, full forwards without a cache."""

from __future__ import annotations

import pytest
import torch

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401  (one_thread: autouse fixture)


class RefHyps:
    """transformers' former BeamHypotheses, as it was."""

    def __init__(self, n, length_penalty, early_stopping, max_new):
        self.n, self.lp, self.early, self.max_new = n, length_penalty, early_stopping, max_new
        self.beams: list = []
        self.worst = 1e9

    def add(self, hyp, sum_logprobs, generated_len):
        score = sum_logprobs / (generated_len ** self.lp)
        if len(self.beams) < self.n or score > self.worst:
            self.beams.append((score, hyp))
            if len(self.beams) > self.n:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs, cur_len):
        if len(self.beams) < self.n:
            return False
        if self.early is True:
            return True
        length = self.max_new if (self.early == "never" and self.lp > 0.0) else cur_len
        return self.worst >= best_sum_logprobs / length ** self.lp


@torch.inference_mode()
def slow_diverse(model, prompt, nb, G, penalty, lp, early, n_new, eos, pad, n_return, rep=None):
    S, V = nb // G, model.config.vocab_size
    seqs = [[] for _ in range(nb)]
    scores = torch.full((nb,), -1e9)
    scores[::S] = 0.0
    hyps = [RefHyps(S, lp, early, n_new) for _ in range(G)]
    done = [False] * G
    for t in range(n_new):
        logits = model(torch.tensor([prompt + s for s in seqs])).logits[:, -1].float()
        lps = torch.log_softmax(logits, -1)
        current = torch.zeros(nb, dtype=torch.long)
        new_seqs, new_scores = list(seqs), scores.clone()
        for g in range(G):
            rows = list(range(g * S, (g + 1) * S))
            sc = lps[rows]
            if g > 0 and penalty > 0:  # Hamming diversity: tokens this step's earlier groups chose
                sc = sc - penalty * torch.bincount(current[: g * S], minlength=V)
            if rep is not None:
                from transformers import RepetitionPenaltyLogitsProcessor

                sc = RepetitionPenaltyLogitsProcessor(rep)(torch.tensor([prompt + seqs[r] for r in rows]), sc)
            sc = sc + scores[rows][:, None]
            top_s, top_i = torch.topk(sc.view(-1), 2 * S, largest=True, sorted=True)
            if done[g]:
                for r in rows:
                    new_seqs[r], new_scores[r], current[r] = seqs[rows[0]] + [pad], 0.0, pad
                continue
            nxt = []
            for rank, (s, i) in enumerate(zip(top_s.tolist(), top_i.tolist())):
                b, v = divmod(i, V)
                if v == eos:
                    if rank < S:
                        hyps[g].add(seqs[rows[b]] + [v], s, t + 1)
                else:
                    nxt.append((s, v, b))
                if len(nxt) == S:
                    break
            for j, (s, v, b) in enumerate(nxt):
                new_seqs[rows[j]], new_scores[rows[j]], current[rows[j]] = seqs[rows[b]] + [v], s, v
            done[g] = done[g] or hyps[g].is_done(top_s.max().item(), t + 1)
        seqs, scores = new_seqs, new_scores
        if all(done):
            break
    for g in range(G):
        if not done[g]:
            for r in range(g * S, (g + 1) * S):
                hyps[g].add(seqs[r], scores[r].item(), len(seqs[r]))
    ranked = sorted((b for h in hyps for b in h.beams), key=lambda x: x[0])
    return [ranked.pop() for _ in range(n_return)]


def run(model, tok, texts, d, batch_size=64):
    spec = build_strategy({"name": "d", "method": "diverse_beam", **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], sample_index=s, params=spec.params)
            for i, x in enumerate(texts) for s in range(spec.num_return_sequences)]
    return generate(model, tok, reqs, spec, batch_size=batch_size)


@pytest.mark.parametrize("nb,G,pen,lp,early,n", [
    (4, 2, 1.0, 1.0, False, 2), (6, 3, 0.5, 1.0, True, 3), (4, 4, 2.0, 0.7, "never", 4),
    (4, 2, 0.0, 1.0, False, 1), (6, 2, 1.5, -0.5, "never", 2),
])
def test_diverse_beam_equals_slow_reference(nb, G, pen, lp, early, n):
    model, tok = peaky_tiny()
    d = dict(num_beams=nb, num_beam_groups=G, diversity_penalty=pen, length_penalty=lp, early_stopping=early,
             num_return_sequences=n, max_new_tokens=10)
    outs, _ = run(model, tok, TEXTS, d)
    got = iter(outs)
    for x in TEXTS:
        ref = slow_diverse(model, tok(x)["input_ids"], nb, G, pen, lp, early, 10, tok.eos_token_id, tok.pad_token_id, n)
        for score, hyp in ref:
            o = next(got)
            assert o.token_ids == hyp
            assert o.score == pytest.approx(score, rel=1e-5, abs=1e-6)
            assert o.finish_reason == ("eos" if hyp[-1] == tok.eos_token_id else "length")


def test_diverse_beam_with_repetition_penalty_and_small_batches():
    model, tok = peaky_tiny()
    d = dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, num_return_sequences=2, max_new_tokens=8,
             repetition_penalty=1.4)
    outs, _ = run(model, tok, TEXTS, d)
    got = iter(outs)
    for x in TEXTS:
        for score, hyp in slow_diverse(model, tok(x)["input_ids"], 4, 2, 1.0, 1.0, False, 8, tok.eos_token_id,
                                       tok.pad_token_id, 2, rep=1.4):
            assert next(got).token_ids == hyp
    split, _ = run(model, tok, TEXTS, d, batch_size=3)
    assert [o.token_ids for o in split] == [o.token_ids for o in outs]


def test_penalty_makes_groups_differ():
    model, tok = peaky_tiny()
    # EOS is blocked: ending candidates go to the finished lists, never to the running beams whose tokens
    # the Hamming penalty counts, so (as in transformers) the penalty never applies to EOS
    base = dict(num_beams=4, num_beam_groups=4, num_return_sequences=4, max_new_tokens=6, min_new_tokens=6)
    same, _ = run(model, tok, ["The cat"], {**base, "diversity_penalty": 0.0})
    diff, _ = run(model, tok, ["The cat"], {**base, "diversity_penalty": 5.0})
    assert len({tuple(o.token_ids[:1]) for o in same}) == 1  # independent groups agree on the first token
    assert len({tuple(o.token_ids[:1]) for o in diff}) == 4  # a large penalty forces four first tokens
