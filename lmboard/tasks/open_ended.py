"""Open-ended generation for many models over one prompt set, in alpaca_eval's format.

Prompt files: plain text (one question a line), JSONL (``instruction`` with optional
``input`` and ``system``, or ``messages``), or an alpaca_eval JSON list. Answers go to the
store as they complete (an interrupted run resumes); the files are written at the end:
``output.json`` (alpaca_eval: instruction, input, output, generator, dataset, datasplit)
and ``generations.jsonl`` (provenance per answer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.faults import fault
from lmboard.io import need_file, read_json_list, read_jsonl
from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import WORK_GENERATE, GeneratingLM, GenerationSettings, GenRequest
from lmboard.store import Store
from lmboard.text import stable_hash


@dataclass(frozen=True)
class PromptItem:
    instruction: str
    input: str = ""
    system: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    dataset: str = "lmboard"

    @property
    def key(self) -> str:
        return stable_hash([self.instruction, self.input, self.system, list(self.messages)])

    def request(self) -> GenRequest:
        if self.messages:
            return GenRequest(self.key, self.messages)
        user = self.instruction + (f"\n\n{self.input}" if self.input else "")
        msgs = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": user}
        ]
        return GenRequest(self.key, tuple(msgs), text=user)


def _item(path: Path, where: str, obj: object, dataset: str) -> PromptItem:
    if not isinstance(obj, dict):
        raise UsageError(f"{path}:{where}: expected a JSON object")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise UsageError(f"{path}:{where}: messages must be a list of {{role, content}}")
        last_user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
        return PromptItem(last_user, messages=tuple({"role": m["role"], "content": m["content"]} for m in msgs),
                          dataset=obj.get("dataset", dataset))
    if not isinstance(obj.get("instruction"), str) or not obj["instruction"].strip():
        raise UsageError(f"{path}:{where}: missing field 'instruction'")
    return PromptItem(obj["instruction"], obj.get("input") or "", obj.get("system"), dataset=obj.get("dataset", dataset))


def load_prompts(path: Path) -> list[PromptItem]:
    path = Path(path)
    need_file(path, "--prompts")
    dataset = path.stem
    items: list[PromptItem] = []
    if path.suffix == ".jsonl":
        items = [_item(path, str(n), obj, dataset) for n, obj in read_jsonl(path)]
    elif path.suffix == ".json":
        data = read_json_list(path, "prompts (alpaca_eval format)")
        items = [_item(path, f"entry {i}", obj, dataset) for i, obj in enumerate(data)]
    else:
        text = path.read_text(encoding="utf-8")
        items = [PromptItem(line.strip(), dataset=dataset) for line in text.splitlines() if line.strip()]
    if not items:
        raise UsageError(f"--prompts: {path}: no prompts in the file")
    return items


def run_generation(lm: GeneratingLM, prompts: list[PromptItem], settings: GenerationSettings, store: Store,
                   prompts_id: str, progress: Callable[[int, int], None] | None = None,
                   concurrency: int = 8) -> tuple[str, dict[str, dict]]:
    """Generate what the store does not hold yet, storing each answer as it comes; returns
    (run id, key -> record). What of the backend can change a greedy answer (batch size
    and scheduler: padding, reduced precision) it says itself, into the run's identity."""
    info = lm.info()
    key = run_key(lm.spec, info.get("dtype"), prompts=prompts_id, settings=settings.to_dict(),
                  **lm.run_identity(WORK_GENERATE))
    rid = run_id("gen", key)
    unique = {p.key: p for p in prompts}
    run = JobRun(store, Identity(rid, "generate", lm.spec.display_name, key,
                                 family("generate", lm.spec, prompts=prompts_id)), info, len(unique), progress)
    reqs = [p.request() for p in unique.values()]
    # under torchrun, this rank's share, balanced by prompt and answer tokens
    weights = [len(r.text or "".join(m["content"] for m in r.messages)) // 4 + settings.max_new_tokens for r in reqs]
    reqs = [reqs[i] for i in run.shard(reqs, [r.key for r in reqs], weights)]
    with run:
        done = set(run.stored)
        run.tick(len(done & set(unique)))
        for r in lm.generate(reqs, settings, concurrency, skip=done.__contains__):
            if r.key in done:
                continue  # a batch with one answer left runs whole: its other answers are stored already
            fault("generate.result")
            run.add([(r.key, {
                "output": r.output, "prompt": r.prompt, "prompt_tokens": r.prompt_tokens,
                "output_tokens": r.output_tokens, "latency_s": r.latency_s, "finish_reason": r.finish_reason,
                "settings": r.settings,
            })])
            run.tick(1)
        run.finish(None)
        if not run.main:
            return rid, {}
        records = run.samples()
        run.done({"n": len(records)})
    return rid, records


def write_outputs(out: Path, prompts: list[PromptItem], per_model: dict[str, tuple[str, dict]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    entries, lines = [], []
    for generator, (rid, records) in per_model.items():
        for p in prompts:
            r = records[p.key]
            entries.append({"instruction": p.instruction, "input": p.input, "output": r["output"],
                            "generator": generator, "dataset": p.dataset, "datasplit": "eval"})
            lines.append(json.dumps({"generator": generator, "run_id": rid, "instruction": p.instruction,
                                     **r}, ensure_ascii=False))
    (out / "output.json").write_text(json.dumps(entries, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "generations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
