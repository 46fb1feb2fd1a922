"""decodebench as an lm-evaluation-harness model: `lm_eval --model decodebench` / `simple_evaluate(model=...)`.

generate_until runs decodebench's engine with any strategy; loglikelihood(_rolling) runs the model's forward
in length-sorted batches. Tokenization, context truncation, stop-string handling and the decoding of
continuations follow lm-eval's own `hf` model, so greedy results match it sample for sample.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm.auto import tqdm

from decodebench.tasks.strategy import load_strategy, request_strategy

log = logging.getLogger("decodebench")

DEFAULT_MAX_LENGTH = 2048  # lm-eval's `hf` default when neither config nor tokenizer names one


class DecodebenchLM(TemplateLM):
    """An lm-eval model backed by decodebench's engine.

    model_args (CLI `--model_args k=v,...` or keyword arguments):
      model / pretrained: "embedded" (default), "tiny-random", a Hub id, a local dir or a .gguf file; or a loaded
          transformers model object (then pass `tokenizer` too).
      strategy: a strategy config name (conf/strategy/<name>.yaml: topp, minp, beam, ...) or a whole strategy
          dict; any strategy parameter (top_p=0.9, temperature=0.7, ...) as its own argument overrides it.
          With a strategy, its method and sampling settings win over a task's gen_kwargs; the task still sets
          the stop strings and max_gen_toks. Without one, gen_kwargs alone decide, as for lm-eval's `hf`.
      seed: noise is a function of (seed, task/doc/request, repeat index, step), so every `repeats` sample is
          the same at any batch size and in any order.
      batch_size, device, dtype, max_length: as their decodebench namesakes.
    """

    def __init__(self, model: Any = "embedded", pretrained: Any = None, tokenizer: Any = None,
                 strategy: Union[str, dict, None] = None, seed: int = 0, batch_size: Union[int, str] = 8,
                 max_batch_size: Optional[int] = None, device: Optional[str] = "auto", dtype: str = "auto",
                 max_length: Optional[int] = None, max_gen_toks: int = 256, progress: bool = False,
                 **strategy_overrides: Any):
        super().__init__()
        from decodebench import models

        model = pretrained if pretrained is not None else model
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            device = "auto"  # lm-eval's CLI asks for cuda:0 unless told otherwise; its `hf` model falls back too
        dev = models.pick_device(str(device or "auto"))
        if isinstance(model, str):
            model, tokenizer = models.load_model(models.ModelConfig(name_or_path=model), device=dev,
                                                 dtype=models.pick_dtype(str(dtype), dev))
        elif tokenizer is None:
            raise ValueError("a model object needs its tokenizer: pass tokenizer=...")
        self.model, self.tokenizer = model, tokenizer
        self.strategy = load_strategy(strategy, strategy_overrides)  # None: gen_kwargs decide
        self.seed = int(seed)
        # "auto" / "auto:N" (lm-eval's batch-size search) have no meaning here: results never depend on it.
        # "auto": the engine picks the running batch that fits (engine.auto_batch_size) per call
        self._auto = str(batch_size) == "auto"
        self._batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self._max_length = max_length
        self._max_gen_toks = int(max_gen_toks)
        self.progress = progress
        self.last_stats = None  # the engine's BatchStats of the latest generate_until call

    # ------------------------------------------------------------------ what lm-eval asks of a model
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return int(self._max_length)
        from lm_eval.models.utils import resolve_max_length

        return resolve_max_length(self.model.config, self.tokenizer, default=DEFAULT_MAX_LENGTH)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "decodebench")).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list[int]:
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            kw["add_special_tokens"] = False  # the text already carries its BOS (a chat template)
        return self.tokenizer.encode(string, **kw)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """All requests that share gen_kwargs go to the engine in one call (it batches and orders them)."""
        from decodebench.decoding.engine import Request, auto_batch_size, generate

        eos = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        groups: dict[str, list[int]] = collections.defaultdict(list)
        for i, r in enumerate(requests):
            groups[repr(sorted(r.args[1].items()))].append(i)
        out: list[Optional[str]] = [None] * len(requests)
        seen: collections.Counter = collections.Counter()
        for idx in groups.values():
            kwargs = normalize_gen_kwargs(requests[idx[0]].args[1], self._max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            spec = request_strategy(self.strategy, kwargs, until)
            max_ctx = self.max_length - spec.max_new_tokens
            if max_ctx <= 0:
                raise ValueError(f"max_gen_toks {spec.max_new_tokens} leaves no room for a prompt in max_length "
                                 f"{self.max_length}")
            reqs = []
            for i in idx:
                rid = request_id(requests[i])
                reqs.append(Request(prompt_id=rid, prompt_ids=self.tok_encode(requests[i].args[0])[-max_ctx:],
                                    sample_index=seen[rid], params=spec.params, seed=self.seed))
                seen[rid] += 1  # lm-eval hands the same Instance `repeats` times: each copy is one sample
            with tqdm(total=len(reqs), desc="decodebench generate_until", disable=disable_tqdm or not self.progress,
                      unit="seq") as bar:
                bs = auto_batch_size(self.model, reqs, spec) if self._auto else self._batch_size
                outs, self.last_stats = generate(self.model, self.tokenizer, reqs, spec, batch_size=bs, progress=bar)
            for i, o in zip(idx, outs):
                text = self.tokenizer.decode(o.token_ids, skip_special_tokens=True)
                out[i] = postprocess_generated_text(text, until, None)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ log-likelihoods
    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """Sum of continuation log-probs and whether greedy decoding would produce it, longest first."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        res: list[Optional[tuple[float, bool]]] = [None] * len(requests)
        n = self._batch_size
        for start in tqdm(range(0, len(order), n), disable=disable_tqdm or not self.progress, desc="loglikelihood"):
            chunk = order[start:start + n]
            # the last token is never an input: its logits would predict beyond the continuation
            inps = [(requests[i][1] + requests[i][2])[-(self.max_length + 1):][:-1] for i in chunk]
            width = max(len(x) for x in inps)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = torch.full((len(inps), width), pad, dtype=torch.long)
            mask = torch.zeros((len(inps), width), dtype=torch.long)
            for j, x in enumerate(inps):  # right padding: a causal row never sees the pad after it
                ids[j, : len(x)] = torch.tensor(x)
                mask[j, : len(x)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logp = F.log_softmax(logits.float(), dim=-1)
            for j, i in enumerate(chunk):
                cont = requests[i][2]
                end = len(inps[j])
                lp = logp[j, end - len(cont): end]  # [len(cont), V]
                target = torch.tensor(cont, device=lp.device)
                greedy = bool((lp.argmax(-1) == target).all())
                res[i] = (float(lp.gather(-1, target[:, None]).sum()), greedy)
        return res  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood in disjoint windows of max_length tokens (lm-eval's `hf` rule)."""
        windows, owner = [], []
        for k, r in enumerate(requests):
            for w in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(r.args[0]), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None,) + w)
                owner.append(k)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        total = [0.0] * len(requests)
        for k, (lp, _) in zip(owner, scores):
            total[k] += lp
        return total

    def get_model_info(self) -> dict:
        return {"model_name": str(getattr(self.model, "name_or_path", "")),
                "decodebench_strategy": self.strategy if self.strategy is not None else "gen_kwargs"}


def request_id(instance) -> str:
    """A request's identity, stable across batch sizes and orders: task, document, request index."""
    task, doc = getattr(instance, "task_name", None), getattr(instance, "doc_id", None)
    if task is None or doc is None:
        import hashlib

        return hashlib.sha256(repr(instance.args).encode()).hexdigest()[:16]
    return f"{task}/{doc}/{getattr(instance, 'idx', 0)}"
