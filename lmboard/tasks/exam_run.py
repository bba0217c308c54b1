"""Running a multiple-choice exam: prompts -> the model's ``score`` -> store -> result.

The store holds every scored question as soon as its batch finishes (provisional
results too, as the backend hands them on); the result is read back from the store at
the end, so a resumed run writes the same files as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import WORK_CHOOSE, Scored, ScoreRequest, ScoringLM
from lmboard.metrics.accuracy import softmax
from lmboard.store import Store, StoredSample
from lmboard.tasks.exam import ExamSettings, MCExam, MCQuestion, Prompt
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
    stats: dict | None  # the backend's counters
    cost_time: float
    resumed: bool = False
    shots_used: dict[str, list[int]] = field(default_factory=dict)


def sample_key(q: MCQuestion) -> str:
    return f"{q.subject}/{q.index}"


def chat_render(exam: MCExam, lm: ScoringLM, q: MCQuestion, shots: list[MCQuestion]) -> tuple[str, str]:
    """--chat: the exam through the model's chat template, few-shot as alternating turns."""
    if not lm.has_chat_template():
        raise UsageError("--chat: the model has no chat template")
    head = exam.header(q.subject)
    messages: list[dict[str, str]] = []
    for i, s in enumerate(shots):
        messages.append({"role": "user", "content": (head if i == 0 else "") + exam.example(s, False)})
        messages.append({"role": "assistant", "content": s.answer})
    messages.append({"role": "user", "content": (head if not shots else "") + exam.example(q, False)})
    text = lm.render_chat(messages)
    return text, text[: text.rfind(exam.example(q, False))]


def build_prompts(exam: MCExam, lm: ScoringLM, settings: ExamSettings, questions: Questions,
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
    ids = lm.encode_many([p.text for p in prompts], special)
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


def exam_provenance(exam: MCExam, lm: ScoringLM, settings: ExamSettings, pools: Pools, letter_ids: list[int]) -> dict:
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
        "letter_tokens": [lm.decode([i]) for i in letter_ids],
        "max_length": settings.max_length or lm.max_length,
        "seed": None,  # scoring is deterministic: no sampling
    }


def sample_record(exam: MCExam, p: Prompt, r: Scored) -> dict:
    """A question's stored record; the backend's note (how it made the logits) at its end."""
    logits = r.logits or []
    probs = softmax(logits)
    pred = exam.letters[max(range(len(probs)), key=probs.__getitem__)]
    q = p.question
    return {"subject": q.subject, "index": q.index, "prompt_hash": stable_hash(p.text), "shots": p.shots,
            "logits": logits, "probs": probs, "pred": pred, "gold": q.answer, "correct": pred == q.answer,
            **(r.note or {})}


def exam_identity(exam: MCExam, lm: ScoringLM, settings: ExamSettings, provenance: dict) -> Identity:
    """The run's identity. What of the backend can move the stored probabilities (a
    reduced-precision model's recheck margin) it says itself; batching never does."""
    key = run_key(lm.spec, provenance.get("dtype"), exam=settings.key_dict(), template=provenance["prompt_template_hash"],
                  **lm.run_identity(WORK_CHOOSE))
    fam = family("exam", lm.spec, task=exam.name, data=str(Path(settings.data).resolve()),
                 subjects=list(settings.subjects))
    rid = run_id(exam.name, key)
    return Identity(rid, "exam", lm.spec.display_name, {**key, "run": rid}, fam)


def run_exam(exam: MCExam, lm: ScoringLM, settings: ExamSettings, store: Store,
             progress: Callable[[int, int], None] | None = None,
             loaded: tuple[Questions, Pools] | None = None) -> ExamResult | None:
    """Score what the store does not hold as final (provisional results are handed back to
    the backend, which only decides them). A second process on the same run waits for this
    one, then finds it done. Under torchrun each rank scores its shard and rank 0 stores
    everything (None on the other ranks)."""
    t0 = time.time()
    questions, pools = loaded or load_questions(exam, settings)
    prompts, ids = build_prompts(exam, lm, settings, questions, pools)
    cue = prompts[0].text if settings.chat else exam.example(prompts[0].question, False)
    # In chat form the letter opens the assistant turn: no separator before it.
    letter_ids = exam.letter_ids(lm, cue, settings.letter_token, "" if settings.chat else exam.answer_sep)
    provenance = exam_provenance(exam, lm, settings, pools, letter_ids)
    identity = exam_identity(exam, lm, settings, provenance)
    by_key = {sample_key(p.question): p for p in prompts}
    reqs = [ScoreRequest(sample_key(p.question), tuple(i), targets=tuple(letter_ids), prefix=p.prefix)
            for p, i in zip(prompts, ids, strict=True)]
    stats = None
    with JobRun(store, identity, provenance, len(reqs), progress) as run:
        stored = {k: _as_scored(k, s) for k, s in run.stored.items() if k in by_key}
        seen = set(stored)
        run.tick(len(seen))
        if sum(s.final for s in stored.values()) < len(reqs):
            mine = [reqs[i] for i in run.shard(reqs, [r.key.split("/")[0] for r in reqs],
                                                  [len(r.ids) for r in reqs])]
            scoring = lm.score(mine, exact=True, stored=stored)
            for batch in scoring:
                run.add([(r.key, sample_record(exam, by_key[r.key], r), r.note) for r in batch], batch[0].final)
                new = {r.key for r in batch} - seen
                seen |= new
                run.tick(len(new))
            stats = run.finish(scoring.stats)
        if not run.main:
            return None
        return collect(run, questions, by_key, provenance, stats, time.time() - t0)


def _as_scored(key: str, s: StoredSample) -> Scored:
    """A stored result as the backend handed it on (what it needs back on resume)."""
    return Scored(key, logits=(s.data or {}).get("logits"), final=s.final, note=s.note)


def collect(run: JobRun, questions: Questions, by_key: dict, provenance: dict, stats: dict | None,
             cost: float) -> ExamResult:
    samples = {k: v for k, v in run.samples().items() if k in by_key}
    missing = [k for k in by_key if k not in samples]
    if missing:
        raise RuntimeError(f"internal: {len(missing)} questions were not scored (first: {missing[0]})")
    shots_used = {s: [samples[sample_key(q)]["shots"] for q in qs] for s, qs in questions.items()}
    provenance["shots_used"] = {"min": min(min(v) for v in shots_used.values()),
                                "max": max(max(v) for v in shots_used.values())}
    if stats is not None:
        provenance["engine"] = stats
    return ExamResult(run.identity.run_id, run.identity.model, questions, samples, provenance, stats, cost,
                      run.resumed, shots_used)
