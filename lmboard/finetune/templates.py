"""Prompt templates for fine-tuning, after seed 001.

A template turns an example into the prompt text; the answer follows it. Built-ins:
``alpaca`` (Chinese-LLaMA/Alpaca), ``chatglm`` (``[Round N]\\n问：...\\n答：``, earlier turns
as history), ``llama2`` (``[INST] ... [/INST]``), ``raw`` (the prompt as is), ``chat`` (the
model's own chat template; masking.py handles it, since it needs the tokenizer) and any
user text with ``{instruction}`` and/or ``{input}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmboard.errors import UsageError

# The seed's Chinese-LLaMA collator. Kept as written: the prompt ends in a space, so the
# answer's first token is one without a leading space (another token than " Yes").
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response: ")
BUILTIN = ("alpaca", "chatglm", "llama2", "chat", "raw")


@dataclass(frozen=True)
class Example:
    """One training example: earlier turns (history), the last prompt and its answer.

    ``instruction`` and ``input`` are kept apart for templates that place them; for data
    without an instruction column, ``input`` is the prompt and ``instruction`` is empty."""

    line: int
    input: str
    response: str
    instruction: str = ""
    history: tuple[tuple[str, str], ...] = ()  # (user, assistant) turns before this one
    system: str | None = None

    @property
    def query(self) -> str:
        """The instruction and input as one text (the seed: instruction + "\\n" + input)."""
        if self.instruction and self.input:
            return self.instruction + "\n" + self.input
        return self.instruction or self.input

    def messages(self) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        for q, a in self.history:
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return msgs + [{"role": "user", "content": self.query}, {"role": "assistant", "content": self.response}]


def check_template(template: str) -> str:
    """A built-in name or a user template with {instruction} and/or {input}."""
    if template in BUILTIN:
        return template
    if "{instruction}" not in template and "{input}" not in template:
        raise UsageError(f"--template: unknown template {template!r} (built-in: {', '.join(BUILTIN)}; "
                         "or a text with {instruction} and/or {input})")
    try:
        template.format(instruction="", input="")
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"--template: only {{instruction}} and {{input}} can be filled in (got {e!s}); "
                         "write a literal brace as {{ or }}") from None
    return template


def render_prompt(template: str, ex: Example) -> str:
    """The prompt text of a non-chat template; earlier turns become part of it (untrained)."""
    if template == "chatglm":
        rounds = "".join(f"[Round {i}]\n问：{q}\n答：{a}\n" for i, (q, a) in enumerate(ex.history))
        return rounds + f"[Round {len(ex.history)}]\n问：{ex.query}\n答："
    system = ex.system + "\n\n" if ex.system else ""
    history = "".join(_turn(template, "", q) + a + "\n\n" for q, a in ex.history)
    return system + history + _turn(template, ex.instruction, ex.input)


def _turn(template: str, instruction: str, input: str) -> str:
    query = instruction + "\n" + input if instruction and input else instruction or input
    if template == "alpaca":
        return ALPACA.format(instruction=query)
    if template == "llama2":
        # Llama-2's chat format: the answer follows "[/INST] " and ends with </s>.
        return f"[INST] {query} [/INST] "
    if template == "raw":
        return query
    if "{input}" not in template:
        return template.format(instruction=query)
    if "{instruction}" not in template:
        return template.format(input=query)
    return template.format(instruction=instruction, input=input)
