"""decodebench text metrics as a Hugging Face `evaluate` metric: rep-n and diversity (Su & Collier's
protocol), generation length, distinct-n, seq-rep-4, rep-w, rep-r, repetition-loop rate, self-BLEU-4,
compression ratio and Zipf coefficient; with references, the references' rep-n and diversity too."""

import datasets
import evaluate

from decodebench.scorers import SCORERS, resolve_scorers

_DESCRIPTION = __doc__
_CITATION = """Su & Collier, Contrastive Search Is What You Need For Neural Text Generation, TMLR 2023;
Holtzman et al., The Curious Case of Neural Text Degeneration, ICLR 2020; Welleck et al., Neural Text
Generation with Unlikelihood Training, ICLR 2020; Fu et al., A Theoretical Analysis of the Repetition
Problem in Text Generation, AAAI 2021; Li et al., A Diversity-Promoting Objective Function for Neural
Conversation Models, NAACL 2016; Shaib et al., Standardizing the Measurement of Text Diversity, 2024."""
_KWARGS = """
Args:
    predictions (list of str): the generations.
    references (list of str, optional): one human continuation per prediction; adds reference_rep_*.
    prompt_ids (list, optional): which prompt each prediction answers (default: one prompt each).
    sample_indices (list of int, optional): run of each prediction; runs are scored apart, averaged,
        and get `<metric>_std`.
    scorers (list of str, optional): scorer or metric names (default: every text scorer).
    options (dict, optional): per-scorer options, e.g. {"self_bleu": {"max_hypotheses": 500}}.
    bootstrap_samples (int, optional): resamples for `<metric>_ci_low/_ci_high` (default 0: none).
    seed (int, optional): seed of the self-BLEU sample and the bootstrap (default 0).
Returns:
    dict of metric name -> float (fractions, not percent).
"""

TEXT_SCORERS = [name for name, s in SCORERS.items()
                if s.needs <= {"texts"} and s.target == "generations" and s.default]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class DecodebenchText(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Score the predictions (references optional); see the module's inputs description."""
        # passed on as a keyword, so evaluate does not require a references column
        return super().compute(predictions=predictions, reference_texts=references, **kwargs)

    def _compute(self, predictions, reference_texts=None, prompt_ids=None, sample_indices=None, scorers=None,
                 options=None, bootstrap_samples=0, seed=0):
        n = len(predictions)
        names = list(scorers) if scorers else TEXT_SCORERS + (["reference_rep"] if reference_texts else [])
        records = [{"prompt_id": prompt_ids[i] if prompt_ids else i,
                    "sample_index": sample_indices[i] if sample_indices else 0,
                    "text": predictions[i],
                    "reference": reference_texts[i] if reference_texts else None} for i in range(n)]
        cfg = {"names": names, "bootstrap": {"samples": bootstrap_samples}, **(options or {})}
        return resolve_scorers(cfg).score(records, seed=seed, progress=False)
