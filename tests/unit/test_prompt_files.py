"""Prompt files for generation, and a registered inference function through the CLI."""

import json

import pytest

from helpers import ALPACA_REF as REF
from helpers import check_one_line_error, run_cli
from lmboard.errors import UsageError
from lmboard.tasks.open_ended import load_prompts


def test_every_prompt_format(tmp_path):
    (tmp_path / "p.txt").write_text("What is 2+2?\n\n  Name a color.  \n")
    assert [p.instruction for p in load_prompts(tmp_path / "p.txt")] == ["What is 2+2?", "Name a color."]
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"instruction": "Translate", "input": "bonjour", "system": "Be terse."}) + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                   {"role": "user", "content": "Bye"}]}) + "\n")
    a, b = load_prompts(tmp_path / "p.jsonl")
    assert a.request().messages == ({"role": "system", "content": "Be terse."}, {"role": "user", "content": "Translate\n\nbonjour"})
    assert b.instruction == "Bye" and len(b.request().messages) == 3
    items = load_prompts(REF)
    assert len(items) == 805 and items[0].dataset == "helpful_base"


@pytest.mark.parametrize("content, msg", [
    ("", "no prompts"),
    ('{"instruction": "ok"}\n{"instruction": \n', "p.jsonl:2: invalid JSON"),
    ('{"input": "x"}\n', "p.jsonl:1: missing field 'instruction'"),
])
def test_bad_prompt_files(tmp_path, content, msg):
    (tmp_path / "p.jsonl").write_text(content)
    with pytest.raises(UsageError, match=msg):
        load_prompts(tmp_path / "p.jsonl")


def test_plugin_discovery_and_generate_cli(tmp_path):
    (tmp_path / "plug.py").write_text(
        "from lmboard import register_llm_infer\n"
        "@register_llm_infer('reverse')\n"
        "def reverse(texts, **kwargs):\n"
        "    assert kwargs['max_new_tokens'] == 7\n"
        "    return [t[::-1] for t in texts]\n")
    (tmp_path / "p.txt").write_text("abc\nhello world\n")
    out = tmp_path / "out"
    # without --plugins the name is unknown: a one-line error
    r = run_cli("generate", "--models", "plugin:reverse", "--prompts", str(tmp_path / "p.txt"),
                "--db", str(tmp_path / "db"))
    check_one_line_error(r, "no inference function")
    r = run_cli("generate", "--models", "plugin:reverse", "--prompts", str(tmp_path / "p.txt"), "--plugins",
                str(tmp_path / "plug.py"), "--out", str(out), "--max-new-tokens", "7", "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    entries = json.loads((out / "output.json").read_text())
    assert [e["output"] for e in entries] == ["cba", "dlrow olleh"]
    assert set(entries[0]) == {"instruction", "input", "output", "generator", "dataset", "datasplit"}
    assert entries[0]["generator"] == "reverse"


