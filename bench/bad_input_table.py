"""Every bad input the crash-safety issue listed, through the real command line: the exit
code and the one line printed. Prints a Markdown table (case | exit | message).

    python bench/bad_input_table.py
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MMLU, CSV = DATA / "mmlu", DATA / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"


def cases(t: Path) -> list[tuple[str, list[str]]]:
    (t / "file").write_text("x")
    (t / "garbage.db").write_bytes(b"not a database\n" * 50)
    con = sqlite3.connect(t / "foreign.db")
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    (t / "p.txt").write_text("Name a color.\n")
    (t / "empty.json").write_text("[]")
    (t / "o.json").write_text(json.dumps([{"instruction": "x", "output": "y", "generator": "g"}]))
    ref, db = str(DATA / "alpaca_eval" / "reference_gpt4_1106_preview.json"), ["--db", str(t / "db")]
    gen = ["generate", "--models", "smollm2", "--prompts", str(t / "p.txt")]
    dev = DATA / "shopbench" / "development.json"
    rows = dev.read_text().splitlines()[:3]
    no_type = json.loads(rows[2])
    del no_type["task_type"]
    (t / "no_type.json").write_text("\n".join([rows[0], rows[1], json.dumps(no_type)]) + "\n")
    (t / "metric.json").write_text(json.dumps({**json.loads(rows[0]), "metric": "f2"}) + "\n")
    (t / "broken.json").write_text(rows[0] + "\n{not json\n")
    (t / "resp.jsonl").write_text(json.dumps({"index": 0, "response": "x"}) + "\n")
    sb = ["eval", "openai:m@http://127.0.0.1:9/v1", "--task", "shopbench", "--responses", str(t / "resp.jsonl")]
    (t / "qa.jsonl").write_text(json.dumps({"prompt": "Hi", "answer": "Hello"}) + "\n")
    (t / "noans.jsonl").write_text(json.dumps({"prompt": "Hi", "response": ""}) + "\n")
    (t / "other").mkdir()
    (t / "other" / "lmboard-finetune.json").write_text(json.dumps({"run_id": "finetune-0", "base": {"name": "x"}}))
    ft = ["finetune", "smollm2", "--out", str(t / "ft"), *db, "--data"]
    cls = ["eval", "--task", "classify", "--data", str(CSV), "--text-column", "review", "--labels", "0=负面,1=正面"]
    return [
        ("generate: --out under a file", [*gen, "--out", str(t / "file" / "sub"), *db]),
        ("speed: --out is a folder", ["speed", "--out", str(t), *db]),
        ("speed: --plot under a file", ["speed", "--plot", str(t / "file" / "s.png"), *db]),
        ("judge: --leaderboard under a file", ["judge", "--outputs", str(t / "o.json"), "--reference", ref, "--judge",
                                               "smollm2", "--leaderboard", str(t / "file" / "b.csv"), *db]),
        ("eval: --db is garbage", ["eval", "--db", str(t / "garbage.db")]),
        ("generate: --db is another program's", [*gen, "--out", str(t / "g"), "--db", str(t / "foreign.db")]),
        ("speed: --db is garbage", ["speed", "--db", str(t / "garbage.db")]),
        ("eval: --task cmmlu on an MMLU folder", ["eval", "--task", "cmmlu", "--data", str(MMLU), *db]),
        ("eval: --limit 0", ["eval", "--limit", "0", *db]),
        ("eval: --limit -3", ["eval", "--limit", "-3", *db]),
        ("eval: --recheck-margin -1", ["eval", "--recheck-margin", "-1", *db]),
        ("eval: --batch-size (renamed --batch-tokens)", ["eval", "--batch-size", "64", *db]),
        ("generate: --concurrency 0", [*gen, "--concurrency", "0", *db]),
        ("generate: --scheduler eager", [*gen, "--scheduler", "eager", *db]),
        ("judge: --concurrency 0", ["judge", "--annotations", str(t / "empty.json"), "--concurrency", "0", *db]),
        ("classify: --template without {text}", [*cls, "--template", "Review: {labels}", *db]),
        ("classify: --template with {review}", [*cls, "--template", "{review}: {text}", *db]),
        ("speed: --prompt-tokens 100000", ["speed", "--prompt-tokens", "100000", "--new-tokens", "8", "--quiet", *db]),
        ("judge: empty annotations", ["judge", "--annotations", str(t / "empty.json"), "--leaderboard",
                                      str(t / "b.csv")]),
        ("eval: --threads 0", ["eval", "--threads", "0", *db]),
        ("classify against an endpoint", ["eval", "openai:m@http://127.0.0.1:9/v1", *cls[1:], *db]),
        ("shopbench: a row without task_type", [*sb, "--data", str(t / "no_type.json"), *db]),
        ("shopbench: an unknown metric", [*sb, "--data", str(t / "metric.json"), *db]),
        ("shopbench: malformed JSON", [*sb, "--data", str(t / "broken.json"), *db]),
        ("shopbench: responses that do not cover the data", [*sb, "--data", str(dev), *db]),
        ("shopbench: --mc-by loglik against an endpoint", ["eval", "openai:m@http://127.0.0.1:9/v1", "--task",
                                                          "shopbench", "--mc-by", "loglik", *db]),
        ("finetune: unknown template", [*ft, str(t / "qa.jsonl"), "--template", "vicuna"]),
        ("finetune: missing response column", [*ft, str(t / "qa.jsonl")]),
        ("finetune: no examples left", [*ft, str(t / "noans.jsonl")]),
        ("finetune: --out holds another run's adapter", [*ft[:2], "--data", str(t / "qa.jsonl"), "--response-column", "answer",
                                                         "--out", str(t / "other"), *db]),
    ]


def main() -> None:
    print("| case | exit | message |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as td:
        for name, args in cases(Path(td)):
            r = subprocess.run([sys.executable, "-m", "lmboard", *args], capture_output=True, text=True, cwd=td,
                               timeout=600)
            lines = [x for x in r.stderr.splitlines() if x.strip() and "Loading weights" not in x]
            msg = lines[-1].replace(td, "TMP").replace(str(DATA), "DATA") if lines else ""
            print(f"| {name} | {r.returncode} | `{msg}` |")


if __name__ == "__main__":
    main()
