"""ShopBench end to end on SmolLM2 and the 96-row development set: generation by route,
multiple choice by log-likelihood, re-scoring with the other parser without a model,
--responses giving the same scores, and a killed run resumed by the same command."""

import json
import signal
from pathlib import Path

import pytest

from helpers import DATA, lmboard, run_cli
from lmboard.lm import ModelSpec, continuation_ids
from lmboard.models.engine.continuations import label_logprobs
from lmboard.models.engine.genbase import render
from lmboard.models.hf_load import choose_dtype
from lmboard.store import Store
from lmboard.tasks.shopbench import ShopBenchSettings, mc_options
from lmboard.tasks.shopbench_run import prepare, run_shopbench

DEV = DATA / "shopbench" / "development.json"
SUBSET = ("task2", "task4", "task12")  # multiple choice, NER, ranking: 16 rows
# every task type and every metric of the kit (37 of the 96 rows: the bench runs them all)
EVERY_METRIC = ("task1", "task2", "task3", "task4", "task6", "task12", "task17")


def run(lm, store, **kw):
    s = ShopBenchSettings(DEV, **kw)
    return run_shopbench(lm, lm.spec if lm is not None else ModelSpec("hf", "x"), s, store)


def read(out: Path) -> tuple[dict, list[dict]]:
    return (json.loads((out / "scores.json").read_text()),
            [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()])


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory):
    """The development set's tasks of every type and metric, through the command line, at
    the model's default dtype."""
    tmp = tmp_path_factory.mktemp("sb")
    r = run_cli("eval", "smollm2", "--task", "shopbench", "--data", str(DEV), "--tasks", ",".join(EVERY_METRIC),
                "--db", str(tmp / "db"), "--out", str(tmp / "out"))
    assert r.returncode == 0, r.stderr
    return tmp, r, *read(tmp / "out")


def test_development_set_end_to_end(dev_run):
    tmp, r, result, samples = dev_run
    assert "overall" in r.stdout and "task17" in r.stdout and "labelled bleu" in r.stdout
    lines = [json.loads(x) for x in DEV.read_text().splitlines() if x.strip()]  # the kit's JSON Lines
    rows = [i for i, x in enumerate(lines) if x["task_name"] in EVERY_METRIC]
    assert len(samples) == len(rows) == 37 and [s["index"] for s in samples] == rows
    assert len(result["tasks"]) == 7 and sum(t["n"] for t in result["tasks"]) == 37
    assert {t["type"] for t in result["tasks"]} == {"multiple-choice", "generation", "retrieval", "ranking",
                                                    "named_entity_recognition"}
    assert all(s["by"] == "generate" and isinstance(s["response"], str) for s in samples)
    assert any(s["response"].strip() for s in samples if s["type"] == "generation")
    for t in result["tasks"]:
        assert 0.0 <= t["score"] <= 1.0, t
    t17 = next(t for t in result["tasks"] if t["task"] == "task17")
    assert t17["metric"] == "bleu" and t17["row_metrics"] == ["bleu", "jp-bleu"] and "note" in t17
    assert result["overall"] == pytest.approx(sum(t["score"] for t in result["tasks"]) / 7)
    assert set(result["tracks"]) == {s["track"] for s in samples}
    assert result["provenance"]["dtype"] == choose_dtype("auto", "cpu") and result["embedders"]["sent-transformer"]
    assert result["parse"] == "official" and len(result["provenance"]["routes"]) == 5


def test_lenient_rescoring_and_responses_reuse_the_answers(dev_run):
    tmp, _, first, samples = dev_run
    # The same command with --parse lenient: the stored answers are parsed again, no model runs.
    again = run_cli("eval", "smollm2", "--task", "shopbench", "--data", str(DEV), "--tasks", ",".join(EVERY_METRIC),
                    "--db", str(tmp / "db"), "--out", str(tmp / "lenient"), "--parse", "lenient", "--quiet")
    assert again.returncode == 0, again.stderr
    lenient, lsamples = read(tmp / "lenient")
    assert lenient["run_id"] == first["run_id"] and lenient["parse"] == "lenient"
    assert [s["response"] for s in lsamples] == [s["response"] for s in samples]
    assert lenient["overall"] >= first["overall"]  # finding the answer anywhere loses none here
    # The answers scored as --responses (no model) give the official scores exactly.
    resp = tmp / "r.jsonl"
    resp.write_text("".join(json.dumps({"index": x["index"], "response": x["response"]}) + "\n" for x in samples))
    scored = run(None, Store(tmp / "resp.db"), tasks=EVERY_METRIC, responses=resp)
    assert scored["overall"] == pytest.approx(first["overall"])
    assert [x["score"] for x in scored["samples"]] == [x["score"] for x in samples]


def test_multiple_choice_by_loglik_equals_a_plain_forward(smollm2_fp32, tmp_path):
    store = Store(tmp_path / "db")
    result = run(smollm2_fp32, store, tasks=("task2", "task15"), mc_by="loglik")
    assert [s["by"] for s in result["samples"]] == ["loglik"] * 12
    s = ShopBenchSettings(DEV, tasks=("task2", "task15"), mc_by="loglik")
    for x, sample in zip(prepare(s).routed, result["samples"], strict=True):
        text, special = render(smollm2_fp32, x.route.request("k", x.fields), x.route.settings())
        opts = mc_options(x.row.prompt)
        assert sample["options"] == opts
        ctx, labs = continuation_ids(smollm2_fp32, text.rstrip(" "), [text[len(text.rstrip(" ")):] + o for o in opts],
                                     special)
        ref = label_logprobs(smollm2_fp32, ctx, labs)
        assert sample["loglik"] == pytest.approx(ref, abs=2e-4)
        assert sample["parsed"] == int(opts[max(range(len(ref)), key=ref.__getitem__)])
    assert result["engine"]["batches"] >= 1 and result["engine"]["prefix_tokens_reused"] > 0


def test_killed_run_resumes_to_the_same_answers(tmp_path):
    def args(db: str, out: str) -> list[str]:
        # float32: in bfloat16 an answer can depend on which prompts shared its decode steps (README)
        return ["eval", "smollm2,dtype=float32", "--task", "shopbench", "--data", str(DEV), "--tasks", ",".join(SUBSET),
                "--db", str(tmp_path / db), "--out", str(tmp_path / out), "--quiet"]

    killed = lmboard(*args("db", "out"), env={"LMBOARD_FAULT": "generate.result=6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = Store(tmp_path / "db")
    stored = dict(store.samples(store.runs("shopbench")[0]["id"]))
    assert len(stored) == 5
    resumed = run_cli(*args("db", "out"))
    assert resumed.returncode == 0, resumed.stderr
    scores, samples = read(tmp_path / "out")
    assert len(samples) == 16
    for s in samples:  # what was stored before the kill is kept as it was
        if str(s["index"]) in stored:
            assert s["response"] == stored[str(s["index"])]["response"]
    whole = run_cli(*args("ref.db", "ref"))
    assert whole.returncode == 0, whole.stderr
    ref_scores, ref_samples = read(tmp_path / "ref")
    assert samples == ref_samples
    assert {k: v for k, v in scores.items() if k not in ("run_id", "cost_time", "provenance", "resumed", "engine", "timing")} == \
        {k: v for k, v in ref_scores.items() if k not in ("run_id", "cost_time", "provenance", "resumed", "engine", "timing")}


@pytest.mark.bf16
def test_bfloat16_close_answers_are_float32s(smollm2_fp32):
    """Rows picked for their close calls in bfloat16 (seed 003's routes): with the recheck,
    those whose closest decision fell under the margin get float32's answer (verified in
    one teacher-forced float32 forward, float32 decoding on from its first other
    choice); the rest keep bfloat16's own."""
    from helpers import grouped
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec
    from lmboard.tasks.routes import load_routes

    routes = tuple(load_routes(Path(__file__).parents[2] / "lmboard" / "data" / "shopbench" / "routes_seed003.yaml"))
    pick = [x for x in prepare(ShopBenchSettings(DEV, routes=routes)).routed if x.row.index in (17, 28, 52, 58, 76)]
    groups: dict = {}
    for x in pick:
        groups.setdefault(x.route, []).append(x)
    sets = [([route.request(str(x.row.index), x.fields) for x in rows], route.settings()) for route, rows in groups.items()]
    bf = load_model(parse_model_spec("smollm2,dtype=bfloat16"))
    reqs, any_settings = grouped(sets), sets[0][1]
    fp32 = {r.key: r.output for r in smollm2_fp32.generate(reqs, any_settings)}
    plain = {r.key: r.output for r in bf.generate(reqs, any_settings)}
    checked = {r.key: r for r in bf.generate(reqs, any_settings, exact=True)}  # the default margin
    redone = {k for k, r in checked.items() if r.note == {"recheck": "float32"}}
    assert redone and set(checked) == set(fp32)
    assert {k: checked[k].output for k in redone} == {k: fp32[k] for k in redone}
    assert {k: r.output for k, r in checked.items() if k not in redone} == {k: plain[k] for k in checked if k not in redone}


def test_standard_embedder_pipeline_gives_sentence_transformers_vectors():
    """The sent-transformer metric's model runs on transformers directly (the standard
    Transformer, mean Pooling, Normalize modules): the vectors SentenceTransformer.encode
    gives, on texts that test its steps (padding in a batch, truncation at 256 tokens,
    spaces at the ends, an empty string, Japanese, more texts than one batch)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from lmboard.metrics.embedders import StandardPipeline, packaged_minilm

    path = packaged_minilm()
    fast = StandardPipeline.of(path)
    assert fast is not None and fast.pooling == "mean" and fast.normalize and fast.max_len == 256
    texts = ["a", "", "  padded at both ends  ", "word " * 400, "日本語の商品説明です。", "Shoes, size 9, red."]
    texts += [f"product {i}: " + "cheap " * (i % 7) for i in range(40)]
    ref = SentenceTransformer(str(path), device="cpu", local_files_only=True).encode(texts, batch_size=32)
    got = fast.encode(texts, batch_size=32)
    assert got.shape == ref.shape == (len(texts), 384)
    assert np.abs(got - ref).max() < 1e-5


def test_other_embedder_folders_go_through_sentence_transformers(tmp_path):
    import shutil

    from lmboard.metrics.embedders import StandardPipeline, packaged_minilm

    src = packaged_minilm()
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    assert StandardPipeline.of(dst) is not None
    cfg = json.loads((dst / "1_Pooling" / "config.json").read_text())
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(cfg | {"pooling_mode_mean_sqrt_len_tokens": True}))
    assert StandardPipeline.of(dst) is None  # two pooling modes: sentence-transformers concatenates them
    (dst / "1_Pooling" / "config.json").write_text(json.dumps(cfg))
    (dst / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: "},
                                                                       "default_prompt_name": "query"}))
    assert StandardPipeline.of(dst) is None  # a default prompt is prepended by sentence-transformers
