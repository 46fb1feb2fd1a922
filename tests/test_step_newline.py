"""The newline stopping criterion: its token table is made once per device, not copied per check."""

from __future__ import annotations

import torch

from decodebench.decoding.engine.stopping import STOPPING


def test_newline_criterion_matches_decoded_text_and_copies_its_table_once(tiny, monkeypatch):
    _, tok = tiny
    crit = STOPPING.get("newline")(tok)
    texts = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=False)
    nl = next(i for i, s in enumerate(texts) if "\n" in s)
    plain = next(i for i, s in enumerate(texts) if "\n" not in s)
    tokens = torch.tensor([[plain, nl, plain], [plain, plain, nl], [plain, plain, plain]])
    lengths = torch.tensor([3, 2, 3])  # row 1's newline lies past its length: not generated yet
    copies = []
    orig_to = torch.Tensor.to

    def counting_to(self, *a, **k):
        copies.append(1)
        return orig_to(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    for _ in range(3):
        assert crit(tokens, lengths).tolist() == [True, False, False]
    assert copies == []  # the CPU table is the one made at construction
