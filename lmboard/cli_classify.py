"""`lmboard eval --task classify`: label classification by log-likelihood or generation."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from lmboard.config import EngineSettings, GenerationSettings, ModelSpec, stable_hash
from lmboard.errors import UsageError


def run_classify(opts: dict, spec: ModelSpec, engine: EngineSettings) -> None:
    from lmboard.cli import load_lm, out, progress_bar
    from lmboard.engine.continuations import LabelItem, continuation_ids, score_labels
    from lmboard.engine.generation import generate_batched
    from lmboard.models.base import GenRequest
    from lmboard.report.exam import ensure_writable
    from lmboard.store import Store
    from lmboard.tasks import classify as C

    if opts["by"] not in ("loglik", "generate"):
        raise UsageError(f"--by must be loglik or generate (got {opts['by']!r})")
    if opts["normalize"] not in ("none", "tokens", "chars"):
        raise UsageError(f"--normalize must be none, tokens or chars (got {opts['normalize']!r})")
    if opts["data"] is None:
        raise UsageError("--data FILE is required for --task classify")
    labels = C.parse_labels(opts["labels"])
    settings = C.ClassifySettings(labels, opts["template"], opts["shots"], opts["by"], opts["normalize"], opts["seed"])
    examples, skipped = C.load_examples(opts["data"], opts["text_column"], opts["label_column"], labels)
    if opts["train"]:
        train, _ = C.load_examples(opts["train"], opts["text_column"], opts["label_column"], labels)
        test = examples
    elif opts["split"] is not None:
        train, test = C.split(examples, opts["split"], opts["seed"])
    else:
        train, test = [], examples
    if opts["test_size"]:
        test = test[: opts["test_size"]]
    if settings.shots and not train:
        raise UsageError("--shots needs training examples: pass --train FILE or --split 0.8")
    shots = C.pick_shots(train, settings)
    out_path = opts["out_dir"] or Path("results") / spec.display_name / "classify"
    ensure_writable(out_path)
    names = list(labels.values())
    store = Store(opts["db"])
    if settings.by == "loglik" and spec.backend == "hf" and spec.dtype == "auto" and spec.load_in is None:
        # Label log-likelihoods sum a full-vocabulary log-softmax over several tokens deep in
        # a long prompt: on SmolLM2 with 4 shots, bfloat16 moves the two labels' margin by up
        # to 0.3 nats and flips a third of ChnSentiCorp's predictions. Exact by default.
        spec = dataclasses.replace(spec, dtype="float32")
    lm = load_lm(spec, opts["quiet"])
    # --by generate: room for the longest label (a CJK character is 2-3 byte-level tokens) and a little more
    gen_tokens = max(len(lm.tokenizer(settings.sep + n, add_special_tokens=False).input_ids) for n in names) + 6
    key = {"gen_tokens": gen_tokens if settings.by == "generate" else None, "model": spec.canonical(), "data": str(Path(opts["data"]).resolve()), "settings": settings.__dict__,
           "shots": [s.line for s in shots], "test": stable_hash([e.line for e in test]), "dtype": lm.dtype_name}
    run_id = f"classify-{stable_hash(key, 12)}"
    store.open_run(run_id, "classify", spec.display_name, key, lm.info())
    done = store.sample_keys(run_id)
    t0 = time.time()
    todo = [e for e in test if str(e.line) not in done]
    engine_stats = None
    with progress_bar(f"classify {spec.display_name}", opts["quiet"]) as update:
        update(len(test) - len(todo), len(test))
        if settings.by == "loglik":
            conts = [settings.sep + n for n in names]
            items = []
            for e in todo:
                prompt = C.render(settings, shots, e.text)
                ctx, lab_ids = continuation_ids(lm.tokenizer, prompt, conts)
                items.append(LabelItem(str(e.line), prompt, ctx, lab_ids))
            gold_of = {str(e.line): e.label for e in todo}
            lab_len = {it.key: [len(x) for x in it.labels] for it in items}
            n_done = len(test) - len(todo)

            def on_item(key: str, lp: list[float]) -> None:
                nonlocal n_done
                if settings.normalize == "tokens":
                    lp = [v / n for v, n in zip(lp, lab_len[key], strict=True)]
                elif settings.normalize == "chars":
                    lp = [v / len(n) for v, n in zip(lp, names, strict=True)]
                pred = names[max(range(len(lp)), key=lp.__getitem__)]
                store.add_samples(run_id, [(key, {"gold": gold_of[key], "pred": pred, "scores": lp})])
                n_done += 1
                update(n_done, len(test))

            engine_stats = score_labels(lm, items, engine, on_item).to_dict() if items else None
        else:
            reqs = [GenRequest(str(e.line), text=C.render(settings, shots, e.text)) for e in todo]
            gs = GenerationSettings(max_new_tokens=gen_tokens, do_sample=False, raw=True, stop=("\n",))
            n = len(test) - len(todo)
            for r in generate_batched(lm, reqs, gs):
                pred = C.match_label(r.output, names)
                store.add_samples(run_id, [(r.key, {"gold": next(e.label for e in todo if str(e.line) == r.key),
                                                    "pred": pred, "answer": r.output})])
                n += 1
                update(n, len(test))
    samples = dict(store.samples(run_id))
    gold = [samples[str(e.line)]["gold"] for e in test]
    pred = [samples[str(e.line)]["pred"] for e in test]
    m = C.metrics(gold, pred, names)
    result = {**m, "skipped_empty_text": skipped, "shots": len(shots), "by": settings.by,
              "normalize": settings.normalize, "template": settings.prompt("{text}"), "cost_time": time.time() - t0,
              "run_id": run_id, "engine": engine_stats, "provenance": lm.info()}
    (out_path / "classify.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    with open(out_path / "samples.jsonl", "w", encoding="utf-8") as f:
        for e in test:
            f.write(json.dumps({"line": e.line, **samples[str(e.line)]}, ensure_ascii=False) + "\n")
    store.finish_run(run_id, {k: m[k] for k in ("accuracy", "macro_f1", "n", "unmatched")})
    if not opts["quiet"]:
        out.print(f"{spec.display_name} {settings.by} {len(shots)}-shot on {m['n']} examples: "
                  f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, unmatched {m['unmatched']}, "
                  f"skipped (empty text) {skipped}", markup=False)
        out.print(f"confusion (gold -> predicted): {json.dumps(m['confusion'], ensure_ascii=False)}", markup=False)
