"""Generation: prompt formats, chat templates, batching with left padding, stop strings,
plugins, the endpoint backend against a real server, resume and bad input."""

import json
import os
import sqlite3
import subprocess
import sys

from helpers import ALPACA_REF as REF
from helpers import ROOT, generate, lmboard, run_cli
from lmboard.lm import GenerationSettings, GenRequest
from lmboard.models.engine.genbase import render


def alpaca_instructions(n, start=0):
    return [e["instruction"] for e in json.loads(REF.read_text())[start : start + n]]


def test_chat_template_and_system_prompt(smollm2_fp32):
    s = GenerationSettings(system="You answer in French.")
    text, special = render(smollm2_fp32, GenRequest("k", ({"role": "user", "content": "Hello"},)), s)
    assert special is False
    assert text == ("<|im_start|>system\nYou answer in French.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
                    "<|im_start|>assistant\n")
    raw, special = render(smollm2_fp32, GenRequest("k", ({"role": "user", "content": "Hello"},), text="Hello"),
                          GenerationSettings(raw=True))
    assert raw == "Hello" and special is True
    assert {2, smollm2_fp32.tokenizer.convert_tokens_to_ids("<|im_end|>")} <= set(smollm2_fp32.eos_token_ids())


def test_continuous_and_static_greedy_equal_one_at_a_time(smollm2_fp32):
    reqs = [GenRequest(str(i), ({"role": "user", "content": t},)) for i, t in enumerate(alpaca_instructions(8))]
    s = GenerationSettings(max_new_tokens=16, do_sample=False)
    continuous = {r.key: r for r in generate(smollm2_fp32, reqs, s, batch_size=4)}
    assert {r.settings["max_batch"] for r in continuous.values()} == {4}  # 8 prompts through 4 slots
    static = {r.key: r for r in generate(smollm2_fp32, reqs, s, scheduler="static")}
    assert max(r.settings["batch_size"] for r in static.values()) == 8
    single = {r.key: r for q in reqs for r in generate(smollm2_fp32, [q], s, scheduler="static")}
    # the generic runtime (any architecture and device): transformers' own continuous batching
    generic = {r.key: r for r in generate(smollm2_fp32, reqs, s, runtime="generic")}
    assert {r.settings["scheduler"] for r in generic.values()} == {"transformers-continuous"}
    for batched in (continuous, static, generic):
        same = sum(batched[k].output == single[k].output for k in single)
        assert same >= len(reqs) - 1, same  # float32: a near tie may move with the padded width
        for r in batched.values():
            assert r.output_tokens <= 16 and "<|im_end|>" not in r.output and "<|im_start|>" not in r.output
            assert r.finish_reason in ("stop", "length") and r.settings["max_new_tokens"] == 16
    assert [continuous[k].output_tokens for k in single] == [single[k].output_tokens for k in single]


def test_seeded_sampling_does_not_depend_on_batch_mates(smollm2_fp32):
    reqs = [GenRequest(str(i), ({"role": "user", "content": t},)) for i, t in enumerate(alpaca_instructions(6))]
    s = GenerationSettings(max_new_tokens=20, do_sample=True, temperature=0.9, top_p=0.95, seed=3)
    together = {r.key: r.output for r in smollm2_fp32.generate(reqs, s)}
    alone = {r.key: r.output for q in reversed(reqs) for r in smollm2_fp32.generate([q], s)}
    assert together == alone
    assert len(set(together.values())) == len(reqs)


def test_stop_strings_cut_the_answer(smollm2_fp32):
    reqs = [GenRequest("a", ({"role": "user", "content": "List three fruits, one per line."},))]
    s = GenerationSettings(max_new_tokens=60, do_sample=False, stop=("\n",))
    for runtime in ("cpu", "generic"):  # the generic runtime's transformers batching ignores stop strings: cut after
        (r,) = generate(smollm2_fp32, reqs, s, runtime=runtime)
        assert "\n" not in r.output and r.finish_reason == "stop" and r.output_tokens < 60, runtime


def test_generate_bad_input(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    r = run_cli("generate", "--models", "smollm2", "--prompts", str(tmp_path / "empty.txt"))
    assert r.returncode == 2 and "no prompts" in r.stderr
    (tmp_path / "p.txt").write_text("hi\n")
    r = run_cli("generate", "--models", "nosuch", "--prompts", str(tmp_path / "p.txt"))
    assert r.returncode == 2 and "unknown model alias" in r.stderr
    r = run_cli("generate", "--models", "openai:m@http://127.0.0.1:9/v1", "--prompts", str(tmp_path / "p.txt"),
                "--db", str(tmp_path / "db"), "--quiet")
    assert r.returncode == 2 and "unreachable" in r.stderr and "Traceback" not in r.stderr


def test_openai_backend_against_a_real_server(serve, tmp_path):
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    spec = parse_model_spec(f"openai:{serve.model}@{serve.url},api_key_env=LMBOARD_TEST_KEY")
    os.environ["LMBOARD_TEST_KEY"] = "sk-secret-test-value"
    lm = load_model(spec)
    reqs = [GenRequest(str(i), ({"role": "user", "content": t},)) for i, t in enumerate(alpaca_instructions(3))]
    res = list(lm.generate(reqs, GenerationSettings(max_new_tokens=16, do_sample=False), concurrency=3))
    assert sorted(r.key for r in res) == ["0", "1", "2"]
    assert all(r.output and r.output_tokens and r.output_tokens <= 16 for r in res)
    pieces = list(lm.stream([{"role": "user", "content": "Say hello."}], GenerationSettings(max_new_tokens=8)))
    assert len(pieces) >= 2 and "".join(pieces)
    assert "sk-secret-test-value" not in json.dumps(lm.info())
    # through the CLI: alpaca_eval output, and the key never printed or stored
    (tmp_path / "p.txt").write_text("Name a planet.\nName a river.\n")
    r = lmboard("generate", "--models", f"openai:{serve.model}@{serve.url},label=served,api_key_env=LMBOARD_TEST_KEY",
                "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "o"), "--max-new-tokens", "12",
                "--db", str(tmp_path / "db"), env={"LMBOARD_TEST_KEY": "sk-secret-test-value"})
    assert r.returncode == 0, r.stderr
    blob = (tmp_path / "o" / "generations.jsonl").read_text() + r.stdout + r.stderr
    blob += "\n".join(str(x) for x in sqlite3.connect(tmp_path / "db").execute("select * from runs").fetchall())
    assert "sk-secret-test-value" not in blob
    assert {e["generator"] for e in json.loads((tmp_path / "o" / "output.json").read_text())} == {"served"}
    # a model the server does not have: one line
    r = run_cli("generate", "--models", f"openai:no/such/model@{serve.url}", "--prompts", str(tmp_path / "p.txt"),
                "--db", str(tmp_path / "db"), "--quiet")
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr


def test_chat_through_stdin(tmp_path):
    script = "Hello\n/system Answer in one word.\nWhat color is the sky?\n/reset\n/exit\n"
    r = subprocess.run([sys.executable, "-m", "lmboard", "chat", "smollm2", "--max-new-tokens", "12", "--greedy"],
                       input=script, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "(system prompt set; history cleared)" in r.stdout and "(history cleared)" in r.stdout
    answers = [line for line in r.stdout.split("> ") if line.strip() and not line.startswith("(")]
    assert len(answers) >= 2


def test_ctrl_c_in_chat_stops_the_answer_not_the_chat(tmp_path):
    """Driven through tmux as a person would: a long answer, Ctrl-C in the middle of it,
    then the chat goes on (the next question is answered) until /exit."""
    import shutil
    import time

    import pytest

    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed (make test installs it)")
    session = f"lmboard-chat-{os.getpid()}"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session)

    def wait_for(pred, timeout: float = 120) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = screen()
            if pred(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out; the screen:\n{screen()}")

    cmd = f"cd {ROOT} && {sys.executable} -m lmboard chat smollm2 --max-new-tokens 400 --greedy; echo EXITED $?; sleep 600"
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "50", cmd)
    try:
        wait_for(lambda t: "chat ready" in t)
        tmux("send-keys", "-t", session, "Write a very long story about a robot who learns to paint.", "Enter")
        # the answer is coming: some words after the question, then Ctrl-C
        wait_for(lambda t: len(t.split("learns to paint.")[-1].split()) >= 8)
        tmux("send-keys", "-t", session, "C-c")
        wait_for(lambda t: "(answer stopped; /exit to leave)" in t and t.rstrip().endswith(">"))
        tmux("send-keys", "-t", session, "Say hello.", "Enter")
        wait_for(lambda t: t.count("> ") >= 3 and t.rstrip().endswith(">"))
        tmux("send-keys", "-t", session, "/exit", "Enter")
        text = wait_for(lambda t: "EXITED" in t)
        assert "EXITED 0" in text and "Traceback" not in text and "interrupted" not in text
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
