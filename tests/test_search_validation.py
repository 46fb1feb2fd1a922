"""Bad search settings are one-line errors naming the field, raised before any model loads."""

from __future__ import annotations

import pytest

from decodebench.cli.preflight import compose_checked
from tests.test_search_beam import one_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("args,needle", [
    (["strategy=beam", "strategy.num_beams=0"], "num_beams must be >= 1, got 0"),
    (["strategy=beam", "strategy.num_return_sequences=5"], "num_return_sequences must be <= num_beams (4)"),
    (["strategy=beam", "strategy.early_stopping=sometimes"], "early_stopping must be true, false or never"),
    (["strategy=beam", "strategy.do_sample=true"], "do_sample must be false for beam search"),
    (["strategy=beam", "strategy.stream=fast"], "stream must be safe or lookahead"),
    (["strategy=beam", "strategy.stream=lookahead", "strategy.lookahead=0"], "lookahead must be an integer >= 1"),
    (["strategy=beam", "strategy.num_beam_groups=2"], "num_beam_groups must be 1 for beam search"),
    (["strategy=diverse_beam", "strategy.num_beams=5"], "num_beams (5) must be divisible by num_beam_groups (2)"),
    (["strategy=diverse_beam", "strategy.diversity_penalty=-1"], "diversity_penalty must be a number >= 0"),
    (["strategy=stochastic_beam", "strategy.num_return_sequences=5"], "num_return_sequences must be <= num_beams"),
    (["strategy=contrastive", "strategy.penalty_alpha=1.5"], "penalty_alpha must be in [0, 1]"),
    (["strategy=contrastive", "strategy.penalty_alpha=null"], "penalty_alpha must be in [0, 1]"),
    (["strategy=contrastive", "strategy.top_k=0"], "top_k must be >= 1 for contrastive search"),
    (["strategy=contrastive", "strategy.num_return_sequences=2"], "num_return_sequences must be 1 for contrastive"),
    (["strategy=beam", "strategy.stop=['']"], "stop must not contain empty strings"),
    (["strategy=beam", "strategy.stopping=[newlin]"], "did you mean 'newline'"),
    (["strategy=beem"], "did you mean 'beam'"),
])
def test_bad_search_settings_are_one_line(args, needle):
    cfg, err = compose_checked(args)
    assert cfg is None and err is not None
    assert needle in err, err
    assert "\n" not in err
    key = args[-1].split("=", 1)[0]  # the setting this case gets wrong: the error starts with its name
    assert err.startswith("unknown strategy " if key == "strategy" else f"{key} "), err


@pytest.mark.parametrize("name", ["beam", "contrastive", "diverse_beam", "stochastic_beam"])
def test_search_configs_validate(name):
    cfg, err = compose_checked([f"strategy={name}", "strategy.stopping=[newline]"])
    assert err is None, err
