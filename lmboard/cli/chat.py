"""`lmboard chat`: a streamed multi-turn chat with any model that can stream one."""

from __future__ import annotations

import sys

import typer

from lmboard.cli.common import GEN_OPTS, THREADS, err, generation_settings, load_lm, model_spec
from lmboard.lm import Capability, StreamingLM, require


def chat_cmd(
    model: str = typer.Argument("smollm2"),
    system: str | None = typer.Option(None, help="System prompt"),
    max_new_tokens: int = typer.Option(512),
    temperature: float | None = GEN_OPTS["temperature"],
    do_sample: bool | None = GEN_OPTS["do_sample"],
    seed: int = GEN_OPTS["seed"],
    threads: int | None = THREADS,
) -> None:
    """Interactive multi-turn chat: /reset, /system TEXT, /exit."""
    lm: StreamingLM = require(load_lm(model_spec(model), quiet=True, threads=threads), Capability.STREAM,
                              "lmboard chat", StreamingLM)
    settings = generation_settings(max_new_tokens, temperature, None, None, None, do_sample, seed, None, None, False)
    history: list[dict[str, str]] = []
    err.print("chat ready: /reset, /system TEXT, /exit; Ctrl-C stops an answer", markup=False)
    while True:
        sys.stdout.write("> ")
        sys.stdout.flush()
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: the chat ends, as /exit
            sys.stdout.write("\n")
            break
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history.clear()
            print("(history cleared)")
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; history cleared)")
            continue
        history.append({"role": "user", "content": text})
        msgs = ([{"role": "system", "content": system}] if system else []) + history
        history.append({"role": "assistant", "content": answer(lm.stream(msgs, settings))})


def answer(pieces) -> str:
    """Write the answer as it comes; Ctrl-C stops it (what was said stays in the history)."""
    said: list[str] = []
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            said.append(piece)
        sys.stdout.write("\n")
    except KeyboardInterrupt:
        pieces.close()
        sys.stdout.write("\n(answer stopped; /exit to leave)\n")
    sys.stdout.flush()
    return "".join(said)
