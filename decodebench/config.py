"""Dataclass schemas in Hydra's ConfigStore; every range check lives here (or in the spec it builds).

Hydra rejects unknown keys and wrong types while composing; `validate()` turns a composed config into
checked specs and raises ConfigError with one line that names the key and what to change, before any
model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from decodebench.data import DatasetConfig
from decodebench.models import ModelConfig

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A bad setting; str() is one line naming the key and what to change."""


@dataclass
class AssistantConfig:
    """The draft of speculative decoding: exactly one of these (decodebench/decoding/speculative.py)."""

    model: Optional[str] = None  # a model sharing the target's tokenizer
    early_exit: Optional[int] = None  # the target's first N layers and its LM head
    prompt_lookup: Optional[int] = None  # n-gram lookup in the prompt and output (n = N down to 1)


@dataclass
class StrategyConfig:
    """Hydra schema of the `strategy` group; parameter names are Hugging Face GenerationConfig's."""

    name: str = MISSING  # the strategy's config name (greedy, topp, beam, ...)
    method: str = "sampling"  # search method in decodebench.decoding.STRATEGIES
    max_new_tokens: int = 64
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    min_p: Optional[float] = None
    typical_p: Optional[float] = None
    epsilon_cutoff: Optional[float] = None
    eta_cutoff: Optional[float] = None
    repetition_penalty: Optional[float] = None
    penalize_prompt: bool = True
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    min_new_tokens: Optional[int] = None
    logit_bias: Optional[Dict[int, float]] = None
    bad_words_ids: Optional[List[int]] = None
    min_tokens_to_keep: int = 1
    order: Any = "hf"  # "hf", "vllm", "llamacpp" or a list of transform names
    extra: Dict[str, float] = field(default_factory=dict)  # parameters of user-registered transforms
    stop: List[str] = field(default_factory=list)  # stop strings, matched on decoded text
    stopping: List[str] = field(default_factory=list)  # user stopping criteria by name (decoding/stopping.py)
    # search strategies (beam, contrastive, ...)
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: Any = False  # true, false or "never"
    num_beam_groups: int = 1
    diversity_penalty: float = 0.0
    penalty_alpha: Optional[float] = None
    max_time: Optional[float] = None  # seconds per batch
    stream: Optional[str] = None  # beam streaming rule: "safe" or "lookahead"
    lookahead: int = 2
    # choosing among a prompt's num_return_sequences samples (decodebench/selectors.py)
    selector: Optional[str] = None  # self_consistency, best_of_n, mbr
    extractor: Optional[str] = None  # self_consistency: a registered answer extractor
    answer_pattern: Optional[str] = None  # self_consistency: a regex (group 1, else the match) instead
    reward: Optional[str] = None  # best_of_n: a registered reward function (null: mean log-prob)
    mbr_utility: str = "chrf"  # mbr: chrf or bleu
    # methods with a second model or the target's early layers
    amateur: Optional[str] = None  # contrastive decoding: the amateur model (null: amateur_layers)
    amateur_layers: Optional[int] = None  # contrastive decoding: the target's first N layers as amateur
    cd_alpha: float = 0.1  # contrastive decoding: plausibility, p_expert >= cd_alpha * max p_expert
    cd_beta: Optional[float] = None  # null: log p_e - log p_a (Li et al.); else (1+b) log p_e - b log p_a
    amateur_temperature: float = 1.0
    dola_layers: Any = None  # DoLa: low, high or a list of layer indices
    assistant: AssistantConfig = field(default_factory=AssistantConfig)  # speculative decoding's draft
    num_assistant_tokens: int = 5
    num_assistant_tokens_schedule: str = "constant"  # or heuristic: +2 after a round with every draft accepted, else -1


@dataclass
class LoggerConfig:
    name: str = "wandb"  # "wandb" or "none"
    project: str = "decodebench"
    entity: Optional[str] = None
    mode: str = "offline"  # offline (sync later with `wandb sync`), online, disabled
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    num_samples: int = 32  # rows in the logged table of sample generations


@dataclass
class SweepConfig:
    """Schema of the `sweep` group: the grid the `sweep` verb runs (conf/sweep/<strategy>.yaml, README, "Sweeps").

    Inert for a plain run; checked by decodebench.sweep_plan before any model loads."""

    grid: Dict[str, Any] = field(default_factory=dict)  # strategy parameter -> list of values; points = product
    seeds: Optional[List[int]] = None  # one point per seed as well; null: just the top-level seed
    dir: Optional[str] = None  # the sweep directory; null: outputs/sweeps/<date>/<time>-<strategy>
    fuse: Optional[int] = None  # at most this many points generated together; null: all that can be
    leaderboard: bool = True  # write leaderboard.{md,csv,html} in the sweep directory at the end


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scorers: Dict[str, Any] = field(default_factory=dict)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0
    batch_size: Any = "auto"  # rows in the running batch, or "auto" (what fits; README, "The engine")
    sync_every: int = 4  # steps between the engine's host checks (finished rows, stop strings, time)
    continuous: bool = True  # continuous batching for one-token-per-step strategies
    compile: bool = False  # run the decode step under torch.compile (CUDA graphs on CUDA)
    device: str = "auto"
    dtype: str = "auto"
    record: List[str] = field(default_factory=list)  # per-step telemetry fields, or ["all"]
    progress: bool = True
    plugins: List[str] = field(default_factory=list)  # modules that register transforms, criteria, scorers


@dataclass
class ScoreConfig:
    """Schema of the `score` verb: score an existing generations file."""

    generations: str = MISSING  # a run's generations.jsonl, a run directory, or any JSON/JSONL file
    text_field: str = "text"
    prompt_field: str = "prompt"
    reference_field: str = "reference"
    id_field: str = "prompt_id"
    sample_field: str = "sample_index"
    model: ModelConfig = field(default_factory=ModelConfig)  # scoring model for model metrics
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scorers: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    progress: bool = True


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="score_schema", node=ScoreConfig)


def _check_top(cfg: DictConfig) -> None:
    dev = str(cfg.device)
    if dev not in DEVICES and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    bs = cfg.batch_size
    if bs != "auto" and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
        raise ConfigError(f"batch_size must be an integer >= 1 or auto, got {bs!r}")
    se = cfg.get("sync_every", 4)
    if isinstance(se, bool) or not isinstance(se, int) or se < 1:
        raise ConfigError(f"sync_every must be a positive integer (steps between host checks), got {se!r}")
    if cfg.logger.name not in ("wandb", "none"):
        raise ConfigError(f"logger must be wandb or none, got {cfg.logger.name!r}")
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got {cfg.logger.mode!r}")


def strategy_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.strategy, resolve=True)  # type: ignore[return-value]


def validate(cfg: DictConfig):
    """Check everything that can be checked without a model; return the strategy spec.

    Raises ConfigError (one line) on the first problem.
    """
    from decodebench.decoding.strategies import build_strategy

    _check_top(cfg)
    try:
        return build_strategy(strategy_dict(cfg))
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(prefix_key("strategy", str(e))) from None


def prefix_key(group: str, msg: str) -> str:
    """'top_p must be ...' -> 'strategy.top_p must be ...', so every message names its full key."""
    head = msg.split(" ", 1)[0]
    if head.isidentifier() and not msg.startswith(f"{group}."):
        return f"{group}.{msg}"
    return msg
