"""lm-evaluation-harness task YAMLs without a model: reading (include, !function, groups,
local data), rendering, filters and metrics by hand, the one-line errors, and the job on
the fake backend through the command line (results.json in lm-eval's shape, resume)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from helpers import check_one_line_error as check
from helpers import run_cli
from lmboard.tasks.harness import metrics as M
from lmboard.tasks.harness.config import resolve
from lmboard.tasks.harness.render import HarnessTask, plain
from lmboard.tasks.harness.run import HarnessSettings, prepare

FAKE = str(Path(__file__).resolve().parents[1] / "fake_backend.py")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "harness"


def write(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text, encoding="utf-8")
    return d / name


@pytest.fixture
def tasks(tmp_path):
    rows = [{"q": f"What is {i} + {i}?", "a": 2 * i, "opts": ["x", "y"], "label": i % 2} for i in range(12)]
    write(tmp_path, "data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path, "utils.py", "def shout(doc):\n    return doc['q'].upper()\n\n"
                                "def keep_even(ds):\n    return [d for d in ds if d['a'] % 4 == 0]\n")
    write(tmp_path, "_base.yaml", "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: data.jsonl\n"
                                  "test_split: test\noutput_type: generate_until\nmetric_list:\n  - metric: exact_match\n")
    write(tmp_path, "gen.yaml", "include: _base.yaml\ntask: gen\ndoc_to_text: !function utils.shout\n"
                                "doc_to_target: '{{a}}'\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n")
    write(tmp_path, "mc.yaml", "include: _base.yaml\ntask: mc\noutput_type: multiple_choice\n"
                               "doc_to_text: \"Q: {{q}}\\nA:\"\ndoc_to_choice: opts\ndoc_to_target: label\n"
                               "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    write(tmp_path, "group.yaml", "group: both\ntask: [gen, mc]\naggregate_metric_list:\n"
                                  "  - metric: exact_match\n    weight_by_size: true\n")
    return tmp_path


def test_include_function_and_group(tasks):
    g = resolve("both", [tasks])
    assert g.name == "both" and [t.name for t in g.tasks] == ["gen", "mc"]
    gen = g.tasks[0]
    assert gen.config["dataset_path"] == "json"  # from the included base
    t = HarnessTask(gen)
    assert t.text(3) == "WHAT IS 3 + 3?"  # !function from utils.py beside the YAML
    assert str(tasks / "utils.py") in gen.source.files and str(tasks / "_base.yaml") in gen.source.files
    mc = HarnessTask(g.tasks[1])
    assert plain(mc.turns(2, [])) == "Q: What is 2 + 2?\nA:" and mc.choices(mc.docs.rows[2], "") == ["x", "y"]


def test_few_shot_sampler_and_delimiters(tasks):
    write(tasks, "shots.yaml", "include: _base.yaml\ntask: shots\ndoc_to_text: 'Q: {{q}}'\ndoc_to_target: '{{a}}'\n"
                               "fewshot_split: test\nnum_fewshot: 2\ntarget_delimiter: ' => '\nfewshot_delimiter: ' | '\n")
    p = prepare(resolve(str(tasks / "shots.yaml"), []), HarnessSettings(limit=3))
    # one Random(1234) over the documents in order; the asked document is left out of its shots
    rnd, pool = random.Random(1234), list(range(12))
    for i, prompt in enumerate(p.prompts):
        picked = [x for x in rnd.sample(pool, 3) if x != i][:2]
        want = "".join(f"Q: What is {j} + {j}? => {2 * j} | " for j in picked) + f"Q: What is {i} + {i}?"
        assert prompt == want


def test_filters_and_exact_match_options():
    regex = M.FILTERS["regex"](regex_pattern=r"answer is (\-?\d+)")
    assert regex(["so the answer is 42.", "no number"]) == ["42", "[invalid]"]
    last = M.FILTERS["regex"](regex_pattern=r"(\d+)", group_select=-1)
    assert last(["3 + 4 = 7"]) == ["7"]
    assert M.apply_filters([M.FILTERS["lowercase"](), M.FILTERS["remove_whitespace"](), M.FILTERS["take_first"]()],
                           ["  Paris ", "x"]) == "paris"
    assert M.FILTERS["majority_vote"]()(["a", "b", "b"]) == ["b"]
    assert M.exact_match("The Answer!", "the answer", ignore_case=True, ignore_punctuation=True) == 1.0
    assert M.exact_match("1,000", "1000", regexes_to_ignore=[","]) == 1.0
    assert M.exact_match("Paris", "paris") == 0.0
    # acc_norm divides by characters, acc_bytes by UTF-8 bytes (lm-eval's choice)
    m = M.choice_metrics([-2.0, -3.0], [False, True], ["a", "是是"], 1, ["acc", "acc_norm", "acc_bytes", "exact_match"])
    assert m == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0, "exact_match": 1}


def test_one_line_errors(tasks):
    write(tasks, "badkey.yaml", "include: _base.yaml\ntask: bad\ndoc_to_text: q\ndoc_to_target: a\nuse_prompt: x\n")
    check(run_cli("eval", "smollm2", "--task", str(tasks / "badkey.yaml")), "key 'use_prompt' is not supported")
    write(tasks, "nodata.yaml", "task: nodata\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: missing.jsonl\n"
                                "test_split: test\ndoc_to_text: q\ndoc_to_target: a\n")
    check(run_cli("eval", "smollm2", "--task", str(tasks / "nodata.yaml")), "data file missing.jsonl (test) not found")
    write(tasks, "field.yaml", "include: _base.yaml\ntask: field\ndoc_to_text: '{{q}} {{hint}}'\ndoc_to_target: a\n")
    r = run_cli("eval", "smollm2", "--task", str(tasks / "field.yaml"))
    check(r, "data.jsonl:1: doc_to_text refers to a field this row does not have ('hint' is undefined")
    write(tasks, "hub.yaml", "task: hub\ndataset_path: cais/mmlu\ntest_split: test\ndoc_to_text: q\n")
    check(run_cli("eval", "smollm2", "--task", str(tasks / "hub.yaml")), "dataset_path 'cais/mmlu' is a hub dataset")
    write(tasks, "metric.yaml", "include: _base.yaml\ntask: m\ndoc_to_text: q\ndoc_to_target: a\n"
                                "metric_list:\n  - metric: bertscore\n")
    check(run_cli("eval", "smollm2", "--task", str(tasks / "metric.yaml")), "metric 'bertscore' is not supported")
    check(run_cli("eval", "smollm2", "--task", "nothing", "--include-path", str(tasks)), "no task or group of that name")
    check(run_cli("eval", "smollm2", "--task", str(tasks / "gen.yaml"), "--letter-token", "bare"),
          "--letter-token does not apply")


def test_the_job_on_the_fake_backend_results_and_resume(tasks, tmp_path):
    args = ("eval", "fake:table", "--plugins", FAKE, "--task", "both", "--include-path", str(tasks), "--db",
            str(tmp_path / "db"), "--out", str(tmp_path / "out"), "--quiet")
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    for key in ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better", "n-samples"):
        assert key in doc, key
    assert doc["group_subtasks"] == {"both": ["gen", "mc"]} and doc["n-samples"]["gen"] == {"original": 12, "effective": 12}
    gen, mc = doc["results"]["gen"], doc["results"]["mc"]
    assert set(gen) == {"alias", "exact_match,none", "exact_match_stderr,none"}
    assert {"acc,none", "acc_norm,none", "acc_stderr,none"} <= set(mc)
    assert doc["results"]["both"]["exact_match,none"] == pytest.approx(gen["exact_match,none"])
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples_gen.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and samples[0]["prompt"] == "WHAT IS 0 + 0?" and samples[0]["target"] == "0"
    assert all(s["exact_match"] == float(s["filtered_resps"] == s["target"]) for s in samples)
    board = json.loads(run_cli("board", "--db", str(tmp_path / "db"), "--format", "json").stdout)
    assert {r["kind"] for r in board["runs"].values()} == {"harness"}
    cols = {(c["group"], c["label"]): c for c in board["columns"] if c["family"] == "tasks"}
    assert {("gen 0-shot", "exact_match"), ("mc 0-shot", "acc"), ("mc 0-shot", "acc_norm")} <= set(cols)
    (cell,) = [c for c in board["cells"] if c["column"] == cols[("mc 0-shot", "acc")]["key"]]
    assert cell["value"] == pytest.approx(100 * mc["acc,none"]) and cell["interval"] == "Wilson, 12 items"
    again = run_cli(*args[:-1])  # the same command: both runs resumed, nothing computed again
    assert again.returncode == 0 and again.stderr.count("resum") >= 2, again.stderr


def test_chat_few_shot_as_alternating_turns_and_think_stripping(tasks):
    import dataclasses

    from lmboard.tasks.harness.run import evaluate

    write(tasks, "chat.yaml", "include: _base.yaml\ntask: chat\ndoc_to_text: 'Q: {{q}}'\ndoc_to_target: '{{a}}'\n"
                              "description: 'Add.'\nfewshot_split: test\nnum_fewshot: 2\nfilter_list:\n  - name: num\n"
                              "    filter:\n      - function: regex\n        regex_pattern: '(\\d+)'\n"
                              "      - function: take_first\n")
    p = prepare(resolve(str(tasks / "chat.yaml"), []), HarnessSettings(limit=2, chat=True))
    roles = [m["role"] for m in p.prompts[0]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]  # lm-eval's --fewshot_as_multiturn
    assert p.prompts[0][0]["content"] == "Add." and p.prompts[0][-1]["content"] == "Q: What is 0 + 0?"
    assert p.prompts[0][2]["content"] == str(int(p.prompts[0][1]["content"].split()[3]) * 2)
    stored = {"000000": {"resps": ["<think>maybe 7</think>0"]}, "000001": {"resps": ["<think>7</think> 2"]}}
    plain_run = evaluate(p, stored)
    assert [s["filters"]["num"]["filtered"] for s in plain_run] == ["7", "7"]  # the trace's number, taken wrongly
    stripped = evaluate(dataclasses.replace(p, strip_thinking=True), stored)
    assert [s["filters"]["num"]["filtered"] for s in stripped] == ["0", "2"]
    assert [s["filters"]["num"]["metrics"]["exact_match"] for s in stripped] == [1.0, 1.0]
    assert stripped[0]["think_chars"] == len("<think>maybe 7</think>")


def test_csv_data_a_folder_and_text_metrics(tmp_path):
    import importlib.util

    from lmboard.tasks.harness.run import evaluate, summarize

    (tmp_path / "t").mkdir()
    write(tmp_path / "t", "d.csv", "src,ref\nhello world,hello world\nthe cat sat,a cat sat down\n")
    write(tmp_path / "t", "mt.yaml", "task: mt\ndataset_path: csv\ndataset_kwargs:\n  data_files:\n    test: d.csv\n"
                                     "test_split: test\ndoc_to_text: src\ndoc_to_target: ref\noutput_type: generate_until\n"
                                     "metric_list:\n  - metric: bleu\n  - metric: chrf\n  - metric: rougeL\n"
                                     "  - metric: exact_match\n")
    p = prepare(resolve("mt", [tmp_path / "t"]), HarnessSettings())
    assert p.prompts == ["hello world", "the cat sat"] and p.targets == ["hello world", "a cat sat down"]
    samples = evaluate(p, {"000000": {"resps": ["hello world"]}, "000001": {"resps": ["the cat sat"]}})
    res = summarize(p, samples)
    import sacrebleu

    assert res["bleu,none"] == pytest.approx(sacrebleu.corpus_bleu(["hello world", "the cat sat"],
                                                                   [["hello world", "a cat sat down"]]).score)
    assert res["exact_match,none"] == 0.5 and res["bleu_stderr,none"] == "N/A"
    assert samples[0]["filters"]["none"]["metrics"]["rougeL"] == 1.0 and 0 < res["rougeL,none"] < 1
    # a folder runs its tasks; math_verify needs its package (a one-line error naming it)
    r = run_cli("eval", "fake:table", "--plugins", FAKE, "--task", str(tmp_path / "t"), "--db", str(tmp_path / "db"),
                "--out", str(tmp_path / "out"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert set(json.loads((tmp_path / "out" / "results.json").read_text())["results"]) == {"mt"}
    if importlib.util.find_spec("math_verify") is None:
        write(tmp_path / "t", "mv.yaml", "include: mt.yaml\ntask: mv\nmetric_list:\n  - metric: math_verify\n")
        check(run_cli("eval", "smollm2", "--task", str(tmp_path / "t" / "mv.yaml")), "pip install math-verify")
