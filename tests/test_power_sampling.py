"""Power sampling against the authors' `mcmc_power_samp` and `naive_temp` (aakaran/reasoning-with-sampling,
llm_experiments/power_samp_utils.py), ported below with their control flow and arithmetic unchanged; its
model call (`model.generate`) and its `random`/`np.random` draws are passed in, so both loops can be fed
the same proposals and coins. Then the property the method exists for: on a toy model whose sequences can
be enumerated, the chain's samples follow p^alpha (and not low-temperature sampling's distribution)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from decodebench.decoding.engine import BatchStats, Request, generate, make_context
from decodebench.decoding.engine.kvcache import Runtime
from decodebench.decoding.search.power_sampling import log_accept_ratio, model_proposer, power_sample
from decodebench.decoding.search.spec import build_strategy
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401


def ref_mcmc_power_samp(naive_temp, randint, rand, context, mcmc_steps, max_new_tokens, block_num, eos):
    """mcmc_power_samp, as written there (tqdm, prints and the log-prob return values left out)."""
    c = len(context)
    gen = context.copy()
    log_probs_norm, log_probs_unnorm = [], []
    assert max_new_tokens % block_num == 0
    jump_size = int(max_new_tokens // block_num)
    attempts = acceptances = 0
    for _ in range(block_num):
        gen, lp_norm, lp_unnorm = naive_temp(gen, seq_len=jump_size + len(gen))
        log_probs_norm.extend(lp_norm)
        log_probs_unnorm.extend(lp_unnorm)
        for _ in range(mcmc_steps):
            attempts += 1
            t = len(gen)
            idx = randint(c, t - 1)
            prop, log_prob_prop, target_log_prob_prop = naive_temp(gen[:idx], seq_len=t)
            s = len(prop)
            log_prob_cur = log_probs_norm.copy()[idx - c:s - c]
            target_log_prob_cur = log_probs_unnorm.copy()[idx - c:s - c]
            log_r = sum(target_log_prob_prop) + sum(log_prob_cur) - sum(target_log_prob_cur) - sum(log_prob_prop)
            if rand() < np.exp(log_r):
                acceptances += 1
                gen = prop.copy()
                log_probs_norm[idx - c:] = log_prob_prop.copy()
                log_probs_unnorm[idx - c:] = target_log_prob_prop.copy()
        if eos in gen:
            return gen[:gen.index(eos) + 1], acceptances / attempts
    return gen, acceptances / attempts


class Toy:
    """A bigram 'model' over a few tokens (row 0 of the table: the start), sampled at temperature 1/alpha.
    Draws come from a generator seeded by (seed, row, call), so any caller order gets the same proposals."""

    def __init__(self, table, alpha, eos=None, seed=0):
        self.logp, self.alpha, self.eos, self.seed = np.log(np.asarray(table, dtype=float)), alpha, eos, seed

    def continue_(self, prefix, n, row, call):
        rng = np.random.default_rng([self.seed, row, call])
        toks, lpn, lpu, prev = [], [], [], (prefix[-1] + 1 if prefix else 0)
        for _ in range(n):
            q = self.alpha * self.logp[prev]
            q = q - np.logaddexp.reduce(q)
            x = int(rng.choice(len(q), p=np.exp(q)))
            toks.append(x), lpn.append(float(q[x])), lpu.append(float(self.alpha * self.logp[prev][x]))
            prev = x + 1
            if x == self.eos:
                break
        return toks, lpn, lpu

    def propose(self, rows, prefixes, lengths, call):
        return [self.continue_(p, n, r, call) for r, p, n in zip(rows, prefixes, lengths)]


def test_accept_ratio_is_the_reference_formula():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 6))
        tp, nc, tc, npp = (list(rng.normal(-2, 1, n)) for _ in range(4))
        ref = sum(tp) + sum(nc) - sum(tc) - sum(npp)  # the code's log_r line
        assert log_accept_ratio(tp, nc, tc, npp) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_loop_equals_the_reference(seed):
    table = np.random.default_rng(seed).dirichlet(np.ones(4) * 0.7, size=5)  # token 3 is EOS
    toy = Toy(table, alpha=3.0, eos=3, seed=seed)
    u = np.random.default_rng(100 + seed).uniform(size=(200, 2))
    coins = lambda rows, call: ([u[call, 0]], [u[call, 1]])  # noqa: E731
    ours = power_sample(toy.propose, coins, 1, 12, 3, 4, {3})[0]
    calls = iter(range(10**6))
    state = {"call": 0}

    def naive_temp(context, seq_len):
        state["call"] = next(calls)
        t, n, lu = toy.continue_(context[1:], seq_len - len(context), 0, state["call"])
        return context + t, n, lu

    def randint(a, b):
        return a + min(int(u[state["call"] + 1, 0] * (b - a + 1)), b - a)

    ref, ratio = ref_mcmc_power_samp(naive_temp, randint, lambda: u[state["call"], 1], [-1], 4, 12, 3, 3)
    assert ours.gen == ref[1:]
    assert ours.accepts / ours.attempts == pytest.approx(ratio)


def test_stationary_distribution_is_p_to_the_alpha():
    # first token 0 or 1 equally likely; after 0 three even options, after 1 one strong one: p^alpha puts
    # most mass on the paths through 1, low temperature keeps the first token at 50/50
    table = [[0.5, 0.5 - 1e-9, 1e-9], [1 / 3] * 3, [0.9, 0.05, 0.05], [1 / 3] * 3]
    alpha, n = 4.0, 3000
    toy = Toy(table, alpha, seed=1)
    u = np.random.default_rng(7).uniform(size=(60, n, 2))
    coins = lambda rows, call: (list(u[call, rows, 0]), list(u[call, rows, 1]))  # noqa: E731
    chains = power_sample(toy.propose, coins, n, 2, 1, 40, set())
    lp = np.log(np.asarray(table))
    states = [(a, b) for a in range(3) for b in range(3)]
    seq_lp = np.array([lp[0][a] + lp[a + 1][b] for a, b in states])
    target = np.exp(alpha * seq_lp - np.logaddexp.reduce(alpha * seq_lp))
    low = [np.exp(alpha * lp[0] - np.logaddexp.reduce(alpha * lp[0]))[a]
           * np.exp(alpha * lp[a + 1] - np.logaddexp.reduce(alpha * lp[a + 1]))[b] for a, b in states]
    counts = np.array([sum(tuple(c.gen) == s for c in chains) for s in states])

    def stat(p):
        p = np.asarray(p)
        keep = p * n >= 5  # chi-square cells with enough expected mass; the rest pooled
        e = np.append(p[keep] * n, p[~keep].sum() * n)
        o = np.append(counts[keep], counts[~keep].sum())
        return float(((o - e) ** 2 / np.maximum(e, 1e-12)).sum()), int(keep.sum())

    s, df = stat(target)
    assert s < chi2.ppf(0.999, df)
    s_low, df_low = stat(low)
    assert s_low > chi2.ppf(0.999, df_low) * 10  # the test tells p^alpha from low temperature


@torch.inference_mode()
def test_model_proposals_carry_naive_temps_log_probs():
    model, tok = peaky_tiny()
    spec = build_strategy({"name": "p", "method": "power_sampling", "do_sample": True, "power_alpha": 2.5,
                           "max_new_tokens": 8, "block_num": 2, "mcmc_steps": 1})
    reqs = [Request(str(i), tok(x)["input_ids"], 0, spec.params, 3) for i, x in enumerate(TEXTS[:3])]
    ctx = make_context(model, tok, Runtime(model), spec, BatchStats())
    prefixes = [[], [65, 66], [70]]
    props = model_proposer(reqs, spec, ctx)([0, 1, 2], prefixes, [5, 3, 6], call=4)
    for r, pre, (t, lpn, lpu), n in zip(reqs, prefixes, props, [5, 3, 6]):
        assert 1 <= len(t) <= n and (len(t) == n or t[-1] == tok.eos_token_id)
        ids = torch.tensor([r.prompt_ids + pre + t])
        logits = model(ids).logits[0, len(r.prompt_ids) + len(pre) - 1:-1].float()
        idx = torch.tensor(t).view(-1, 1)
        # naive_temp: log_softmax(scores) with scores = logits / temp; 1/temp * log_softmax(logits)
        assert lpn == pytest.approx((logits * 2.5).log_softmax(-1).gather(1, idx).view(-1).tolist(), abs=1e-4)
        assert lpu == pytest.approx((2.5 * logits.log_softmax(-1)).gather(1, idx).view(-1).tolist(), abs=1e-4)


def test_seeds_reproduce_at_any_batch_size():
    model, tok = peaky_tiny()
    spec = build_strategy({"name": "p", "method": "power_sampling", "do_sample": True, "power_alpha": 2.0,
                           "max_new_tokens": 6, "block_num": 2, "mcmc_steps": 2, "num_return_sequences": 2})
    reqs = [Request(str(i), tok(x)["input_ids"], s, spec.params, 5) for i, x in enumerate(TEXTS[:3]) for s in range(2)]
    one = [generate(model, tok, [r], spec, batch_size=1)[0][0] for r in reqs]
    all_, stats = generate(model, tok, reqs, spec, batch_size=6)
    assert [o.token_ids for o in all_] == [o.token_ids for o in one]
    assert [o.extra["power_acceptance_ratio"] for o in all_] == [o.extra["power_acceptance_ratio"] for o in one]
    assert len({tuple(o.token_ids) for o in all_}) > 1
    assert stats.extra["mh_attempts"] == 6 * 2 * 2


@pytest.mark.parametrize("d,key", [({"power_alpha": 0}, "power_alpha"), ({"power_alpha": -1.0}, "power_alpha"),
                                   ({"mcmc_steps": 0}, "mcmc_steps"), ({"block_num": 3}, "block_num"),
                                   ({"temperature": 0.5}, "temperature"), ({"do_sample": False}, "do_sample")])
def test_bad_settings_are_refused(d, key):
    with pytest.raises(ValueError, match=f"^{key}"):
        build_strategy({"name": "p", "method": "power_sampling", "do_sample": True, "max_new_tokens": 8,
                        "block_num": 4, **d})


def test_cli_refuses_alpha_zero_before_loading():
    r = subprocess.run([sys.executable, "-m", "decodebench", "strategy=power_sampling", "strategy.power_alpha=0",
                        "model=tiny", "logger=none"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "power_alpha must be a number > 0" in r.stderr


def test_metrics_report_acceptance_and_forwards():
    from decodebench.runner import run_metrics

    model, tok = peaky_tiny()
    spec = build_strategy({"name": "p", "method": "power_sampling", "do_sample": True, "max_new_tokens": 4,
                           "block_num": 2, "mcmc_steps": 2})
    outs, stats = generate(model, tok, [Request("0", tok("ab")["input_ids"], 0, spec.params, 0)], spec)
    m = run_metrics(stats, 1.0, "cpu")
    assert m["mh_acceptance_rate"] == pytest.approx(outs[0].extra["power_acceptance_ratio"])
    assert m["forward_passes_per_token"] > 1  # every proposal is a fresh prefill plus its tokens
    assert math.isfinite(m["forward_passes_per_token"])


def test_stop_strings_cut_the_finished_chain():
    """A stop string cuts the chain's final sequence after its first occurrence; the chain is the same."""
    model, tok = peaky_tiny()
    base = {"name": "p", "method": "power_sampling", "do_sample": True, "power_alpha": 2.0, "max_new_tokens": 8,
            "block_num": 2, "mcmc_steps": 2}
    plain = build_strategy(base)
    reqs = [Request(str(i), tok(x)["input_ids"], 0, plain.params, 7) for i, x in enumerate(TEXTS[:3])]
    full = [o.token_ids for o in generate(model, tok, reqs, plain, batch_size=3)[0]]
    # a stop string from inside the first row's own text: its row must be cut there
    text = tok.decode(full[0])
    stop = text[len(text) // 2:len(text) // 2 + 1]
    assert stop
    cut, _ = generate(model, tok, reqs, build_strategy({**base, "stop": [stop]}), batch_size=3)
    for want, o in zip(full, cut):
        n = next((m for m in range(1, len(want) + 1) if stop in tok.decode(want[:m])), None)
        assert o.token_ids == (want if n is None else want[:n])
        assert o.finish_reason == ("stop" if n is not None else o.finish_reason)
    assert cut[0].finish_reason == "stop" and len(cut[0].token_ids) < len(full[0])
    with pytest.raises(ValueError, match="^stopping and max_time"):
        build_strategy({**base, "max_time": 5.0})
