"""decodebench perplexity as a Hugging Face `evaluate` metric: exp(total NLL of the predictions' tokens /
their number) under a causal LM, each prediction conditioned on its prompt when prompts are given.
The model is a local path (loaded with local_files_only) or an already-loaded model and tokenizer."""

import datasets
import evaluate

from decodebench.scorers import resolve_scorers

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions (list of str): the continuations to score.
    model_id (str): a local model folder (transformers format); or pass model= and tokenizer=.
    model, tokenizer: an already-loaded causal LM and its tokenizer.
    prompts (list of str, optional): the prompt each prediction continues.
    batch_size (int, optional): rows per forward pass (default 8).
    max_length (int, optional): context limit; 0 means the model's own (default).
    device (str, optional): where the model runs; default: where its weights are.
Returns:
    {"perplexity": float}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class DecodebenchPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, model_id=None, model=None, tokenizer=None, prompts=None, batch_size=8,
                 max_length=0, device=None):
        if model is None:
            if model_id is None:
                raise ValueError("decodebench_perplexity needs model_id= (a local folder) or model= and tokenizer=")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(model_id, local_files_only=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
            if device is not None:
                model = model.to(device)
        records = [{"prompt_id": i, "prompt": prompts[i] if prompts else None, "text": text}
                   for i, text in enumerate(predictions)]
        plan = resolve_scorers({"names": ["perplexity"], "bootstrap": {"samples": 0},
                                "perplexity": {"batch_size": batch_size, "max_length": max_length}})
        return plan.score(records, model=model, tokenizer=tokenizer, device=device, progress=False)
