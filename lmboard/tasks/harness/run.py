"""Running task YAMLs on the LM protocol: every document's prompt (render.py), the model's
``score`` (multiple_choice, loglikelihood) or ``generate`` (generate_until), each answer
stored as it comes (a rerun resumes), then filters and metrics (metrics.py), groups
aggregated, and results in lm-evaluation-harness's shape. One run per task in the store,
keyed by the task's files (the YAML, its includes, its utils.py) and every setting."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmboard.errors import UsageError
from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import GenerationSettings, GenRequest, ScoreRequest, ScoringLM
from lmboard.store import Store
from lmboard.tasks.extract import strip_thinking
from lmboard.tasks.harness import metrics as M
from lmboard.tasks.harness.config import GroupSpec, TaskSpec
from lmboard.tasks.harness.render import FEWSHOT_SEED, HarnessTask, chat_messages, plain
from lmboard.text import stable_hash

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class HarnessSettings:
    limit: int | None = None  # documents per task (the first N, as lm-eval's --limit N)
    shots: int | None = None  # overrides num_fewshot
    chat: bool = False  # the chat template, few-shot examples as alternating turns
    seed: int = FEWSHOT_SEED  # the few-shot sampler's seed
    max_new_tokens: int | None = None  # overrides generation_kwargs.max_gen_toks
    strip_thinking: bool = False  # <think> traces out of answers before the filters

    def key(self) -> dict:
        """What changes the stored answers (traces are taken out when they are read)."""
        return {k: v for k, v in self.__dict__.items() if k != "strip_thinking"}


def leaves(entry: TaskSpec | GroupSpec) -> list[TaskSpec]:
    return [entry] if isinstance(entry, TaskSpec) else [t for m in entry.tasks for t in leaves(m)]


@dataclass
class Prepared:
    """A task ready to run: its documents' prompts and what each request needs."""

    task: HarnessTask
    shots: int
    prompts: list[Any]  # text, or chat messages
    targets: list[Any]
    choices: list[list[str] | None]
    metrics: list[dict]
    filters: list[tuple[str, list]]
    n_docs: int
    strip_thinking: bool = False


def prepare(spec: TaskSpec, settings: HarnessSettings) -> Prepared:
    """Every prompt of a task, before any model runs (a bad template fails here with the row)."""
    task = HarnessTask(spec)
    where = str(task.path)
    metrics, filters = M.metric_list(task.cfg, where), M.build_filters(task.cfg, where)
    n = len(task.docs.rows) if settings.limit is None else min(settings.limit, len(task.docs.rows))
    shots = settings.shots if settings.shots is not None else int(task.cfg.get("num_fewshot") or 0)
    pool = task.pool() if shots else None
    rnd = random.Random(settings.seed)  # one generator over the documents in order, as the harness's sampler
    prompts, targets, choices = [], [], []
    for i in range(n):
        doc, loc = task.docs.rows[i], task.docs.where[i]
        turns = task.turns(i, task.shots(pool, shots, doc, rnd) if pool else [])
        prompts.append(chat_messages(turns, True) if settings.chat else plain(turns))
        targets.append(task.target(doc, loc))
        choices.append(task.choices(doc, loc))
        if task.output_type == "multiple_choice" and not choices[-1]:
            raise UsageError(f"{loc}: a multiple_choice task needs doc_to_choice")
    return Prepared(task, shots, prompts, targets, choices, metrics, filters, n, settings.strip_thinking)


def _pair(lm: ScoringLM, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HF _encode_pair: a context's trailing spaces move to the continuation, the
    continuation's ids are the whole's beyond the context's (no special tokens)."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = lm.encode(context, special=False)
    return ctx, lm.encode(context + continuation, special=False)[len(ctx):]


def _score(lm: ScoringLM, p: Prepared, mine: list[int], run: JobRun, done: set[str]) -> None:
    mc = p.task.output_type == "multiple_choice"
    delim = p.task.target_delimiter if not p.prompts or isinstance(p.prompts[0], str) else ""
    reqs = []
    for i in mine:
        ctx = p.prompts[i] if isinstance(p.prompts[i], str) else lm.render_chat(p.prompts[i])
        conts = [delim + c for c in p.choices[i]] if mc else [str(p.targets[i])]
        pairs = [_pair(lm, ctx, c) for c in conts]
        reqs.append(ScoreRequest(f"{i:06d}", tuple(pairs[0][0]), tuple(tuple(x[1]) for x in pairs)))
    todo = [r for r in reqs if r.key not in done]
    for batch in lm.score(todo, exact=False):
        for s in batch:
            run.add([(s.key, {"lls": s.logprobs, "greedy": s.greedy})])
            run.tick(1)


def _generate(lm: Any, p: Prepared, mine: list[int], run: JobRun, done: set[str], settings: HarnessSettings) -> None:
    kw = dict(p.task.cfg.get("generation_kwargs") or {})
    until = kw.pop("until", [p.task.fewshot_delimiter])
    until = [until] if isinstance(until, str) else list(until)
    max_new = settings.max_new_tokens or int(kw.pop("max_gen_toks", 256))
    repeats = int(p.task.cfg.get("repeats") or 1)
    sample = bool(kw.get("do_sample", False))
    gs = GenerationSettings(max_new_tokens=max_new, do_sample=sample, temperature=kw.get("temperature") if sample
                            else None, top_p=kw.get("top_p") if sample else None, stop=tuple(until), raw=not settings.chat)
    reqs = []
    for i in mine:
        for r in range(repeats):
            st = gs if r == 0 else GenerationSettings(**{**gs.__dict__, "seed": r})
            msgs = tuple(p.prompts[i]) if settings.chat else ()
            reqs.append(GenRequest(f"{i:06d}/{r}", messages=msgs, text=None if settings.chat else p.prompts[i],
                                   settings=st))
    got: dict[str, list] = {}
    for res in lm.generate(reqs, gs, skip=lambda k: k.split("/")[0] in done):
        doc, r = res.key.split("/")
        if doc in done:
            continue
        got.setdefault(doc, [None] * repeats)[int(r)] = res.output
        if all(x is not None for x in got[doc]):
            run.add([(doc, {"resps": got.pop(doc)})])
            run.tick(1)
    if got:  # some repeats of these documents never came back
        raise UsageError(f"{p.task.name}: the backend left {len(got)} documents unanswered")


def identity(lm: ScoringLM, p: Prepared, settings: HarnessSettings) -> Identity:
    files = p.task.spec.source.files
    key = run_key(lm.spec, lm.info().get("dtype"), harness=p.task.name, files=files, settings=settings.key(),
                  config=stable_hash(repr(sorted((k, repr(v)) for k, v in p.task.cfg.items()))),
                  prompts=stable_hash(p.prompts))
    return Identity(run_id("harness", key), "harness", lm.spec.display_name, key,
                    family("harness", lm.spec, task=p.task.name, files=sorted(files)))


def run_task(lm: ScoringLM, p: Prepared, settings: HarnessSettings, store: Store | None,
             progress: Progress | None = None) -> dict | None:
    """One task: stored answers resumed, the rest computed; its result (rank 0) or None."""
    ident = identity(lm, p, settings)
    info = {**lm.info(), "task_files": p.task.spec.source.files}
    run = JobRun(store, ident, info, p.n_docs, progress)
    t0 = time.time()
    with run:
        done = set(run.stored)
        run.tick(sum(f"{i:06d}" in done for i in range(p.n_docs)))
        mine = run.shard(list(range(p.n_docs)), [str(i) for i in range(p.n_docs)], [len(str(x)) for x in p.prompts])
        if p.task.output_type == "generate_until":
            _generate(lm, p, mine, run, done, settings)
        else:
            _score(lm, p, mine, run, done)
        run.finish(None)
        if not run.main:
            return None
        samples = evaluate(p, run.samples())
        summary = summarize(p, samples)
        run.done({"task": p.task.name, "metrics": summary, "n": p.n_docs, "shots": p.shots, "chat": settings.chat})
    return {"task": p.task.name, "run_id": ident.run_id, "metrics": summary, "samples": samples, "prepared": p,
            "provenance": info, "seconds": time.time() - t0, "resumed": bool(done)}


def evaluate(p: Prepared, stored: dict[str, dict]) -> list[dict]:
    """Per document: the filtered answer and each metric, under each filter."""
    names = [m["metric"] for m in p.metrics]
    out = []
    for i in range(p.n_docs):
        s = stored[f"{i:06d}"]
        gold = p.targets[i]
        rec: dict[str, Any] = {"doc_id": i, "target": gold, "prompt": p.prompts[i], "filters": {}}
        if p.task.output_type == "multiple_choice":
            rec["lls"] = s["lls"]
            m = M.choice_metrics(s["lls"], s["greedy"], p.choices[i], gold, names)
            rec["filters"]["none"] = {"filtered": s["lls"], "metrics": m}
        elif p.task.output_type == "loglikelihood":
            rec["lls"] = s["lls"]
            m = {"acc": int(s["greedy"][0]), "perplexity": s["lls"][0]}
            rec["filters"]["none"] = {"filtered": s["lls"][0], "metrics": {k: m[k] for k in names}}
        else:
            rec["resps"] = s["resps"]
            if p.strip_thinking:
                cut = [strip_thinking(r) for r in s["resps"]]
                s = {"resps": [c[0] for c in cut]}
                rec["think_chars"] = sum(c[1] for c in cut)
            if p.choices[i] is not None and isinstance(gold, int):
                gold = p.choices[i][gold]
            for fname, steps in p.filters:
                filtered = M.apply_filters(steps, s["resps"])
                g = gold if isinstance(gold, list) or type(gold) is type(filtered) or isinstance(filtered, list) \
                    else type(filtered)(gold)
                rec["filters"][fname] = {"filtered": filtered, "metrics": M.generation_metrics(filtered, g, p.metrics)}
        out.append(rec)
    return out


def summarize(p: Prepared, samples: list[dict]) -> dict[str, Any]:
    """{"metric,filter": value, "metric_stderr,filter": stderr} as the harness reports them."""
    res: dict[str, Any] = {}
    for fname in samples[0]["filters"] if samples else []:
        for m in p.metrics:
            items = [s["filters"][fname]["metrics"][m["metric"]] for s in samples]
            res[f"{m['metric']},{fname}"] = M.aggregate(m["metric"], items)
            res[f"{m['metric']}_stderr,{fname}"] = M.stderr(m["metric"], items)
    return res


def group_results(entry: GroupSpec, by_task: dict[str, dict]) -> dict[str, dict]:
    """Each group's aggregate (aggregate_metric_list, weighted by size unless told not to)
    with its pooled stderr, as lm-eval's Group.aggregate; nested groups included."""
    import math

    out: dict[str, dict] = {}
    for m in entry.tasks:
        if isinstance(m, GroupSpec):
            out.update(group_results(m, by_task))
    names = [t.name for t in leaves(entry)]
    g: dict[str, Any] = {"alias": entry.alias or entry.name, "name": entry.name}
    for agg in entry.aggregate:
        for key in sorted({k for t in names for k in by_task[t]["metrics"] if k.startswith(agg["metric"] + ",")}):
            err_key = key.replace(",", "_stderr,", 1)
            vals = [(by_task[t]["metrics"][key], by_task[t]["n"], by_task[t]["metrics"].get(err_key)) for t in names
                    if key in by_task[t]["metrics"]]
            sizes = [n if agg.get("weight_by_size", True) else 1 for _, n, _ in vals]
            g[key] = sum(v * s for (v, _, _), s in zip(vals, sizes, strict=True)) / sum(sizes)
            errs = [e for _, _, e in vals]
            if any(not isinstance(e, float) for e in errs):
                g[err_key] = "N/A"
            elif agg.get("weight_by_size", True):
                n = [x for _, x, _ in vals]
                var = sum((k - 1) * e ** 2 * k for k, e in zip(n, errs, strict=True)) / (sum(n) - len(n))
                g[err_key] = math.sqrt(var / sum(n))
            else:
                g[err_key] = math.sqrt(sum(e ** 2 for e in errs)) / len(errs)
    out[entry.name] = g
    return out
