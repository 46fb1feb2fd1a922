"""Choosing one output among a prompt's `num_return_sequences` samples (`strategy.selector`).

    self_consistency  majority vote over the answers pulled out of each sample, by `answer_pattern` (a regex:
                      group 1 if it has one, else the whole match; the last match counts) or by a registered
                      `extractor` (Wang et al. 2023, "Self-Consistency Improves Chain of Thought Reasoning").
                      Ties go to the answer seen first; the selected sample is the first with that answer.
    best_of_n         the sample with the highest mean token log-probability under the generating model, or
                      the highest score of a registered `reward` function `(prompt, text) -> float`.
    mbr               minimum Bayes risk (Kumar & Byrne 2004; Eikema & Aziz 2020): the sample with the highest
                      expected utility against all the samples as pseudo-references, utility chrF or BLEU from
                      the `mbrs` library (Deguchi et al. 2024).
    deepconf          DeepConf's confidence-filtered, confidence-weighted vote (`deepconf_vote`) over the answers
                      of `strategy=deepconf`'s traces (decoding/deepconf.py); answers as for self_consistency.

A run with a selector writes `selected.jsonl` (one record per prompt: the chosen sample's record, with
`sample_index` 0, `selected_sample_index` and the selector's evidence) next to generations.jsonl, and the
scorers run on both: metrics of all samples as usual, and the same metrics of the selected outputs as
`selected_<metric>`, so a leaderboard shows both.

Register your own pieces from a plugin module::

    from decodebench.selectors import register_extractor, register_reward

    @register_extractor("yes_no")
    def yes_no(text: str) -> str | None: ...
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Callable, Optional

from decodebench.registry import Registry

EXTRACTORS: Registry = Registry("answer extractor")
REWARDS: Registry = Registry("reward function")
SELECTORS = ("self_consistency", "best_of_n", "mbr", "deepconf")
UTILITIES = ("chrf", "bleu")
PREFIX = "selected_"


def register_extractor(name: str) -> Callable:
    """Decorator: `fn(text) -> answer string or None` as `strategy.extractor=<name>`."""
    return EXTRACTORS.register(name)


def register_reward(name: str) -> Callable:
    """Decorator: `fn(prompt, text) -> float` (higher is better) as `strategy.reward=<name>`."""
    return REWARDS.register(name)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@register_extractor("last_number")
def last_number(text: str) -> Optional[str]:
    """The last number in the text, thousands separators and a trailing ".0" dropped: "1,200.0" -> "1200"."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    n = found[-1].replace(",", "")
    return n[:-2] if n.endswith(".0") else n


@register_extractor("boxed")
def boxed(text: str) -> Optional[str]:
    r"""The content of the last `\boxed{...}` (one level of nested braces)."""
    found = re.findall(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}", text)
    return found[-1].strip() if found else None


def check_selector(spec) -> None:
    """ValueError (one line, naming the key) on a selector the run cannot use."""
    s = spec.search
    name = s.get("selector")
    if name not in SELECTORS:
        from decodebench.registry import did_you_mean

        raise ValueError("selector names an " + did_you_mean("selector", str(name), list(SELECTORS)))
    if spec.num_return_sequences < 2:
        raise ValueError(f"num_return_sequences must be > 1 for selector={name} (it chooses among a prompt's "
                         f"samples), got {spec.num_return_sequences}")
    if name == "deepconf" and spec.method != "deepconf":
        raise ValueError(f"selector=deepconf votes with the token confidences of method deepconf, not "
                         f"{spec.method!r}; set strategy=deepconf or another selector")
    if name in ("self_consistency", "deepconf"):
        if (s.get("extractor") is None) == (s.get("answer_pattern") is None):
            raise ValueError(f"answer_pattern or extractor must be set for selector={name}: a regex or "
                             "a registered extractor's name, exactly one of them")
        if s.get("extractor") is not None and s["extractor"] not in EXTRACTORS:
            raise ValueError("extractor names an " + EXTRACTORS.unknown_message(s["extractor"]))
        if s.get("answer_pattern") is not None:
            try:
                re.compile(s["answer_pattern"])
            except re.error as e:
                raise ValueError(f"answer_pattern is not a valid regex: {e}") from None
    if name == "best_of_n" and s.get("reward") is not None and s["reward"] not in REWARDS:
        raise ValueError("reward names an " + REWARDS.unknown_message(s["reward"]))
    if name == "mbr" and s.get("mbr_utility") not in UTILITIES:
        raise ValueError(f"mbr_utility must be one of {', '.join(UTILITIES)}, got {s.get('mbr_utility')!r}")


def answer_of(text: str, search: dict) -> Optional[str]:
    if search.get("answer_pattern") is not None:
        matches = list(re.finditer(search["answer_pattern"], text))
        if not matches:
            return None
        m = matches[-1]
        return (m.group(1) if m.re.groups else m.group(0)).strip()
    return EXTRACTORS.get(search["extractor"])(text)


def majority(answers: list[Optional[str]]) -> tuple[int, dict]:
    """Index of the first sample with the most frequent non-None answer (ties: the answer seen first)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0, {"answer": None, "votes": 0}
    best = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == best)
    return answers.index(winner), {"answer": winner, "votes": best}


def mean_logprobs(records: list[dict], model, tokenizer, batch_size: int = 16) -> list[float]:
    """Mean log-probability of each record's tokens given its prompt, under `model` (teacher-forced)."""
    from decodebench.scorers.lm import continuation_logprobs

    pairs = [(list(r.get("prompt_token_ids") or [tokenizer.bos_token_id]), list(r["token_ids"])) for r in records]
    lps = continuation_logprobs(model, pairs, batch_size=batch_size)
    return [float(lp.mean()) if len(lp) else -math.inf for lp in lps]


def mbr_expected_utility(texts: list[str], utility: str) -> list[float]:
    """Expected utility of each text against all the texts (itself included, as mbrs's MBR does)."""
    metric = _mbrs_metric(utility)
    return [float(x) for x in metric.expected_scores(texts, texts)]


def _mbrs_metric(utility: str):
    """mbrs's chrF or BLEU metric. mbrs's `mbrs.metrics` package imports every metric it has (COMET,
    BLEURT, BERTScore, MetricX) and their dependencies pin transformers 4; decodebench needs only the
    sacrebleu-based two, so they are imported on their own, under a bare `mbrs.metrics` package."""
    import importlib
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("mbrs")
    if spec is None:
        raise ValueError("selector=mbr needs the mbrs package: pip install --no-deps mbrs fastchrf simple-parsing")
    if "mbrs.metrics.base" not in sys.modules:
        pkg = types.ModuleType("mbrs.metrics")
        pkg.__path__ = [str(next(iter(spec.submodule_search_locations))) + "/metrics"]
        sys.modules.setdefault("mbrs.metrics", pkg)
        base = importlib.import_module("mbrs.metrics.base")
        for k in ("Metric", "MetricAggregatable", "MetricAggregatableCache", "MetricBase", "MetricCacheable",
                  "MetricReferenceless", "get_metric", "register"):
            if not hasattr(sys.modules["mbrs.metrics"], k):
                setattr(sys.modules["mbrs.metrics"], k, getattr(base, k))
    if utility == "chrf":
        cls = importlib.import_module("mbrs.metrics.chrf").MetricChrF
    else:
        cls = importlib.import_module("mbrs.metrics.bleu").MetricBLEU
    return cls(cls.Config(num_workers=1))


def choose(records: list[dict], search: dict, model=None, tokenizer=None) -> tuple[int, dict]:
    """(index into `records`, evidence) for one prompt's samples, ordered by sample_index."""
    name = search["selector"]
    texts = [r["text"] for r in records]
    if name == "self_consistency":
        answers = [answer_of(t, search) for t in texts]
        i, info = majority(answers)
        return i, {**info, "answers": answers}
    if name == "deepconf":
        return deepconf_choice(records, [answer_of(t, search) for t in texts], search)
    if name == "best_of_n":
        if search.get("reward") is not None:
            fn = REWARDS.get(search["reward"])
            scores = [float(fn(r.get("prompt"), r["text"])) for r in records]
        else:
            scores = mean_logprobs(records, model, tokenizer)
        i = max(range(len(scores)), key=lambda k: (scores[k], -k))  # ties: the earliest sample
        return i, {"scores": scores}
    scores = mbr_expected_utility(texts, search.get("mbr_utility", "chrf"))
    i = max(range(len(scores)), key=lambda k: (scores[k], -k))
    return i, {"expected_utility": scores}


def deepconf_choice(records: list[dict], answers: list[Optional[str]], search: dict) -> tuple[int, dict]:
    """DeepConf's vote: online, only the traces whose min_conf reaches the bar take part (the code's
    `all_voting_traces`); the selected sample is the first voting trace with the elected answer."""
    from decodebench.decoding.search.votes import vote

    voters = [i for i, r in enumerate(records)
              if r.get("deepconf_conf_bar") is None or r["deepconf_min_conf"] >= r["deepconf_conf_bar"]]
    answer = vote([answers[i] for i in voters], [records[i]["deepconf_confs"] for i in voters],
                  search["deepconf_vote"], int(search["window_size"]))
    i = next((i for i in voters if answers[i] == answer), 0)
    return i, {"answer": answer, "vote": search["deepconf_vote"], "voters": len(voters), "answers": answers}


def select_records(records: list[dict], search: dict, model=None, tokenizer=None) -> list[dict]:
    """One selected record per prompt, in the order prompts first appear in `records`."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["prompt_id"], []).append(r)
    out = []
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: r["sample_index"])
        i, info = choose(rows, search, model, tokenizer)
        rec = dict(rows[i])
        rec.update(selected_sample_index=rows[i]["sample_index"], sample_index=0,
                   selection={"selector": search["selector"], **info})
        out.append(rec)
    return out
