"""Running a classification: examples -> prompts -> the model's ``score`` (label
log-likelihoods) or ``generate`` -> store -> metrics. Every review is stored as soon as
it is scored; a rerun resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import (
    GenerationSettings,
    GenRequest,
    ModelSpec,
    Scored,
    ScoreRequest,
    ScoringLM,
    continuation_ids,
)
from lmboard.metrics.classification import classification_report
from lmboard.store import Store
from lmboard.tasks.classify import ClassifyJob, Example, load_examples, match_label, pick_shots, render, split
from lmboard.text import stable_hash

Progress = Callable[[int, int], None]


def scoring_spec(spec: ModelSpec, job: ClassifyJob) -> ModelSpec:
    """The spec to load: ``dtype=auto`` means float32 for label log-likelihoods.

    They sum a full-vocabulary log-softmax over several tokens deep in a long prompt: on
    SmolLM2 with 4 shots, bfloat16 moves the two labels' margin by up to 0.3 nats and
    flips a third of ChnSentiCorp's predictions. Exact by default."""
    if job.settings.by == "loglik" and spec.option("dtype") == "auto" and spec.option("load_in") is None:
        return spec.with_options(dtype="float32")
    return spec


def load_job(job: ClassifyJob) -> tuple[list[Example], list[Example], list[Example], int]:
    """(shots, test examples, train examples, rows skipped for an empty text), validated
    before any model is loaded."""
    labels = job.settings.labels
    examples, skipped = load_examples(job.data, job.text_column, job.label_column, labels)
    if job.train:
        train, test = load_examples(job.train, job.text_column, job.label_column, labels)[0], examples
    elif job.split is not None:
        train, test = split(examples, job.split, job.settings.seed)
    else:
        train, test = [], examples
    if job.test_size:
        test = test[: job.test_size]
    if job.settings.shots and not train:
        raise UsageError("--shots needs training examples: pass --train FILE or --split 0.8")
    return pick_shots(train, job.settings), test, train, skipped


def _generation_tokens(lm: ScoringLM, job: ClassifyJob) -> int:
    """Room for the longest label (a CJK character is 2-3 byte-level tokens) and a little more."""
    return max(len(lm.encode(job.settings.sep + n, special=False)) for n in job.settings.labels.values()) + 6


def _by_loglik(lm: ScoringLM, job: ClassifyJob, shots: list[Example], test: list[Example], run: JobRun,
               done: set[str]) -> dict | None:
    """Every review is planned (a resumed run batches as an uninterrupted one); stored ones are skipped."""
    s, names = job.settings, list(job.settings.labels.values())
    if all(str(e.line) in done for e in test):
        return None
    reqs = []
    for e in test:
        ctx, lab_ids = continuation_ids(lm, render(s, shots, e.text), [s.sep + n for n in names])
        reqs.append(ScoreRequest(str(e.line), tuple(ctx), tuple(map(tuple, lab_ids))))
    gold_of = {str(e.line): e.label for e in test}
    lab_len = {r.key: [len(x) for x in r.continuations] for r in reqs}

    def record(key: str, lp: list[float]) -> dict:
        if s.normalize == "tokens":
            lp = [v / n for v, n in zip(lp, lab_len[key], strict=True)]
        elif s.normalize == "chars":
            lp = [v / len(n) for v, n in zip(lp, names, strict=True)]
        return {"gold": gold_of[key], "pred": names[max(range(len(lp)), key=lp.__getitem__)], "scores": lp}

    scoring = lm.score(reqs, stored={k: Scored(k) for k in done})
    for batch in scoring:
        for r in batch:  # one review a transaction, as it completes
            run.add([(r.key, record(r.key, r.logprobs))])
            run.tick(1)
    return scoring.stats


def _by_generation(lm: ScoringLM, job: ClassifyJob, shots: list[Example], test: list[Example], run: JobRun,
                   done: set[str]) -> None:
    """Batches planned over the whole test side (a resumed run batches as an uninterrupted one)."""
    names = list(job.settings.labels.values())
    gold_of = {str(e.line): e.label for e in test}
    reqs = [GenRequest(str(e.line), text=render(job.settings, shots, e.text)) for e in test]
    gs = GenerationSettings(max_new_tokens=_generation_tokens(lm, job), do_sample=False, raw=True, stop=("\n",))
    for r in lm.generate(reqs, gs, skip=done.__contains__):
        if r.key in done:
            continue
        run.add([(r.key, {"gold": gold_of[r.key], "pred": match_label(r.output, names), "answer": r.output})])
        run.tick(1)


def classify_identity(lm: ScoringLM, job: ClassifyJob, shots: list[Example], test: list[Example]) -> Identity:
    s = job.settings
    data = str(Path(job.data).resolve())
    key = run_key(lm.spec, lm.info().get("dtype"), data=data, settings=s.__dict__, shots=[x.line for x in shots],
                  test=stable_hash([e.line for e in test]),
                  gen_tokens=_generation_tokens(lm, job) if s.by == "generate" else None)
    return Identity(run_id("classify", key), "classify", lm.spec.display_name, key,
                    family("classify", lm.spec, data=data, labels=s.labels))


def run_classify(lm: ScoringLM, job: ClassifyJob, store: Store, progress: Progress | None = None) -> dict:
    """Score every test example (resuming what the store holds); the result record with
    metrics, provenance and the per-example samples in test order."""
    shots, test, _, skipped = load_job(job)
    s = job.settings
    identity = classify_identity(lm, job, shots, test)
    t0 = time.time()
    info = lm.info()
    # the columns go with the provenance (not the key): the board reads the texts back for its drill-down
    info["columns"] = {"text": job.text_column, "label": job.label_column}
    run = JobRun(store, identity, info, len(test), progress)
    # under torchrun, this rank's reviews (balanced by length; the shots' prefix is
    # computed once per rank)
    mine = [test[i] for i in run.shard(test, [str(e.line) for e in test], [len(e.text) for e in test])]
    with run:
        done = set(run.stored)
        run.tick(sum(str(e.line) in done for e in test))
        by = _by_loglik if s.by == "loglik" else _by_generation
        engine = run.finish(by(lm, job, shots, mine, run, done))
        if not run.main:
            return {}
        samples = run.samples()
        m = classification_report([samples[str(e.line)]["gold"] for e in test],
                                  [samples[str(e.line)]["pred"] for e in test], list(s.labels.values()))
        run.done({k: m[k] for k in ("accuracy", "macro_f1", "n", "unmatched")})
    return {**m, "skipped_empty_text": skipped, "shots": len(shots), "by": s.by, "normalize": s.normalize,
            "template": s.prompt("{text}"), "cost_time": time.time() - t0, "run_id": identity.run_id, "engine": engine,
            "provenance": info, "samples": [{"line": e.line, **samples[str(e.line)]} for e in test]}
