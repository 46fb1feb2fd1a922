"""Dataclass schemas in Hydra's ConfigStore; every range check lives here (or in the spec it builds).

Hydra rejects unknown keys and wrong types while composing; decodebench/specs.py converts the composed
config into a typed RunSpec once, and `validate()` turns its strategy into a checked StrategySpec; both raise
ConfigError with one line that names the key and what to change, before any model loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from decodebench.data import DatasetConfig
from decodebench.decoding.params import PARAMS, Param
from decodebench.models import ModelConfig
from decodebench.tasks.config import TaskConfig

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




def _annotation(p: Param):
    if p.config_type == Optional[Dict[int, float]]:
        # OmegaConf cannot merge a mapping into a typed dict that is None (`strategy.logit_bias={5:2.0}` failed
        # inside Hydra with an AttributeError): the node is untyped here; params/table.py's check validates the value
        return Optional[Any]
    if p.config_type is not None:
        return p.config_type
    base = {"float": float, "int": int, "bool": bool, "str": str}[p.kind]
    return base if p.default is not None else Optional[base]


def _default(p: Param):
    if isinstance(p.default, tuple):  # dataclass defaults must not be shared mutables: Hydra gets a list
        return field(default_factory=(dict if p.name == "extra" else lambda d=p.default: list(d)))
    return field(default=p.default)


# Hydra schema of the `strategy` group: the loop's keys, then one field per row of the parameter table
# (decoding/params/table.py), then the search methods' options. Names are Hugging Face GenerationConfig's.
StrategyConfig = make_dataclass("StrategyConfig", [
    ("name", str, field(default=MISSING)),  # the strategy's config name (greedy, topp, beam, ...)
    ("method", str, field(default="sampling")),  # search method in decodebench.decoding.search.methods.METHODS
    ("max_new_tokens", int, field(default=64)),
    ("num_return_sequences", int, field(default=1)),
    *[(p.name, _annotation(p), _default(p)) for p in PARAMS],
    ("stop", List[str], field(default_factory=list)),  # stop strings, matched on decoded text
    ("stopping", List[str], field(default_factory=list)),  # user stopping criteria by name (decoding/engine/stopping.py)
    ("num_beams", int, field(default=1)),
    ("length_penalty", float, field(default=1.0)),
    ("early_stopping", Any, field(default=False)),  # true, false or "never"
    ("num_beam_groups", int, field(default=1)),
    ("diversity_penalty", float, field(default=0.0)),
    ("penalty_alpha", Optional[float], field(default=None)),
    ("max_time", Optional[float], field(default=None)),  # seconds per batch
    ("stream", Optional[str], field(default=None)),  # beam streaming rule: "safe" or "lookahead"
    ("lookahead", int, field(default=2)),
    # choosing among a prompt's num_return_sequences samples (decodebench/selectors.py)
    ("selector", Optional[str], field(default=None)),  # self_consistency, best_of_n, mbr
    ("extractor", Optional[str], field(default=None)),  # self_consistency: a registered answer extractor
    ("answer_pattern", Optional[str], field(default=None)),  # self_consistency: a regex instead
    ("reward", Optional[str], field(default=None)),  # best_of_n: a registered reward (null: mean log-prob)
    ("mbr_utility", str, field(default="chrf")),  # mbr: chrf or bleu
    # methods with a second model or the target's early layers
    ("amateur", Optional[str], field(default=None)),  # contrastive decoding: the amateur model
    ("amateur_layers", Optional[int], field(default=None)),  # contrastive decoding: the target's first N layers
    ("cd_alpha", float, field(default=0.1)),  # plausibility: p_expert >= cd_alpha * max p_expert
    ("cd_beta", Optional[float], field(default=None)),  # null: log p_e - log p_a; else (1+b) log p_e - b log p_a
    ("amateur_temperature", float, field(default=1.0)),
    ("dola_layers", Any, field(default=None)),  # DoLa: low, high or a list of layer indices
    ("assistant", AssistantConfig, field(default_factory=AssistantConfig)),  # speculative decoding's draft
    ("num_assistant_tokens", int, field(default=5)),
    ("num_assistant_tokens_schedule", str, field(default="constant")),  # or heuristic
    # CoT-decoding (decoding/cot_decoding.py)
    ("cot_k", int, field(default=10)),  # branches on the first token (optillm's k)
    ("aggregate_paths", bool, field(default=False)),  # sum branch confidences per answer text
    # DeepConf (decoding/deepconf.py; selector=deepconf): facebookresearch/deepconf's names
    ("deepconf_mode", str, field(default="offline")),  # or online (warmup traces set a bar; weak traces stop)
    ("warmup_traces", int, field(default=16)),
    ("confidence_percentile", float, field(default=90.0)),  # online bar: percentile 100 - this of warmup min_conf
    ("window_size", int, field(default=2048)),  # tokens per sliding confidence window
    ("conf_topk", int, field(default=20)),  # top log-probs per token confidence
    ("deepconf_vote", str, field(default="top10_bottom_window_filtered")),
    # power sampling (decoding/power_sampling.py): reasoning-with-sampling's names (its temperature = 1/alpha)
    ("power_alpha", float, field(default=4.0)),  # the target is p^power_alpha
    ("mcmc_steps", int, field(default=10)),  # MH proposals per block
    ("block_num", int, field(default=16)),  # blocks of max_new_tokens / block_num tokens
], namespace={"__module__": __name__})


@dataclass
class LoggerConfig:
    name: str = "wandb"  # "wandb" or "none"
    project: str = "decodebench"
    entity: Optional[str] = None
    mode: str = "offline"  # offline (sync later with `wandb sync`), online, disabled
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    num_samples: int = 32  # rows in the logged table of sample generations
    init_timeout: float = 30.0  # seconds online mode waits for the server before logging offline instead


@dataclass
class SweepConfig:
    """Schema of the `sweep` group: the grid the `sweep` verb runs (conf/sweep/<strategy>.yaml, README, "Sweeps").

    Inert for a plain run; checked by decodebench.sweep.plan before any model loads."""

    grid: Dict[str, Any] = field(default_factory=dict)  # strategy parameter -> list of values; points = product
    seeds: Optional[List[int]] = None  # one point per seed as well; null: the top-level seed (seed=N)
    dir: Optional[str] = None  # the sweep directory; null: outputs/sweeps/<date>/<time>-<strategy>
    fuse: Optional[int] = None  # at most this many points generated together; null: all that can be
    leaderboard: bool = True  # write leaderboard.{md,csv,html} in the sweep directory at the end


@dataclass
class StudyConfig:
    """Schema of the `study` group: methods compared on the same prompts (conf/study/<name>.yaml, docs/studies.md).

    Inert for a plain run; checked by decodebench.sweep.study_plan before any model loads."""

    name: str = "study"
    methods: Dict[str, Any] = field(default_factory=dict)  # label -> {strategy, settings, grid}
    select: Dict[str, Any] = field(default_factory=lambda: {"metric": "???", "direction": "max"})
    dev_fraction: float = 0.5  # share of the prompts (by id) the settings are chosen on; the rest report
    split_seed: int = 0  # salt of the dev/test split by prompt id
    search: str = "grid"  # grid: every point of each method's grid; optuna: TPE, `trials` per method
    trials: int = 8  # with search=optuna: Optuna trials per tuned method (the same budget for each)
    equal_budget: bool = True  # every tuned method (one with a grid) has the same number of points
    noise: str = "shared"  # shared: common random numbers across methods; independent: seeds salted per method
    seeds: Optional[List[int]] = None  # one point per seed; null: the top-level seed
    bootstrap: int = 1000  # resamples of the test prompts for intervals and the paired test
    dir: Optional[str] = None  # the study directory; null: outputs/studies/<date>/<time>-<name>
    fuse: Optional[int] = None  # at most this many points generated together; null: all that can be
    leaderboard: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    scorers: Dict[str, Any] = field(default_factory=dict)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    study: Optional[StudyConfig] = None  # methods compared fairly on the same prompts (conf/study/)
    task: Optional[TaskConfig] = None  # an lm-eval task scored for every run (conf/task/, decodebench/tasks/)
    seed: int = 0
    batch_size: Any = "auto"  # rows in the running batch, or "auto" (what fits; README, "The engine")
    sync_every: int = 4  # steps between the engine's host checks (finished rows, stop strings, time)
    continuous: bool = True  # continuous batching for one-token-per-step strategies
    compile: bool = False  # run the decode step under torch.compile (CUDA graphs on CUDA)
    share_histories: Any = "auto"  # rows with one history share one forward: auto (on a CPU), true, false
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


def conf_dir() -> Path:
    """The Hydra config tree: the copy inside an installed wheel (`decodebench/conf`, packaged from the
    checkout's top-level conf/ by setup.py), else the checkout's conf/. Every entry point asks here."""
    from importlib.resources import files

    installed = Path(str(files("decodebench"))) / "conf"
    if (installed / "config.yaml").is_file():
        return installed
    return Path(__file__).resolve().parent.parent / "conf"


def shipped_data(name: str) -> str:
    """`${decodebench_data:books.jsonl}` in a config: the path of a data file shipped in decodebench/data."""
    return str(Path(__file__).resolve().parent / "data" / name)


def register_configs() -> None:
    if not OmegaConf.has_resolver("decodebench_data"):
        OmegaConf.register_new_resolver("decodebench_data", shipped_data)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="score_schema", node=ScoreConfig)
    from decodebench.api_models.settings import register as register_api  # model=api's schema

    register_api(cs)


SEED_LIMIT = 2**63  # seeds are hashed as unsigned 64-bit counters, and numpy takes them too


def check_seed(key: str, seed: Any) -> int:
    """A seed is an integer in [0, 2**63); anything else is a one-line ConfigError naming `key`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{key} must be an integer in [0, 2**63), got {seed!r}; e.g. {key.split('.')[0]}=0"
                          if key == "seed" else f"{key} must hold integers in [0, 2**63), got {seed!r}")
    return seed


def check_logger(lcfg: Any) -> None:
    if lcfg.name not in ("wandb", "none"):
        raise ConfigError(f"logger must be wandb or none, got {lcfg.name!r}")
    if lcfg.mode not in ("offline", "online", "disabled"):
        raise ConfigError(f"logger.mode must be offline, online or disabled, got {lcfg.mode!r}")
    if not lcfg.init_timeout > 0:
        raise ConfigError(f"logger.init_timeout must be > 0 seconds, got {lcfg.init_timeout}")


def check_device(cfg: Any) -> None:
    dev = str(cfg.device)
    if dev not in DEVICES and not (dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")


def strategy_dict(run) -> dict:
    """The strategy settings of a RunSpec (decodebench/specs.py) as a fresh dict."""
    import copy

    return copy.deepcopy(dict(run.strategy))


def _check_extra(strategy: dict) -> None:
    """strategy.extra.<p> must be a parameter of a registered (plugin) transform: the engine would find out
    only after the model loaded."""
    from decodebench.decoding.transforms.registry import user_params
    from decodebench.registry import did_you_mean

    known = sorted(user_params())
    for k in (strategy.get("extra") or {}):
        if k not in known:
            raise ConfigError(f"strategy.extra.{k}: {did_you_mean('transform parameter', str(k), known)}; register "
                              "a transform with that parameter in a plugin (plugins=[my_module])")


def validate(run):
    """The strategy spec of a RunSpec (decodebench/specs.py, whose conversion checked the top-level
    settings): every check that needs no model. Raises ConfigError (one line) on the first problem.
    """
    from decodebench.decoding.search.spec import build_strategy

    strategy = strategy_dict(run)
    _check_extra(strategy)
    try:
        return build_strategy(strategy)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(prefix_key("strategy", str(e))) from None


def check_min_new_tokens(spec) -> None:
    """A run's min_new_tokens above its max_new_tokens is a mistake (a sweep may set it so, for full-length
    rows over a grid of max_new_tokens)."""
    low = spec.params.min_new_tokens
    if low and low > spec.max_new_tokens:
        raise ConfigError(f"strategy.min_new_tokens: {low} is more than strategy.max_new_tokens={spec.max_new_tokens}, "
                          f"so EOS could never be generated; set it at most {spec.max_new_tokens}")


# Messages from libraries that do not know the config: the one key that leads to each.
SENTENCE_KEYS = {"unknown logits transform": "strategy.order", "unknown scorer ": "scorers.names"}
# A message that starts with a key: "top_p must be ...", "order: ...", "stop strings must ...".
_KEY_HEAD = re.compile(r"^[A-Za-z_][\w.]*(?=[:=(]|\s\(|\s(?:must|is|are|has|needs|names|sets|cannot|only|takes|"
                       r"strings|should|expects|requires|does|do|gives)\b)")


def prefix_key(group: str, msg: str) -> str:
    """'top_p must be ...' -> 'strategy.top_p must be ...', so every message names its full key; a message
    that starts with a sentence ('unknown scorer ...') gets 'scorers: ...', never 'scorers.unknown ...'."""
    if msg.startswith((f"{group}.", f"{group}:")):
        return msg
    for sentence, key in SENTENCE_KEYS.items():
        if msg.startswith(sentence) and key.startswith(f"{group}."):
            return f"{key}: {msg}"
    if _KEY_HEAD.match(msg):
        return f"{group}.{msg}"
    return f"{group}: {msg}"
