"""Child process for bench/serving_peers.py, run in the vLLM environment (.venv-vllm).

Usage: python _vllm_child.py FOLDER DTYPE NEW_TOKENS PROMPTS.json OUT.json [enforce_eager]

One engine: raw ``LLM.generate`` on the chat-rendered token ids, then lmboard's vllm
backend (``vllm:FOLDER``) on the same engine and requests, each after a short warm-up:
the backend's overhead over raw vLLM, nothing else differing. Writes timings and answers.
"""

import json
import os
import sys
import time

if __name__ == "__main__":  # vLLM's engine processes are spawned: they re-import this file
    t_start = time.perf_counter()
    folder, dtype, new_tokens, prompts_path, out_path, *rest = sys.argv[1:]
    eager = "enforce_eager" in rest
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from lmboard.lm import GenerationSettings, GenRequest
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    instructions = json.load(open(prompts_path))
    # The backend starts the engine its own way (CPU threads bound, in this process); raw
    # LLM.generate then runs on that very engine.
    lm = load_model(parse_model_spec(f"vllm:{folder},dtype={dtype}" + (",enforce_eager=true" if eager else "")))
    t0 = time.perf_counter()
    llm: LLM = lm.llm
    start_s = time.perf_counter() - t0
    tok = lm.tokenizer
    prompts = [TokensPrompt(prompt_token_ids=tok(tok.apply_chat_template([{"role": "user", "content": t}],
                                                                          tokenize=False, add_generation_prompt=True),
                                                 add_special_tokens=False).input_ids) for t in instructions]
    eos = lm.eos_token_ids()
    params = SamplingParams(max_tokens=int(new_tokens), temperature=0.0, stop_token_ids=eos, seed=0)
    llm.generate(prompts[:2], SamplingParams(max_tokens=4, temperature=0.0), use_tqdm=False)  # warm-up
    t = time.perf_counter()
    raw = llm.generate(prompts, params, use_tqdm=False)
    raw_s = time.perf_counter() - t
    reqs = [GenRequest(str(i), ({"role": "user", "content": x},)) for i, x in enumerate(instructions)]
    settings = GenerationSettings(max_new_tokens=int(new_tokens), do_sample=False)
    list(lm.generate(reqs[:2], GenerationSettings(max_new_tokens=4, do_sample=False)))  # warm-up
    t = time.perf_counter()
    ours = {r.key: r for r in lm.generate(reqs, settings)}
    ours_s = time.perf_counter() - t
    json.dump({
        "start_s": start_s, "import_s": t0 - t_start,
        "raw": {"seconds": raw_s, "tokens": sum(len(o.outputs[0].token_ids) for o in raw),
                "outputs": [o.outputs[0].text for o in raw]},
        "backend": {"seconds": ours_s, "tokens": sum(r.output_tokens for r in ours.values()),
                    "outputs": [ours[str(i)].output for i in range(len(reqs))]},
    }, open(out_path, "w"))
    lm.close()
