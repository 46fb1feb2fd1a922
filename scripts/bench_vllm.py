"""vLLM's side of scripts/bench_engine.py, run with the Python of a separate environment that has vLLM.

    /path/to/vllm-env/bin/python scripts/bench_vllm.py job.json     (bench_engine.py writes job.json)

job.json: {"model_dir", "prompts": [[ids...]], "max_tokens", "do_sample", "top_p", "max_num_seqs",
"ignore_eos", "dtype"}. Prints one JSON line: {"tokens", "seconds"} for the generate call alone (engine
start-up and model load excluded, as on decodebench's side). vLLM is a benchmark comparison only, never a
dependency of decodebench.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    job = json.load(open(sys.argv[1]))
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=job["model_dir"], max_num_seqs=job["max_num_seqs"], dtype=job["dtype"], seed=0,
              max_model_len=max(len(p) for p in job["prompts"]) + job["max_tokens"] + 8)
    sp = SamplingParams(temperature=1.0 if job["do_sample"] else 0.0, top_p=job["top_p"],
                        max_tokens=job["max_tokens"], ignore_eos=job["ignore_eos"], seed=0)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
    llm.generate(prompts[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
    t = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    s = time.perf_counter() - t
    print(json.dumps({"tokens": sum(len(o.outputs[0].token_ids) for o in outs), "seconds": s}))


if __name__ == "__main__":
    main()
