"""Running a classification: examples -> prompts -> engine (log-likelihood or generation)
-> store -> metrics. Every review is stored as soon as it is scored; a rerun resumes."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from lmboard.engine import LabelItem, continuation_ids, generate_batched, score_labels
from lmboard.errors import UsageError
from lmboard.lm import GenerationSettings, GenRequest, LocalLM, ModelSpec
from lmboard.metrics.classification import classification_report
from lmboard.parallel import broadcast, world
from lmboard.store import Store
from lmboard.tasks.classify import ClassifyJob, Example, load_examples, match_label, pick_shots, render, split
from lmboard.tasks.runs import describe, family, run_id, run_key
from lmboard.tasks.sharded import Sink, shard_of
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


def _generation_tokens(lm: LocalLM, job: ClassifyJob) -> int:
    """Room for the longest label (a CJK character is 2-3 byte-level tokens) and a little more."""
    return max(len(lm.encode(job.settings.sep + n, special=False)) for n in job.settings.labels.values()) + 6


def _by_loglik(lm: LocalLM, job: ClassifyJob, shots: list[Example], test: list[Example],
               record: Callable[[str, dict], None], done: Callable[[str], bool]) -> dict | None:
    """Every review is planned (a resumed run batches as an uninterrupted one); stored ones are skipped."""
    s, names = job.settings, list(job.settings.labels.values())
    if all(done(str(e.line)) for e in test):
        return None
    items = []
    for e in test:
        prompt = render(s, shots, e.text)
        ctx, lab_ids = continuation_ids(lm, prompt, [s.sep + n for n in names])
        items.append(LabelItem(str(e.line), prompt, ctx, lab_ids))
    gold_of = {str(e.line): e.label for e in test}
    lab_len = {it.key: [len(x) for x in it.labels] for it in items}

    def on_item(key: str, lp: list[float]) -> None:
        if s.normalize == "tokens":
            lp = [v / n for v, n in zip(lp, lab_len[key], strict=True)]
        elif s.normalize == "chars":
            lp = [v / len(n) for v, n in zip(lp, names, strict=True)]
        record(key, {"gold": gold_of[key], "pred": names[max(range(len(lp)), key=lp.__getitem__)], "scores": lp})

    return score_labels(lm, items, job.engine, on_item, skip=done).to_dict()


def _by_generation(lm: LocalLM, job: ClassifyJob, shots: list[Example], test: list[Example],
                   record: Callable[[str, dict], None], done: Callable[[str], bool]) -> None:
    """Batches planned over the whole test side (a resumed run batches as an uninterrupted one)."""
    names = list(job.settings.labels.values())
    gold_of = {str(e.line): e.label for e in test}
    reqs = [GenRequest(str(e.line), text=render(job.settings, shots, e.text)) for e in test]
    gs = GenerationSettings(max_new_tokens=_generation_tokens(lm, job), do_sample=False, raw=True, stop=("\n",))
    for r in generate_batched(lm, reqs, gs, skip=done):
        if done(r.key):
            continue
        record(r.key, {"gold": gold_of[r.key], "pred": match_label(r.output, names), "answer": r.output})


def classify_identity(lm: LocalLM, job: ClassifyJob, shots: list[Example], test: list[Example]) -> tuple[str, dict, str]:
    s = job.settings
    data = str(Path(job.data).resolve())
    key = run_key(lm.spec, lm.dtype_name, data=data, settings=s.__dict__, shots=[x.line for x in shots],
                  test=stable_hash([e.line for e in test]),
                  gen_tokens=_generation_tokens(lm, job) if s.by == "generate" else None)
    return run_id("classify", key), key, family("classify", lm.spec, data=data, labels=s.labels)


def run_classify(lm: LocalLM, job: ClassifyJob, store: Store, progress: Progress | None = None) -> dict:
    """Score every test example (resuming what the store holds); the result record with
    metrics, provenance and the per-example samples in test order."""
    shots, test, _, skipped = load_job(job)
    s = job.settings
    rid, key, fam = classify_identity(lm, job, shots, test)
    t0 = time.time()
    w, info, n_done = world(), lm.info(), [0]

    def tick(k: int) -> None:
        n_done[0] += k
        if progress:
            progress(n_done[0], len(test))

    sink = Sink(store, rid, tick)
    # under torchrun, this rank's reviews (balanced by length; the shots' prefix is
    # computed once per rank)
    mine = [test[i] for i in shard_of(test, [str(e.line) for e in test], info, [len(e.text) for e in test])]
    with store.run_lock(rid) if w.main else nullcontext():
        if w.main:
            store.say(describe(store.open_run(rid, "classify", lm.spec.display_name, key, info, fam), rid))
        done = broadcast(store.sample_keys(rid) if w.main else None)
        tick(sum(str(e.line) in done for e in test))

        def record(k: str, sample: dict) -> None:
            sink.add("final", [(k, sample)])
            sink.tick(1)

        by = _by_loglik if s.by == "loglik" else _by_generation
        engine = sink.finish_dict(by(lm, job, shots, mine, record, done.__contains__))
        if not w.main:
            return {}
        samples = dict(store.samples(rid))
        m = classification_report([samples[str(e.line)]["gold"] for e in test],
                                  [samples[str(e.line)]["pred"] for e in test], list(s.labels.values()))
        store.finish_run(rid, {k: m[k] for k in ("accuracy", "macro_f1", "n", "unmatched")})
    return {**m, "skipped_empty_text": skipped, "shots": len(shots), "by": s.by, "normalize": s.normalize,
            "template": s.prompt("{text}"), "cost_time": time.time() - t0, "run_id": rid, "engine": engine,
            "provenance": info, "samples": [{"line": e.line, **samples[str(e.line)]} for e in test]}
