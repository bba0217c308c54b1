"""ShopBench as a task: routing by type and by prompt text, route files, data and
responses validation, and --responses scoring through the command line (no model)."""

import json
from pathlib import Path

import pytest

from helpers import DATA, check_one_line_error, run_cli
from lmboard.errors import UsageError
from lmboard.tasks.routes import DEFAULT_ROUTES, load_routes, route_for
from lmboard.tasks.shopbench import load_rows, mc_options, route_rows

SEED_ROUTES = Path(__file__).resolve().parents[2] / "lmboard" / "data" / "shopbench" / "routes_seed003.yaml"
DEV = DATA / "shopbench" / "development.json"


def row(prompt, truth, task="t1", ttype="multiple-choice", metric="accuracy", **kw):
    return {"input_field": prompt, "output_field": truth, "task_name": task, "task_type": ttype, "metric": metric,
            "is_multiple_choice": ttype == "multiple-choice", "track": kw.pop("track", "A"), **kw}


def write_jsonl(path: Path, objs) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")
    return path


def test_default_routes_by_type():
    for ttype in ("multiple-choice", "ranking", "retrieval", "named_entity_recognition", "generation"):
        route, fields = route_for(list(DEFAULT_ROUTES), ttype, ttype == "multiple-choice", "Q?")
        assert route.name == ttype and fields == {"prompt": "Q?"}
    assert route_for(list(DEFAULT_ROUTES), "unknown-type", False, "Q?") is None


def test_routes_by_text_and_regex_placeholders(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"routes": [
        {"name": "ranked", "contains": "permutation", "regex": r"^(?P<head>[^\n]*)\n(?P<input>.*)$",
         "system": "{head} Rank.", "user": "{input}", "max_new_tokens": 9, "stop": ["\n"], "parser": "ranking"},
        {"name": "raw-mc", "task_type": "multiple-choice", "chat": False, "system": "SYS "},
    ]}))
    routes = [*load_routes(f), *DEFAULT_ROUTES]
    r, fields = route_for(routes, "generation", False, "Give a permutation\nof these")
    assert r.name == "ranked" and r.parser_for("generation") == "ranking"
    req = r.request("k", fields)
    assert req.messages == ({"role": "system", "content": "Give a permutation Rank."},
                            {"role": "user", "content": "of these"})
    assert r.settings().max_new_tokens == 9 and r.settings().stop == ("\n",) and not r.settings().do_sample
    r2, fields2 = route_for(routes, "multiple-choice", True, "Q?\nAnswer: ")
    assert r2.name == "raw-mc" and r2.request("k", fields2).text == "SYS Q?\nAnswer: " and r2.settings().raw
    r3, _ = route_for(routes, "generation", False, "no match here")
    assert r3.name == "generation"  # falls through to the built-in default


def test_seed003_routes_on_the_development_set():
    routes = [*load_routes(SEED_ROUTES), *DEFAULT_ROUTES]
    routed = route_rows(load_rows(DEV), routes, DEV)
    by_task = {}
    for x in routed:
        by_task.setdefault(x.row.task, set()).add(x.route.name)
    assert by_task["task11"] == {"seed003-task11"} and by_task["task12"] == {"seed003-task12"}
    assert by_task["task13"] == {"seed003-task13"} and by_task["task14"] == {"seed003-task14"}
    assert by_task["task15"] == {"seed003-task15"} and by_task["task2"] == {"seed003-multiple-choice"}
    # task 15 as the seed cuts it: the first line after its colon joins the instruction
    x = next(x for x in routed if x.row.task == "task15")
    system, user = (m["content"] for m in x.route.request("k", x.fields).messages)
    first, rest = x.row.prompt.split("\n", 1)
    assert first.split(":", 1)[1] in system and user == rest.split(":", 1)[1]


@pytest.mark.parametrize("content,needle", [
    ([{"name": "x", "colour": "red"}], "unknown field 'colour'"),
    ([{"name": "x", "system": "{nope}"}], "{nope}"),
    ([{"name": "x", "regex": "("}], "bad regex"),
    ([{"name": "x", "parser": "magic"}], "unknown parser 'magic'"),
    ([{"name": "x", "max_new_tokens": 0}], "max_new_tokens"),
    ({"other": 1}, "expected a list of routes"),
    ([{"name": "x"}, {"name": "x", "task_type": "ranking"}], "two routes are named 'x'"),
    ([{"name": "x", "contains": ["a"]}], "field 'contains' must be str or null"),
    ([{"name": "x", "stop": [1]}], "field 'stop' must be a list of strings"),
])
def test_bad_route_files(tmp_path, content, needle):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(content))
    with pytest.raises(UsageError, match=None) as e:
        load_routes(f)
    assert needle in str(e.value) and str(f) in str(e.value)


def test_an_unknown_task_type_needs_a_route_with_a_parser(tmp_path):
    data = write_jsonl(tmp_path / "d.json", [row("Q", "x", ttype="summary", metric="rougel")])
    with pytest.raises(UsageError, match="no route for task_type 'summary'"):
        route_rows(load_rows(data), list(DEFAULT_ROUTES), data)
    f = tmp_path / "r.json"
    f.write_text(json.dumps([{"name": "any", "is_multiple_choice": False}]))
    with pytest.raises(UsageError, match="route 'any' must name one"):
        route_rows(load_rows(data), load_routes(f), data)
    f.write_text(json.dumps([{"name": "any", "parser": "generation"}]))
    assert route_rows(load_rows(data), load_routes(f), data)[0].parser == "generation"


def test_yaml_route_file(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("routes:\n  - name: y\n    task_type: ranking\n    max_new_tokens: 7\n")
    assert load_routes(f)[0].max_new_tokens == 7
    f.write_text("routes: [\n")
    with pytest.raises(UsageError, match="invalid YAML"):
        load_routes(f)


def test_mc_options():
    assert mc_options("Q\n0. a\n1. b\n2. c\n3. d\nAnswer: ") == ["0", "1", "2", "3"]
    assert mc_options("Evaluate on a scale of 1 to 5.\nInput: x\nAnswer: ") == ["1", "2", "3", "4", "5"]
    assert mc_options("Pick one") == [str(i) for i in range(10)]


@pytest.fixture()
def small(tmp_path):
    rows = [row("Q1\n0. a\n1. b\nAnswer: ", 1), row("Q2\n0. a\n1. b\nAnswer: ", 0),
            row("Pick 3", [1, 2, 3], task="t2", ttype="retrieval", metric="hit rate@3", track="B"),
            row("Brand?", ["cadbury"], task="t3", ttype="named_entity_recognition", metric="micro f1", track="B"),
            row("Rank 5", [1, 0.01, 0.1, 1, 0], task="t4", ttype="ranking", metric="ndcg", track="B")]
    data = write_jsonl(tmp_path / "data.json", rows)
    resp = write_jsonl(tmp_path / "resp.jsonl", [
        {"index": 0, "response": "1"}, {"index": 1, "response": "The answer is 0"},
        {"input_field": "Pick 3", "response": "3, 9, 1"}, {"index": 3, "response": "Cadbury, milk"},
        {"index": 4, "response": "1, 4, 3, 2, 5"}])
    return tmp_path, data, resp


def test_responses_are_scored_without_a_model(small):
    tmp, data, resp = small
    for parse, mc2 in (("official", 0.0), ("lenient", 1.0)):
        out = tmp / parse
        r = run_cli("eval", "openai:api-model@http://127.0.0.1:9/v1", "--task", "shopbench", "--data", str(data),
                    "--responses", str(resp), "--parse", parse, "--out", str(out), "--db", str(tmp / "db"), "--quiet")
        assert r.returncode == 0, r.stderr
        scores = json.loads((out / "scores.json").read_text())
        tasks = {t["task"]: t["score"] for t in scores["tasks"]}
        f1 = 2 * 0.5 * 1.0 / 1.5  # tp 1, fp 1, fn 0
        assert tasks == pytest.approx({"t1": (1 + mc2) / 2, "t2": 2 / 3, "t3": f1, "t4": 1.0})
        assert scores["overall"] == pytest.approx(((1 + mc2) / 2 + 2 / 3 + f1 + 1) / 4)
        assert scores["parse"] == parse and scores["provenance"]["parser_version"] == "0.1.1"
        samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        assert [s["index"] for s in samples] == [0, 1, 2, 3, 4]
        assert samples[2]["parsed"] == [3, 9, 1] and samples[2]["route"] == "retrieval"
        assert samples[1]["response"] == "The answer is 0" and samples[1]["parsed"] == (-1 if parse == "official" else 0)


def test_bad_input_is_one_line(small, tmp_path):
    _, data, resp = small

    def ev(*args):
        return run_cli("eval", "openai:m@http://127.0.0.1:9/v1", "--task", "shopbench", "--db", str(tmp_path / "db"),
                       "--quiet", *args)

    lines = data.read_text().splitlines()
    bad = tmp_path / "bad.json"
    obj = json.loads(lines[2])
    del obj["task_type"]
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(obj)]) + "\n")
    check_one_line_error(ev("--data", str(bad), "--responses", str(resp)), f"{bad}:3", "task_type")
    obj = {**json.loads(lines[0]), "metric": "f2"}
    bad.write_text(json.dumps(obj) + "\n")
    check_one_line_error(ev("--data", str(bad), "--responses", str(resp)), f"{bad}:1", "unknown metric 'f2'")
    bad.write_text(lines[0] + "\n{not json\n")
    check_one_line_error(ev("--data", str(bad), "--responses", str(resp)), f"{bad}:2", "invalid JSON")
    part = write_jsonl(tmp_path / "part.jsonl", [{"index": 0, "response": "1"}])
    check_one_line_error(ev("--data", str(data), "--responses", str(part)), "no response for 4 of 5 rows", "row 1")
    check_one_line_error(ev("--data", str(data), "--tasks", "t9", "--responses", str(resp)), "no task 't9'")
    check_one_line_error(ev("--data", str(data), "--parse", "strict"), "--parse")
    check_one_line_error(ev("--data", str(data), "--mc-by", "loglik"), "'score' capability")
    check_one_line_error(ev("--data", str(data), "--shots", "3"), "--shots does not apply")
    check_one_line_error(ev("--data", str(data), "--responses", str(resp), "--embedder", "rougel=/x"), "not an embedding")
    ml = write_jsonl(tmp_path / "ml.json", [row("Say", "x", ttype="generation", metric="multilingual-sent-transformer")])
    check_one_line_error(ev("--data", str(ml), "--responses", str(resp)), "multilingual-sent-transformer",
                         "--embedder multilingual-sent-transformer=PATH")
    check_one_line_error(ev("--data", str(data), "--routes", str(tmp_path / "none.yaml")), "--routes", "no such file")


def test_the_console_entry_exits_fast_with_the_store_closed(small):
    """``python -m lmboard`` (the console script's ``entry``) ends with os._exit: its exit
    code is main's, its output is flushed, and the store is closed first (SQLite folded its
    write-ahead log into the file: no -wal file left)."""
    import subprocess
    import sys

    tmp, data, resp = small
    base = [sys.executable, "-m", "lmboard", "eval", "openai:m@http://127.0.0.1:9/v1", "--task", "shopbench",
            "--data", str(data), "--db", str(tmp / "fast.db")]
    r = subprocess.run([*base, "--responses", str(resp), "--out", str(tmp / "fast")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "overall" in r.stdout  # the table reached the pipe before the process ended
    assert (tmp / "fast" / "scores.json").is_file()
    assert (tmp / "fast.db").is_file() and not (tmp / "fast.db-wal").exists()
    bad = subprocess.run([*base, "--responses", str(tmp / "missing.jsonl")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.jsonl" in bad.stderr
