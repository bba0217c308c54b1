"""An exam in generation mode (`lmboard eval --by generate`, OpenCompass's "gen" mode): the
question through the model's chat template (few-shot examples as alternating turns, as
``--chat``), a greedy answer in words, the letter read from it by tasks/extract.py's rule
(recorded with the result), reasoning traces removed first. Every answer is stored as it
comes; a rerun resumes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import WORK_GREEDY, GenerationSettings, GenRequest, ScoringLM
from lmboard.store import Store
from lmboard.tasks.exam import ExamSettings, MCExam
from lmboard.tasks.exam_run import (
    ExamResult,
    Pools,
    Questions,
    build_prompts,
    collect,
    exam_template_hash,
    sample_key,
)
from lmboard.tasks.extract import RULE, RULE_VERSION, extract_letter, strip_thinking
from lmboard.text import stable_hash

DEFAULT_TOKENS, THINKING_TOKENS = 48, 1024


@dataclasses.dataclass(frozen=True)
class GenExamSettings:
    max_new_tokens: int | None = None  # None: 48, or 1024 where the model thinks first
    strip_thinking: bool | None = None  # None: on where the chat template has a thinking block


def thinks(lm: ScoringLM) -> bool:
    """Whether the model's chat template has a thinking block."""
    template = getattr(getattr(lm, "tokenizer", None), "chat_template", None) or ""
    return "<think>" in (template if isinstance(template, str) else str(template))


def resolved(lm: ScoringLM, g: GenExamSettings) -> GenExamSettings:
    think = thinks(lm)
    return GenExamSettings(g.max_new_tokens or (THINKING_TOKENS if think else DEFAULT_TOKENS),
                           think if g.strip_thinking is None else g.strip_thinking)


def record(q, prompt, response: str) -> dict:
    """What is stored: the answer as the model gave it (the letter is read at the end, so a
    changed rule reads stored answers again and generates nothing)."""
    return {"subject": q.subject, "index": q.index, "prompt_hash": stable_hash(prompt.text), "shots": prompt.shots,
            "response": response, "gold": q.answer}


def read_letters(exam: MCExam, result: ExamResult, by_key: dict, strip: bool) -> None:
    for k, s in result.samples.items():
        answer, think = strip_thinking(s["response"]) if strip else (s["response"], 0)
        letter, rule = extract_letter(answer, exam.letters, by_key[k].question.choices)
        s.update({"pred": letter, "extraction": rule, "think_chars": think, "correct": letter == s["gold"],
                  "probs": [None] * len(exam.letters)})


def run_exam_generate(exam: MCExam, lm: ScoringLM, settings: ExamSettings, g: GenExamSettings, store: Store | None,
                      progress: Callable[[int, int], None] | None, loaded: tuple[Questions, Pools]) -> ExamResult | None:
    t0 = time.time()
    g = resolved(lm, g)
    questions, pools = loaded
    room = (settings.max_length or lm.max_length) - g.max_new_tokens
    prompts, _ = build_prompts(exam, lm, dataclasses.replace(settings, chat=True, max_length=room), questions, pools)
    by_key = {sample_key(p.question): p for p in prompts}
    provenance = {**lm.info(), "task": exam.name, "by": "generate", "shots_requested": settings.shots,
                  "prompt_format": "chat", "prompt_template_hash": exam_template_hash(exam, dataclasses.replace(
                      settings, chat=True)), "extraction_rule": RULE, "extraction_rule_version": RULE_VERSION,
                  "strip_thinking": g.strip_thinking, "max_new_tokens": g.max_new_tokens, "seed": None}
    key = run_key(lm.spec, provenance.get("dtype"), exam=settings.key_dict(), by="generate",
                  template=provenance["prompt_template_hash"], max_new_tokens=g.max_new_tokens,
                  **lm.run_identity(WORK_GREEDY))
    rid = run_id(f"{exam.name}-gen", key)
    identity = Identity(rid, "exam", lm.spec.display_name, {**key, "run": rid},
                        family("exam", lm.spec, task=exam.name, data=str(Path(settings.data).resolve()),
                               subjects=list(settings.subjects), by="generate"))
    gs = GenerationSettings(max_new_tokens=g.max_new_tokens, do_sample=False, raw=True)
    with JobRun(store, identity, provenance, len(prompts), progress) as run:
        done = set(run.stored)
        run.tick(sum(k in done for k in by_key))
        keys = list(by_key)
        mine = [keys[i] for i in run.shard(keys, [k.split("/")[0] for k in keys], [len(by_key[k].text) for k in keys])]
        reqs = [GenRequest(k, text=by_key[k].text) for k in mine]
        for res in lm.generate(reqs, gs, skip=done.__contains__, exact=True):
            if res.key in done:
                continue
            p = by_key[res.key]
            run.add([(res.key, record(p.question, p, res.output))])
            run.tick(1)
        stats = run.finish(None)
        if not run.main:
            return None
        result = collect(run, questions, by_key, provenance, stats, time.time() - t0)
        read_letters(exam, result, by_key, g.strip_thinking)
        run.add(list(result.samples.items()))  # the letters as read, beside the answers (the board reads them)
    return result


def extraction_summary(result: ExamResult, examples: int = 2) -> dict:
    """How the letters were found: a count per rule and a few answers of each."""
    by_rule: dict[str, list[str]] = {}
    for s in result.samples.values():
        by_rule.setdefault(s["extraction"], []).append(s["response"])
    n = len(result.samples)
    return {"n": n, "rules": {k: len(v) for k, v in by_rule.items()},
            "no_letter": len(by_rule.get("none", [])) / n if n else 0.0,
            "examples": {k: v[:examples] for k, v in by_rule.items()},
            "thinking_chars": sum(s["think_chars"] for s in result.samples.values())}
