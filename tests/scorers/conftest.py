"""Fixtures: the released generations under ../shared (read in place, skipped when absent) and a tiny
seeded random-weight Llama with a BPE tokenizer trained here, so model metrics run with no download."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
WEBTEXT = SHARED / "conformance" / "webtext-gpt2-large"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Researchers compare decoding strategies for open-ended text generation.",
    "Greedy search repeats itself; nucleus sampling keeps the tail of the distribution out.",
    "The committee met on Thursday afternoon to discuss the new budget and the schedule.",
    "She said the results were surprising, and that more data would be needed.",
]


@pytest.fixture(scope="session")
def webtext() -> Path:
    if not WEBTEXT.is_dir():
        pytest.skip(f"the released generations are not at {WEBTEXT} (../shared beside the repository)")
    return WEBTEXT


@pytest.fixture(scope="session")
def tiny_lm():
    """(model, tokenizer): Llama with 2 layers of width 32, seeded; the tokenizer adds <s> like Llama's."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS * 4, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


@pytest.fixture()
def lm_records():
    """Prompts and continuations of different lengths, one empty, one reference each."""
    prompts = ["The quick brown fox", "Researchers compare", "She said", "A journey of a thousand miles",
               "The committee met", ""]
    texts = [" jumps over the lazy dog.", " decoding strategies for open-ended text generation and more.",
             "", " begins with", " on Thursday afternoon to discuss the new budget.", "Greedy search"]
    refs = [" runs away.", " methods.", " the results were surprising.", " begins with a single step.",
            " to talk.", "Nucleus sampling"]
    return [{"prompt_id": i, "prompt": p, "text": t, "reference": r, "sample_index": 0}
            for i, (p, t, r) in enumerate(zip(prompts, texts, refs))]
