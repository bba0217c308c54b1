"""Running a multiple-choice exam: prompts -> engine -> store -> result.

The store holds every scored question as soon as its batch finishes; the result is
read back from the store at the end, so a resumed run writes the same files as an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from lmboard.engine import EngineStats, ScoreHooks, ScoreItem, score_last
from lmboard.errors import UsageError
from lmboard.lm import LocalLM
from lmboard.metrics.accuracy import softmax
from lmboard.parallel import broadcast, world
from lmboard.store import Store
from lmboard.tasks.exam import ExamSettings, MCExam, MCQuestion, Prompt
from lmboard.tasks.runs import describe, family, run_id, run_key
from lmboard.tasks.sharded import Sink, shard_of
from lmboard.text import stable_hash, template_hash

Questions = dict[str, list[MCQuestion]]  # subject -> questions, in file order
Pools = dict[str, tuple[list[MCQuestion], str]]  # subject -> (few-shot pool, its split)


@dataclass
class ExamResult:
    run_id: str
    model: str
    questions: Questions
    samples: dict[str, dict]  # "subject/index" -> sample record
    provenance: dict
    stats: EngineStats | None
    cost_time: float
    resumed: bool = False
    shots_used: dict[str, list[int]] = field(default_factory=dict)


def sample_key(q: MCQuestion) -> str:
    return f"{q.subject}/{q.index}"


def chat_render(exam: MCExam, lm: LocalLM, q: MCQuestion, shots: list[MCQuestion]) -> tuple[str, str]:
    """--chat: the exam through the model's chat template, few-shot as alternating turns."""
    if not getattr(lm.tokenizer, "chat_template", None):
        raise UsageError("--chat: the model has no chat template")
    head = exam.header(q.subject)
    messages: list[dict[str, str]] = []
    for i, s in enumerate(shots):
        messages.append({"role": "user", "content": (head if i == 0 else "") + exam.example(s, False)})
        messages.append({"role": "assistant", "content": s.answer})
    messages.append({"role": "user", "content": (head if not shots else "") + exam.example(q, False)})
    text = lm.render_chat(messages)
    return text, text[: text.rfind(exam.example(q, False))]


def build_prompts(exam: MCExam, lm: LocalLM, settings: ExamSettings, questions: Questions,
                  pools: Pools) -> tuple[list[Prompt], list[list[int]]]:
    """Every question's prompt, fitted to the context; and its token ids."""
    max_len = settings.max_length or lm.max_length
    special = not settings.chat  # a rendered chat template already holds its special tokens

    def count(text: str) -> int:
        return len(lm.encode(text, special))

    render = (lambda q_, s_: chat_render(exam, lm, q_, s_)) if settings.chat else None
    prompts: list[Prompt] = []
    for subject, qs in questions.items():
        pool, source = pools[subject]
        for q in qs:
            prompts.append(exam.build_prompt(q, exam.shots_for(q, pool, source, settings.shots), count, max_len, render))
    ids = lm.tokenizer([p.text for p in prompts], add_special_tokens=special).input_ids
    too_long = [p for p, i in zip(prompts, ids, strict=True) if len(i) > max_len]
    if too_long:
        q = too_long[0].question
        raise UsageError(f"{q.subject} question {q.index}: prompt is longer than {max_len} tokens even with 0 shots")
    return prompts, ids


def exam_template_hash(exam: MCExam, settings: ExamSettings) -> str:
    q = MCQuestion("subject_name", 0, "{question}", ("{A}", "{B}", "{C}", "{D}"), "A", ())
    text, _ = exam.render(q, [q])
    return template_hash(exam.name, text, settings.letter_token, settings.chat)


def load_questions(exam: MCExam, settings: ExamSettings) -> tuple[Questions, Pools]:
    """Every question and few-shot pool, validated before any model is loaded."""
    data = Path(settings.data)
    subjects = exam.select_subjects(data, settings.subjects)
    if settings.shots < 0:
        raise UsageError(f"--shots must be >= 0 (got {settings.shots})")
    questions: Questions = {}
    pools: Pools = {}
    for s in subjects:
        test = exam.load_split(data, s, exam.eval_split)
        if test is None:
            raise UsageError(f"--subjects: {s}: no {exam.eval_split} file in {data / exam.eval_split}")
        if not test:
            raise UsageError(f"{data / exam.eval_split}: {s}: no questions")
        pools[s] = exam.shot_pool(data, s, test)
        questions[s] = test[: settings.limit] if settings.limit else test
    return questions, pools


def exam_provenance(exam: MCExam, lm: LocalLM, settings: ExamSettings, pools: Pools, letter_ids: list[int]) -> dict:
    sources = sorted({src for _, src in pools.values()})
    return {
        **lm.info(),
        "task": exam.name,
        "shots_requested": settings.shots,
        "fewshot_source": sources[0] if len(sources) == 1 else sources,
        "prompt_template_hash": exam_template_hash(exam, settings),
        "prompt_format": "chat" if settings.chat else "plain",
        "letter_token": settings.letter_token,
        "letter_token_ids": letter_ids,
        "letter_tokens": [lm.tokenizer.decode([i]) for i in letter_ids],
        "max_length": settings.max_length or lm.max_length,
        "seed": None,  # scoring is deterministic: no sampling
    }


def sample_record(exam: MCExam, p: Prompt, logits: list[float]) -> dict:
    probs = softmax(logits)
    pred = exam.letters[max(range(len(probs)), key=probs.__getitem__)]
    q = p.question
    return {"subject": q.subject, "index": q.index, "prompt_hash": stable_hash(p.text), "shots": p.shots,
            "logits": logits, "probs": probs, "pred": pred, "gold": q.answer, "correct": pred == q.answer}


def exam_identity(exam: MCExam, lm: LocalLM, settings: ExamSettings, provenance: dict) -> tuple[str, dict, str]:
    """(run id, key, family). The recheck margin moves stored probabilities only where
    the model computes in reduced precision; batching never does."""
    dtype = provenance["dtype"]
    margin = settings.engine.recheck_margin
    key = run_key(lm.spec, dtype, exam=settings.key_dict(), template=provenance["prompt_template_hash"],
                  recheck_margin=("calibrated" if margin is None else margin) if dtype != "float32" else None)
    fam = family("exam", lm.spec, task=exam.name, data=str(Path(settings.data).resolve()),
                 subjects=list(settings.subjects))
    return run_id(exam.name, key), key, fam


def run_exam(exam: MCExam, lm: LocalLM, settings: ExamSettings, store: Store,
             progress: Callable[[int, int], None] | None = None, oom_guard: Callable[[int], None] | None = None,
             loaded: tuple[Questions, Pools] | None = None) -> ExamResult | None:
    """Score what the store does not hold as final (close calls stored as pending are only
    rechecked). A second process on the same run waits for this one, then finds it done.
    Under torchrun each rank scores its shard and rank 0 stores everything (None on the
    other ranks)."""
    t0 = time.time()
    questions, pools = loaded or load_questions(exam, settings)
    prompts, ids = build_prompts(exam, lm, settings, questions, pools)
    cue = prompts[0].text if settings.chat else exam.example(prompts[0].question, False)
    # In chat form the letter opens the assistant turn: no separator before it.
    letter_ids = exam.letter_ids(lm, cue, settings.letter_token, "" if settings.chat else exam.answer_sep)
    provenance = exam_provenance(exam, lm, settings, pools, letter_ids)
    rid, key, fam = exam_identity(exam, lm, settings, provenance)
    by_key = {sample_key(p.question): p for p in prompts}
    items = [ScoreItem(sample_key(p.question), i, p.prefix) for p, i in zip(prompts, ids, strict=True)]
    seen = [0]

    def tick(n: int) -> None:
        seen[0] += n
        if progress:
            progress(seen[0], len(items))

    checked: dict[str, tuple[list[float], float, bool]] = {}

    def record(k: str, lg: list[float]) -> dict:
        r = sample_record(exam, by_key[k], lg)
        if k in checked:  # rescored on the float32 model: what bfloat16 said, and by how much it erred
            b, err, cal = checked.pop(k)
            r["recheck"] = {"bf16_logits": b, "gap_error": err, "calibration": cal}
        return r

    w = world()
    sink = Sink(store, rid, tick)

    def write(state: str) -> Callable[[list[tuple[str, list[float]]]], None]:
        return lambda rows: sink.add(state, [(k, record(k, lg)) for k, lg in rows])

    stats = None
    with store.run_lock(rid) if w.main else nullcontext():
        opened = (store.open_run(rid, "exam", lm.spec.display_name, {**key, "run": rid}, provenance, fam)
                  if w.main else None)
        if w.main:
            store.say(describe(opened, rid))
        final, pending, kept = broadcast(_stored_state(store, rid, len(items)) if w.main else None)
        if len(final) < len(items):
            mine = shard_of(items, [k.split("/")[0] for k in (it.key for it in items)], provenance)
            items = [items[i] for i in mine]

            def stored(k: str) -> tuple[list[float] | None, float | None]:
                r = kept.get(k)
                if r is None:
                    return None, None
                if k in pending:
                    return r["logits"], None
                rc = r.get("recheck") or {}  # rescored: what bfloat16 said, and its gap error
                return rc.get("bf16_logits"), rc.get("gap_error")

            hooks = ScoreHooks(skip=lambda k: k in final or k in pending, stored=stored,
                               on_batch=write("final"), on_provisional=write("pending"), progress=sink.tick,
                               on_checked=checked.update, oom_guard=oom_guard)
            stats = score_last(lm, items, letter_ids, settings.engine, hooks)
            stats = sink.finish(stats)
        elif progress:
            progress(len(items), len(items))
    if not w.main:
        return None
    return _collect(rid, lm, questions, store, by_key, provenance, stats, time.time() - t0, opened.resumed)


def _stored_state(store: Store, rid: str, n: int) -> tuple[set[str], set[str], dict]:
    """What the store holds of this run: final keys, pending keys, their records."""
    final, pending = store.sample_keys(rid), store.sample_keys(rid, "pending")
    return final, pending, (dict(store.samples(rid)) if (final or pending) and len(final) < n else {})


def _collect(rid: str, lm: LocalLM, questions: Questions, store: Store, by_key: dict, provenance: dict,
             stats: EngineStats | None, cost: float, resumed: bool) -> ExamResult:
    samples = {k: v for k, v in store.samples(rid) if k in by_key}
    missing = [k for k in by_key if k not in samples]
    if missing:
        raise RuntimeError(f"internal: {len(missing)} questions were not scored (first: {missing[0]})")
    shots_used = {s: [samples[sample_key(q)]["shots"] for q in qs] for s, qs in questions.items()}
    provenance["shots_used"] = {"min": min(min(v) for v in shots_used.values()),
                                "max": max(max(v) for v in shots_used.values())}
    if stats is not None:
        provenance["engine"] = stats.to_dict()
    return ExamResult(rid, lm.spec.display_name, questions, samples, provenance, stats, cost, resumed, shots_used)
