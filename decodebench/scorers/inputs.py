"""What a scorer function reads: the texts of one run (or the references), their prompts, the model.

One `Inputs` per run and target; work that several scorers share (whitespace tokens, the model's
log-probabilities of the continuations) is computed once and kept in `cache`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Inputs:
    texts: list[str]
    prompts: list[str | None]
    prompt_token_ids: list[list[int] | None]
    token_ids: list[list[int] | None]
    references: list[str | None]
    model: Any = None
    tokenizer: Any = None
    device: Any = None
    seed: int = 0
    progress: bool = True
    label: str = ""  # for progress bars: "run 0", "references"
    # per text, the generating model's raw log-probs of its tokens, recorded during generation (the
    # runner's `gen_logprobs`); the LM scorers use them instead of a forward when the pair is the same
    gen_logprobs: list[list[float] | None] | None = None
    cache: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def words(self) -> list[list[str]]:
        """Whitespace tokens, `text.strip().split()`, the unit of the published text metrics."""
        if "words" not in self.cache:
            self.cache["words"] = [t.split() for t in self.texts]
        return self.cache["words"]

    def units(self, unit: str) -> list[list]:
        """`word`: whitespace tokens; `token`: the generated token ids recorded by the engine."""
        if unit == "word":
            return self.words()
        missing = sum(ids is None for ids in self.token_ids)
        if missing:
            raise ValueError(f"unit 'token' needs the records' token_ids; {missing} of {len(self)} records have none")
        return self.token_ids
