"""Judging generator outputs against a reference and building the board as it goes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lmboard.errors import UsageError
from lmboard.judge.board import (
    GeneratorResult,
    build_board,
    match,
    read_outputs,
    read_reference,
    write_board_csv,
)
from lmboard.judge.judges import Comparison, Judge, JudgeSettings
from lmboard.metrics.bootstrap import bootstrap_mean_ci
from lmboard.parallel import broadcast, world
from lmboard.peak import peak_memory
from lmboard.store import Store
from lmboard.text import stable_hash


def judge_outputs(
    files: list[Path],
    reference: Path | None,
    settings: JudgeSettings,
    store: Store,
    leaderboard: Path,
    n_boot: int,
    load: Callable,
    progress: Callable,
) -> tuple[list[dict], dict]:
    outputs = read_outputs(files)
    ref_name, ref = read_reference(reference) if reference else ("none", {})
    missing: dict[str, dict[str, list[str]]] = {}
    plan = []
    for gen, outs in outputs.items():
        if settings.mode == "pairwise":
            both, only_out, only_ref = match(outs, ref)
            if not both:
                raise UsageError(f"{gen}: no instruction in common with the reference {reference}")
            if only_out or only_ref:
                missing[gen] = {"not_in_reference": only_out, "not_in_outputs": only_ref}
        else:
            both = list(outs)
        plan.append((gen, [Comparison(gen, i, outs[i], ref.get(i)) for i in both]))
    missing_file = leaderboard.with_suffix(".missing.json")
    if missing and world().main:
        missing_file.parent.mkdir(parents=True, exist_ok=True)
        missing_file.write_text(json.dumps(missing, indent=2, ensure_ascii=False), encoding="utf-8")
    judge = Judge(load(settings.spec), settings, store)
    if world().parallel:  # every rank judges its share into the cache; rank 0 then reads it all
        _judge_sharded(judge, [c for _, comps in plan for c in comps], store, progress)
        if not world().main:
            return [], {}
    results: list[GeneratorResult] = []
    single_rows: list[dict] = []
    judged: dict[str, list[dict]] = {}
    for gen, comps in plan:
        with progress(f"judge {gen}") as update:
            recs = judge.run(comps, update)
        judged[gen] = recs
        if settings.mode == "single":
            single_rows.append(_single_row(gen, recs, n_boot, settings.seed, settings.spec.display_name))
            _write_single(single_rows, leaderboard)
            continue
        cons = [r["consistent"] for r in recs if "consistent" in r]
        results.append(GeneratorResult(
            gen, [c.instruction for c in comps], [c.output for c in comps], [c.reference or "" for c in comps],
            [r["preference"] for r in recs], judge=settings.spec.display_name,
            consistency=(sum(cons) / len(cons)) if cons else None,
        ))
        board = build_board(results, settings.seed, n_boot)
        write_board_csv(board, leaderboard)  # rows updated generator by generator
    info = {
        "judge": settings.spec.display_name,
        "reference": ref_name,
        "judge_requests": judge.calls,
        "missing": {g: {k: len(v) for k, v in m.items()} for g, m in missing.items()},
        "missing_file": str(missing_file),
    }
    if settings.mode == "single":
        _record_runs(store, settings, ref_name, plan, {r["name"]: r for r in single_rows}, judged)
        return single_rows, info
    board = build_board(results, settings.seed, n_boot)
    _record_runs(store, settings, ref_name, plan, {r["name"]: r for r in board}, judged)
    return board, info


def _judge_sharded(judge: Judge, comps: list[Comparison], store: Store | None, progress: Callable) -> None:
    """Under torchrun: this rank's comparisons (balanced by text length) judged into the
    cache (on rank 0 the store, which also takes the other ranks' judgments as they
    come); rank 0 waits for every rank's last."""
    from lmboard.job import Identity, JobRun, JudgmentCache, shard_of

    w = world()
    jobs = judge.jobs(comps)
    keys = sorted({j[3] for j in jobs})
    snapshot = broadcast({k: v for k in keys if (v := store.get_judgment(k)) is not None} if w.main else None)
    mine = [comps[i] for i in shard_of(comps, [f"{c.generator}/{c.instruction}" for c in comps], {},
                                        [len(c.output) + len(c.reference or "") + len(c.instruction) for c in comps])]
    with progress(f"judge {len(comps)} comparisons") as update:
        seen = [0]  # this rank's done
        # the relay to rank 0 and the whole job's progress (the judgments go to the cache, not to a run)
        relay = JobRun(store, Identity("", "judge", judge.settings.spec.display_name, {}), {}, len(jobs), update)

        def mine_done(done: int, total: int) -> None:
            relay.tick(done - seen[0])
            seen[0] = done

        cache = JudgmentCache(store if w.main else None, relay, snapshot)
        real, judge.store = judge.store, cache
        try:
            judge.run(mine, mine_done)
        finally:
            judge.store = real
        relay.finish({})


def _record_runs(store: Store, settings: JudgeSettings, reference: str, plan: list, rows: dict[str, dict],
                 judged: dict[str, list[dict]]) -> None:
    """One finished ``judge`` run per generator (the board reads them): its leaderboard row
    as the summary, each judged pair (instruction, both outputs, preference) as a sample."""
    for gen, comps in plan:
        if gen not in rows:
            continue
        config = {"generator": gen, "judge": settings.spec.canonical(), "reference": reference,
                  "mode": settings.mode, "lang": settings.lang, "seed": settings.seed,
                  "both_orders": settings.both_orders}
        rid = f"judge-{stable_hash(config, 12)}"
        store.open_run(rid, "judge", gen, config, {"judge_spec": settings.spec.to_dict()})
        samples = []
        for k, (c, rec) in enumerate(zip(comps, judged[gen], strict=True)):
            samples.append((f"{k:06d}", {"instruction": c.instruction, "output": c.output, "reference": c.reference,
                                         **{x: rec.get(x) for x in ("preference", "score") if x in rec}}))
        store.add_samples(rid, samples)
        store.finish_run(rid, {**rows[gen], "judge": settings.spec.display_name, "reference": reference},
                         peak_memory())


def _single_row(gen: str, recs: list[dict], n_boot: int, seed: int, judge: str) -> dict:
    scores = np.array([r["score"] for r in recs if r["score"] is not None], dtype=float)
    lo, hi = bootstrap_mean_ci(scores, n_boot, seed)
    mean = float(scores.mean()) if len(scores) else math.nan
    return {"name": gen, "mean": mean, "ci_low": lo, "ci_high": hi, "n": int(len(scores)),
            "n_invalid": sum(1 for r in recs if r["score"] is None), "judge": judge}


def _write_single(rows: list[dict], path: Path) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "mean_score", "ci_low", "ci_high", "n_total", "n_invalid", "judge"])
        for r in sorted(rows, key=lambda r: -r["mean"] if not math.isnan(r["mean"]) else 0):
            w.writerow([r["name"], r["mean"], r["ci_low"], r["ci_high"], r["n"], r["n_invalid"], r["judge"]])


def record_annotations(store: Store, results: list[GeneratorResult], board: list[dict], files: list[Path]) -> list[str]:
    """A board built from annotation files, stored as one finished ``judge`` run per
    generator (the annotator as the judge, generator_1 as the reference), so that
    ``lmboard board`` shows it; keyed by the files' contents: importing them again changes
    nothing. Returns the run ids."""
    import hashlib

    digest = hashlib.sha256(b"".join(hashlib.sha256(Path(f).read_bytes()).digest() for f in sorted(map(str, files)))
                            ).hexdigest()
    rows, ids = {r["name"]: r for r in board}, []
    for r in results:
        config = {"generator": r.name, "judge": r.judge, "reference": r.reference, "mode": "annotations",
                  "files": digest[:16]}
        rid = f"judge-{stable_hash(config, 12)}"
        store.open_run(rid, "judge", r.name, config, {"judge_spec": {"annotator": r.judge},
                                                      "annotations": [str(Path(f).resolve()) for f in files]})
        store.add_samples(rid, [(f"{k:06d}", {"instruction": i, "output": o, "reference": ref, "preference": p})
                                for k, (i, o, ref, p) in enumerate(zip(r.instructions, r.outputs, r.references,
                                                                       r.preferences, strict=True))])
        store.finish_run(rid, {**rows[r.name], "judge": r.judge, "reference": r.reference})
        ids.append(rid)
    return ids
