"""Streaming for every strategy: the safe rule never revises and its stream equals the output; the lookahead
rule counts its revisions; text streamers, the iterator, and reconciliation with stop strings."""

from __future__ import annotations

import threading

import pytest

from decodebench.decoding.engine import Request, generate
from decodebench.decoding.search.spec import build_strategy
from decodebench.decoding.engine.streaming import StreamIterator, Streamer, TextStreamer, text_streamer
from tests.test_search_beam import TEXTS, one_thread, peaky_tiny  # noqa: F401  (one_thread: autouse fixture)


class Recording(Streamer):
    """Keeps every call: the stream after revisions, and how many revisions each row saw."""

    def __init__(self, rows):
        super().__init__()
        self.rows = rows
        self.stream: dict[int, list[int]] = {}
        self.revisions: dict[int, int] = {}
        self.ended: list[int] = []
        self.early: dict[int, int] = {}  # tokens received before the row's first end-of-search flush

    def put(self, row, token_ids):
        self.stream.setdefault(row, []).extend(token_ids)

    def revise(self, row, keep):
        self.revisions[row] = self.revisions.get(row, 0) + 1
        del self.stream.setdefault(row, [])[keep:]

    def end(self, row):
        self.ended.append(row)

    def close(self, outputs):
        # what the search streamed by itself, before close() reconciles the stream with the outputs
        if not hasattr(self, "before_close"):
            self.before_close = {i: list(v) for i, v in self.stream.items()}
            self.revisions_before_close = dict(self.revisions)
        super().close(outputs)


def run(model, tok, texts, d, batch_size=64, **kw):
    spec = build_strategy({"name": "s", **d})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], sample_index=s, params=spec.params, seed=1)
            for i, x in enumerate(texts) for s in range(spec.num_return_sequences)]
    made = []

    def factory(rows):
        made.append((rows, Recording(rows)))
        return made[-1][1]

    outs, stats = generate(model, tok, reqs, spec, batch_size=batch_size, streamer_factory=factory, **kw)
    streamed, before = {}, {}
    for rows, rec in made:
        for i, r in enumerate(rows):
            streamed[(r.prompt_id, r.sample_index)] = (rec.stream.get(i, []), rec.revisions.get(i, 0), i in rec.ended)
            before[(r.prompt_id, r.sample_index)] = (rec.before_close.get(i, []), rec.revisions_before_close.get(i, 0))
    run.before_close = before
    return reqs, outs, streamed


@pytest.mark.parametrize("method", ["beam", "diverse_beam", "stochastic_beam"])
def test_safe_stream_equals_output_and_is_never_revised(method):
    from decodebench.models import tiny_model

    model, tok = tiny_model()  # a flat random model: beams agree late, if at all
    for m, tk in ((model, tok), peaky_tiny()):
        d = dict(method=method, num_beams=4, num_return_sequences=2, max_new_tokens=12, stream="safe")
        if method == "diverse_beam":
            d.update(num_beam_groups=2, diversity_penalty=0.5)
        if method == "stochastic_beam":
            d.update(do_sample=True)
        reqs, outs, streamed = run(m, tk, TEXTS, d)
        for r, o in zip(reqs, outs):
            tokens, revisions, ended = streamed[(r.prompt_id, r.sample_index)]
            assert tokens == o.token_ids and revisions == 0 and ended
            if r.sample_index == 0:
                assert o.extra["stream_rule"] == "safe"
                assert 0 <= o.extra["stream_emitted"] <= len(o.token_ids)
                assert (o.extra["stream_first_step"] is None) == (o.extra["stream_emitted"] == 0)
    beam_outs = run(*peaky_tiny(), TEXTS, dict(method="beam", num_beams=4, max_new_tokens=12, stream="safe"))[1]
    assert any(o.extra["stream_emitted"] > 0 for o in beam_outs)  # something streams before the end


def test_safe_prefix_is_emitted_as_soon_as_all_beams_agree():
    """One beam agrees with itself: every token streams at its own step (an EOS waits for the end, since
    the finished EOS hypothesis and the live beam differ there)."""
    model, tok = peaky_tiny()
    reqs, outs, streamed = run(model, tok, TEXTS, dict(method="beam", num_beams=1, max_new_tokens=12, stream="safe"))
    for o in outs:
        assert o.extra["stream_emitted"] == len(o.token_ids) - (o.finish_reason == "eos")
        assert o.extra["stream_first_step"] == (0 if o.extra["stream_emitted"] else None)
    assert any(o.extra["stream_emitted"] for o in outs)


def test_lookahead_counts_revisions_and_the_final_stream_is_the_output():
    from decodebench.models import tiny_model

    model, tok = tiny_model()  # near-uniform: leaders change often, so lookahead 1 must revise
    d = dict(method="beam", num_beams=4, max_new_tokens=12, stream="lookahead", lookahead=1)
    reqs, outs, streamed = run(model, tok, TEXTS, d)
    total = 0
    for r, o in zip(reqs, outs):
        tokens, revisions, ended = streamed[(r.prompt_id, r.sample_index)]
        assert tokens == o.token_ids and ended
        assert revisions == o.extra["stream_revisions"]
        assert o.extra["stream_emitted_total"] >= o.extra["stream_emitted"]
        total += revisions
    assert total > 0
    # a lookahead longer than the search emits nothing early and never revises
    d["lookahead"] = 13
    _, outs, _ = run(model, tok, TEXTS, d)
    assert all(o.extra["stream_emitted"] == 0 and o.extra["stream_revisions"] == 0 for o in outs)


def test_stream_stats_without_a_streamer():
    model, tok = peaky_tiny()
    spec = build_strategy({"name": "b", "method": "beam", "num_beams": 3, "max_new_tokens": 10, "stream": "safe"})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(TEXTS)]
    outs, _ = generate(model, tok, reqs, spec, batch_size=8)
    assert all("stream_emitted" in o.extra and "stream_first_s" not in o.extra for o in outs)
    plain = build_strategy({"name": "b", "method": "beam", "num_beams": 3, "max_new_tokens": 10})
    outs2, _ = generate(model, tok, reqs, plain, batch_size=8)
    assert [o.token_ids for o in outs2] == [o.token_ids for o in outs]  # tracking changes nothing
    assert all("stream_emitted" not in o.extra for o in outs2)


@pytest.mark.parametrize("d", [
    dict(method="sampling", do_sample=True, max_new_tokens=12),
    dict(method="sampling", do_sample=True, max_new_tokens=12, stop="from a free run"),  # the stream is cut back
    dict(method="contrastive", top_k=3, penalty_alpha=0.5, max_new_tokens=12),
])
def test_one_token_strategies_stream_their_outputs(d):
    model, tok = peaky_tiny()
    if d.get("stop"):  # a stop string that the free run generates mid-way, so streams are cut back
        _, free, _ = run(model, tok, TEXTS, {**d, "stop": []})
        long = max(free, key=lambda o: len(o.token_ids))
        d = {**d, "stop": [tok.decode(long.token_ids[5:7])]}
    reqs, outs, streamed = run(model, tok, TEXTS, d)
    cut = 0
    for r, o in zip(reqs, outs):
        tokens, _, ended = streamed[(r.prompt_id, r.sample_index)]
        assert tokens == o.token_ids and ended
        # the stream as the loop sent it, before close() reconciled it: never revised, and it is the output
        # (with a stop string, the output followed by the tokens generated after it, cut back at close)
        early, revised = run.before_close[(r.prompt_id, r.sample_index)]
        assert revised == 0 and early[: len(o.token_ids)] == o.token_ids
        if not d.get("stop"):
            assert early == o.token_ids
        cut += len(early) > len(o.token_ids)
    if d.get("stop"):
        assert cut, "the stop string should cut some stream back"


def test_text_streamer_releases_words_and_ends_with_the_full_text(embedded):
    _, tok = embedded
    text = "Streaming beam search, at last: the safe rule never revises. 東京 too\nnext line"
    got = []
    st = TextStreamer(tok, lambda row, s: got.append(s))
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        st.emit(0, [t])
        assert "".join(got) == text[: len("".join(got))]  # only final text, a prefix of the whole
    st.end(0)
    assert "".join(got) == text


def test_iterator_yields_text_while_generating():
    model, tok = peaky_tiny()
    spec = build_strategy({"name": "s", "method": "beam", "num_beams": 2, "max_new_tokens": 8})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(TEXTS)]
    it = StreamIterator(tok, timeout=60)
    result = {}

    def work():
        result["outs"] = generate(model, tok, reqs, spec, batch_size=4, streamer_factory=it.factory)[0]
        it.finish()

    th = threading.Thread(target=work)
    th.start()
    pieces: dict[str, str] = {}
    for pid, _, text in it:
        pieces[pid] = pieces.get(pid, "") + text
    th.join()
    for r, o in zip(reqs, result["outs"]):
        assert pieces.get(r.prompt_id, "") == tok.decode(o.token_ids, skip_special_tokens=True)


def test_text_streamer_factory_passes_requests():
    model, tok = peaky_tiny()
    spec = build_strategy({"name": "s", "method": "contrastive", "top_k": 2, "penalty_alpha": 0.5, "max_new_tokens": 6})
    reqs = [Request(prompt_id=str(i), prompt_ids=tok(x)["input_ids"], params=spec.params) for i, x in enumerate(TEXTS)]
    seen: dict[str, str] = {}

    def on_text(r, s):
        seen[r.prompt_id] = seen.get(r.prompt_id, "") + s

    outs, _ = generate(model, tok, reqs, spec, batch_size=8, streamer_factory=text_streamer(tok, on_text))
    for r, o in zip(reqs, outs):
        assert seen.get(r.prompt_id, "") == tok.decode(o.token_ids, skip_special_tokens=True)
