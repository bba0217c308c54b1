"""Running ShopBench: rows -> routes -> the model's ``generate`` (or ``score``: option
log-likelihoods for multiple choice) -> store -> parsers -> the kit's metrics.

The store holds each raw answer the moment it is produced (a killed run loses at most
the answers in flight; the same command resumes). Parsing and scoring happen after, from
the stored answers: ``--parse`` is not part of the run's identity, so re-scoring with the
other parser reruns no model. Generation runs batched (the kit's batch_predict batches by
task type): each request carries its route's settings, and the hf backend decodes every
route's rows in one continuous-batching job,
each row with its route's settings, so one route's short answers leave room for another's
long ones and shared prompt starts run once. In float32 an answer depends on its prompt,
not on its batch-mates (up to float rounding where a shared start ends, which the other
prompts decide), so a resumed run answers as an uninterrupted one; in bfloat16 the
answers that came close to a tie are float32's (``exact``: the hf backend's recheck) and
the others can move with their batch-mates as the README says. Endpoints answer one
route at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lmboard.faults import fault
from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import (
    LM,
    WORK_GREEDY,
    GenRequest,
    ModelSpec,
    Scored,
    ScoreRequest,
    ScoringLM,
    continuation_ids,
)
from lmboard.metrics import embedders as emb
from lmboard.metrics.shopbench import (
    EMBEDDING_METRICS,
    aggregate,
    check_metric_packages,
    score_rows,
    warm_imports,
)
from lmboard.store import Store
from lmboard.tasks.routes import DEFAULT_ROUTES, Route
from lmboard.tasks.shopbench import (
    Routed,
    ShopBenchSettings,
    load_responses,
    load_rows,
    mc_options,
    route_rows,
    select,
)
from lmboard.tasks.shopbench_parse import OFFICIAL_VERSION, parse
from lmboard.text import stable_hash

Progress = Callable[[int, int], None]


@dataclass
class Prepared:
    routed: list[Routed]
    responses: dict[int, str] | None
    data_hash: str


def prepare(s: ShopBenchSettings) -> Prepared:
    """Rows, routes, metric packages, embedders and responses, validated before any model loads."""
    rows = select(load_rows(s.data), s.tasks)
    routed = route_rows(rows, [*s.routes, *DEFAULT_ROUTES], s.data)
    metrics = {r.metric for r in rows}
    check_metric_packages(metrics)
    for m in metrics & set(EMBEDDING_METRICS):
        emb.resolve(m, s.embedders)
    responses = load_responses(s.responses, rows) if s.responses else None
    return Prepared(routed, responses, stable_hash(Path(s.data).read_bytes()))


def _loglik_rows(s: ShopBenchSettings, routed: list[Routed]) -> list[Routed]:
    return [x for x in routed if s.mc_by == "loglik" and x.parser == "multichoice"]


def identity(lm: LM | None, spec: ModelSpec, s: ShopBenchSettings, p: Prepared, info: dict) -> Identity:
    """What of the backend can move its greedy answers (a reduced-precision model's recheck
    margin) it says itself; given responses run no model."""
    routes = [r.to_dict() for r in (*s.routes, *DEFAULT_ROUTES)]
    key = run_key(spec, info.get("dtype"), data=str(Path(s.data).resolve()), data_hash=p.data_hash, tasks=list(s.tasks),
                  routes=routes, mc_by=s.mc_by, **(lm.run_identity(WORK_GREEDY) if lm is not None else {}),
                  responses=stable_hash(sorted(p.responses.items())) if p.responses is not None else None)
    return Identity(run_id("shopbench", key), "shopbench", spec.display_name, key,
                    family("shopbench", spec, data=str(Path(s.data).resolve())))


def _by_loglik(lm: ScoringLM, s: ShopBenchSettings, todo: list[Routed], run: JobRun, done: set[str]) -> dict | None:
    """Multiple choice by the log-likelihood of each option number after the routed prompt."""
    if not todo:
        return None
    reqs, options = [], {}
    for x in todo:
        req = x.route.request(str(x.row.index), x.fields)
        text, special = _render(lm, req, not x.route.chat)
        # A prompt ending in a space ("Answer: ") gives the space to the option, as
        # lm-evaluation-harness does: " 1" is one token, a trailing " " then "1" is two.
        stripped = text.rstrip(" ")
        opts = mc_options(x.row.prompt)
        ctx, labs = continuation_ids(lm, stripped, [text[len(stripped):] + o for o in opts], special)
        reqs.append(ScoreRequest(req.key, tuple(ctx), tuple(map(tuple, labs))))
        options[req.key] = opts
    scoring = lm.score(reqs, stored={k: Scored(k) for k in done})
    for batch in scoring:
        for r in batch:
            opts = options[r.key]
            best = max(range(len(r.logprobs)), key=r.logprobs.__getitem__)
            record(run, done, r.key, {"response": opts[best], "by": "loglik", "options": opts, "loglik": r.logprobs})
    return scoring.stats


def _render(lm: ScoringLM, req: GenRequest, raw: bool) -> tuple[str, bool]:
    """(the prompt as the model sees it, whether the tokenizer adds its special tokens):
    a chat route through the model's chat template (which holds them already)."""
    if raw:
        return req.text or "", True
    return lm.render_chat(req.messages), False


def _by_generation(lm: LM, todo: list[Routed], run: JobRun, done: set[str], concurrency: int) -> None:
    """Each route's rows with its own settings (in one decode job where the backend can:
    a route's short answers leave room for another's long ones); greedy answers the
    full-precision model's where the backend can check them (``exact``)."""
    groups: dict[Route, list[Routed]] = {}  # by route (a user's route may share a built-in's name)
    for x in todo:
        groups.setdefault(x.route, []).append(x)
    reqs = [replace(route.request(str(x.row.index), x.fields), settings=route.settings())
            for route, group in groups.items() for x in group]
    if not reqs:
        return
    for r in lm.generate(reqs, reqs[0].settings, concurrency, skip=done.__contains__, exact=True):
        if r.key in done:
            continue  # a batch with one answer left runs whole: the others are stored
        fault("generate.result")
        record(run, done, r.key, {"response": r.output, "by": "generate", "prompt_tokens": r.prompt_tokens,
                                  "output_tokens": r.output_tokens, "finish_reason": r.finish_reason,
                                  "latency_s": r.latency_s, "error": r.error, **(r.note or {})})


def record(run: JobRun, done: set[str], key: str, sample: dict) -> None:
    run.add([(key, sample)])
    done.add(key)
    run.tick(1)


def run_shopbench(lm: LM | None, spec: ModelSpec, s: ShopBenchSettings, store: Store | None,
                  progress: Progress | None = None,
                  prepared: Prepared | None = None, concurrency: int = 8) -> dict:
    """Answer what the store does not hold yet (or take ``--responses``), then parse and score."""
    t0 = time.time()
    p = prepared or prepare(s)
    info = lm.info() if lm is not None else {"model": spec.to_dict(), "source": "responses"}
    ident = identity(lm, spec, s, p, info)
    run = JobRun(store, ident, info, len(p.routed), progress)
    # under torchrun, this rank's rows, balanced by prompt and answer tokens
    weights = [len(x.row.prompt) // 4 + x.route.settings().max_new_tokens for x in p.routed]
    mine = [p.routed[i] for i in run.shard(p.routed, [str(x.row.index) for x in p.routed], weights)]
    with run:
        done = set(run.stored)
        run.tick(len(done & {str(x.row.index) for x in p.routed}))
        engine, t_gen = None, time.time()
        if p.responses is not None:
            if run.main:
                run.add([(str(i), {"response": r, "by": "responses"}) for i, r in p.responses.items()])
        else:
            assert lm is not None
            if run.main:
                warm_imports({x.row.metric for x in p.routed})
            ll = _loglik_rows(s, mine)
            ll_keys = {x.row.index for x in ll}
            engine = _by_loglik(lm, s, ll, run, done)  # type: ignore[arg-type]
            _by_generation(lm, [x for x in mine if x.row.index not in ll_keys], run, done, concurrency)
        engine = run.finish(engine)
        if not run.main:
            return {}
        t_score = time.time()
        result = score(p.routed, run.samples(), s)
        old = (store.run(ident.run_id) or {}).get("summary") or {}
        run.done({**old, s.parse: {"overall": result["overall"], "n": len(p.routed)}})
    timing = {"answer_s": t_score - t_gen, "score_s": time.time() - t_score}  # answering: what this run computed
    return {**result, "run_id": ident.run_id, "resumed": run.resumed, "model": spec.display_name,
            "cost_time": time.time() - t0, "timing": timing, "engine": engine,
            "provenance": {**info, "parse": s.parse, "parser_version": OFFICIAL_VERSION,
                           "mc_by": s.mc_by, "routes_file": s.routes_file,
                           "routes": [r.to_dict() for r in (*s.routes, *DEFAULT_ROUTES)],
                           "data": str(s.data), "data_hash": p.data_hash, "seed": 0}}


def score(routed: list[Routed], samples: dict[str, dict], s: ShopBenchSettings) -> dict:
    """Parse every stored answer with ``s.parse`` and score it with its row's metric."""
    parsed = [parse(samples[str(x.row.index)]["response"], x.parser, s.parse) for x in routed]
    embed = emb.Embedders(s.embedders)
    scores = score_rows([x.row.metric for x in routed], parsed, [x.row.truth for x in routed], embed)
    rows = []
    for x, ans, sc in zip(routed, parsed, scores, strict=True):
        smp = samples[str(x.row.index)]
        rows.append({"index": x.row.index, "task": x.row.task, "type": x.row.type, "metric": x.row.metric,
                     "track": x.row.track, "route": x.route.name, "parser": x.parser, "by": smp.get("by"),
                     "response": smp["response"], "parsed": ans, "truth": x.row.truth,
                     "score": list(sc) if isinstance(sc, tuple) else float(sc),
                     **{k: smp[k] for k in ("options", "loglik", "recheck") if k in smp}})
    agg = aggregate([{**r, "score": tuple(r["score"]) if isinstance(r["score"], list) else r["score"]} for r in rows])
    return {**agg, "parse": s.parse, "mc_by": s.mc_by, "embedders": embed.paths, "samples": rows}
