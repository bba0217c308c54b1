"""Running ShopBench: rows -> routes -> engines (generation, or option log-likelihoods for
multiple choice) -> store -> parsers -> the kit's metrics.

The store holds each raw answer the moment it is produced (a killed run loses at most
the answers in flight; the same command resumes). Parsing and scoring happen after, from
the stored answers: ``--parse`` is not part of the run's identity, so re-scoring with the
other parser reruns no model. Generation runs batched (the kit's batch_predict batches by
task type): on a local model every route's rows decode in one continuous-batching job,
each row with its route's settings, so one route's short answers leave room for another's
long ones and shared prompt starts run once. In float32 an answer depends on its prompt,
not on its batch-mates (up to float rounding where a shared start ends, which the other
prompts decide), so a resumed run answers as an uninterrupted one; in bfloat16 the
answers that came close to a tie are float32's (the recheck, engine/continuous.py) and
the others can move with their batch-mates as the README says. Endpoints answer one
route at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from lmboard.engine import GEN_RECHECK, LabelItem, continuation_ids, generate_groups, render, score_labels
from lmboard.faults import fault
from lmboard.lm import LM, LocalLM, ModelSpec
from lmboard.metrics import embedders as emb
from lmboard.metrics.shopbench import (
    EMBEDDING_METRICS,
    aggregate,
    check_metric_packages,
    score_rows,
    warm_imports,
)
from lmboard.parallel import broadcast, world
from lmboard.store import Store
from lmboard.tasks.routes import DEFAULT_ROUTES, Route
from lmboard.tasks.runs import describe, family, run_id, run_key
from lmboard.tasks.sharded import Sink, shard_of
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


def identity(spec: ModelSpec, dtype: str | None, s: ShopBenchSettings, p: Prepared) -> tuple[str, dict, str]:
    routes = [r.to_dict() for r in (*s.routes, *DEFAULT_ROUTES)]
    key = run_key(spec, dtype, data=str(Path(s.data).resolve()), data_hash=p.data_hash, tasks=list(s.tasks),
                  routes=routes, mc_by=s.mc_by, gen_recheck=gen_recheck(s) if dtype != "float32" else None,
                  responses=stable_hash(sorted(p.responses.items())) if p.responses is not None else None)
    return run_id("shopbench", key), key, family("shopbench", spec, data=str(Path(s.data).resolve()))


def _by_loglik(lm: LocalLM, s: ShopBenchSettings, todo: list[Routed], record, done) -> dict | None:
    """Multiple choice by the log-likelihood of each option number after the routed prompt."""
    if not todo:
        return None
    items, options = [], {}
    for x in todo:
        req = x.route.request(str(x.row.index), x.fields)
        text, special = render(lm, req, x.route.settings())
        # A prompt ending in a space ("Answer: ") gives the space to the option, as
        # lm-evaluation-harness does: " 1" is one token, a trailing " " then "1" is two.
        stripped = text.rstrip(" ")
        opts = mc_options(x.row.prompt)
        conts = [text[len(stripped):] + o for o in opts]
        ctx, labs = continuation_ids(lm, stripped, conts, special)
        items.append(LabelItem(req.key, stripped, ctx, labs))
        options[req.key] = opts

    def on_item(key: str, lp: list[float]) -> None:
        opts = options[key]
        best = max(range(len(lp)), key=lp.__getitem__)
        record(key, {"response": opts[best], "by": "loglik", "options": opts, "loglik": lp})

    return score_labels(lm, items, s.engine, on_item, skip=done).to_dict()


def gen_recheck(s: ShopBenchSettings) -> float:
    """The margin under which a greedy answer decoded in bfloat16 is decoded again in
    float32 (engine/continuous.py): ``--recheck-margin``, or GEN_RECHECK for auto."""
    return GEN_RECHECK if s.engine.recheck_margin is None else s.engine.recheck_margin


def _by_generation(lm: LM, todo: list[Routed], record, done, concurrency: int, recheck: float) -> None:
    """Each route's rows with its own settings, all routes in one decode job where the
    model runs locally (a route's short answers leave room for another's long ones)."""
    groups: dict[Route, list[Routed]] = {}  # by route (a user's route may share a built-in's name)
    for x in todo:
        groups.setdefault(x.route, []).append(x)
    sets = [([route.request(str(x.row.index), x.fields) for x in group], route.settings())
            for route, group in groups.items()]
    for r in generate_groups(lm, sets, skip=done, concurrency=concurrency, recheck=recheck):
        if done(r.key):
            continue  # a batch with one answer left runs whole: the others are stored
        fault("generate.result")
        record(r.key, {"response": r.output, "by": "generate", "prompt_tokens": r.prompt_tokens,
                       "output_tokens": r.output_tokens, "finish_reason": r.finish_reason,
                       "latency_s": r.latency_s, "error": r.error,
                       **({"recheck": "float32"} if r.settings.get("recheck") else {})})


def run_shopbench(lm: LM | None, spec: ModelSpec, s: ShopBenchSettings, store: Store | None,
                  progress: Progress | None = None,
                  prepared: Prepared | None = None, concurrency: int = 8) -> dict:
    """Answer what the store does not hold yet (or take ``--responses``), then parse and score."""
    t0 = time.time()
    p = prepared or prepare(s)
    info = lm.info() if lm is not None else {"model": spec.to_dict(), "source": "responses"}
    rid, key, fam = identity(spec, info.get("dtype"), s, p)
    total = len(p.routed)
    w, n = world(), [0]

    def tick(k: int) -> None:
        n[0] += k
        if progress:
            progress(n[0], total)

    sink = Sink(store, rid, tick)
    # under torchrun, this rank's rows, balanced by prompt and answer tokens
    weights = [len(x.row.prompt) // 4 + x.route.settings().max_new_tokens for x in p.routed]
    mine = [p.routed[i] for i in shard_of(p.routed, [str(x.row.index) for x in p.routed], info, weights)]
    with store.run_lock(rid) if w.main else nullcontext():
        opened = store.open_run(rid, "shopbench", spec.display_name, key, info, fam) if w.main else None
        if w.main:
            store.say(describe(opened, rid))
        done = broadcast(store.sample_keys(rid) if w.main else None)
        tick(len(done & {str(x.row.index) for x in p.routed}))

        def record(k: str, sample: dict) -> None:
            sink.add("final", [(k, sample)])
            done.add(k)
            sink.tick(1)

        engine, t_gen = None, time.time()
        if p.responses is not None:
            if w.main:
                store.add_samples(rid, [(str(i), {"response": r, "by": "responses"}) for i, r in p.responses.items()])
        else:
            assert lm is not None
            if w.main:
                warm_imports({x.row.metric for x in p.routed})
            ll = _loglik_rows(s, mine)
            ll_keys = {x.row.index for x in ll}
            engine = _by_loglik(lm, s, ll, record, done.__contains__)  # type: ignore[arg-type]
            _by_generation(lm, [x for x in mine if x.row.index not in ll_keys], record, done.__contains__, concurrency,
                           gen_recheck(s))
        engine = sink.finish_dict(engine)
        if not w.main:
            return {}
        t_score = time.time()
        result = score(p.routed, dict(store.samples(rid)), s)
        old = (store.run(rid) or {}).get("summary") or {}
        store.finish_run(rid, {**old, s.parse: {"overall": result["overall"], "n": total}})
    timing = {"answer_s": t_score - t_gen, "score_s": time.time() - t_score}  # answering: what this run computed
    return {**result, "run_id": rid, "resumed": opened.resumed, "model": spec.display_name, "cost_time": time.time() - t0,
            "timing": timing, "engine": engine, "provenance": {**info, "parse": s.parse, "parser_version": OFFICIAL_VERSION,
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
