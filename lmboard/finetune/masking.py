"""Tokens and loss masks, made so that seed 001's silent mistakes cannot happen.

- The answer ends with the tokenizer's EOS (the chat template's end-of-turn token for
  ``chat``), never the pad token: BLOOMZ's example in the seed ends with pad, and with
  pad == EOS a collator that masks every pad id would also mask the terminator.
- Masks are by position, not by id: labels are -100 on every prompt position and every
  padding position (the collator's), and the answer's ids plus EOS elsewhere.
- Truncation cuts the prompt from the left (a leading BOS stays), never the answer; an
  answer that does not fit in ``max_length`` with one prompt token is skipped and counted.
- The prompt and the answer are tokenized as ``lmboard eval`` tokenizes a prompt and its
  continuation (``encode_pair``): the trained ids are the ids the eval scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmboard.errors import UsageError
from lmboard.finetune.templates import Example, render_prompt
from lmboard.lm import encode_pair

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    line: int
    input_ids: list[int]
    labels: list[int]
    cut: int = 0  # prompt tokens removed from the left

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def encode_examples(tokenizer, template: str, examples: Sequence[Example], max_length: int,
                    end_ids: Sequence[int]) -> tuple[list[Encoded], dict[str, int]]:
    """(encoded examples, counts of skipped and truncated examples)."""
    out: list[Encoded] = []
    counts = {"answer longer than --max-length": 0, "prompt truncated": 0}
    for ex in examples:
        ids, labels = _chat(tokenizer, ex, end_ids) if template == "chat" else _plain(tokenizer, template, ex)
        enc = truncate(ex.line, ids, labels, max_length, tokenizer.bos_token_id)
        if enc is None:
            counts["answer longer than --max-length"] += 1
            continue
        counts["prompt truncated"] += enc.cut > 0
        out.append(enc)
    return out, counts


def _plain(tokenizer, template: str, ex: Example) -> tuple[list[int], list[int]]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UsageError("the tokenizer has no EOS token to end each answer with; use --template chat "
                         "(the chat template's end-of-turn token) or a tokenizer with an EOS")
    ctx, ans = encode_pair(tokenizer, render_prompt(template, ex), ex.response, special=True)
    ans = list(ans) + [eos]
    return list(ctx) + ans, [IGNORE] * len(ctx) + ans


def _chat(tokenizer, ex: Example, end_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Loss on the assistant turns only: each turn's text is what the template adds for
    it, up to and including its end-of-turn token; everything else is masked."""
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("--template chat: the model's tokenizer has no chat template")
    msgs = ex.messages()
    ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not before.startswith(done) or not through.startswith(before):
            raise UsageError("--template chat: the chat template renders earlier turns differently once later "
                             "turns follow; give one turn per example")
        prompt = tokenizer(before[len(done):], add_special_tokens=False).input_ids
        turn = tokenizer(through[len(before):], add_special_tokens=False).input_ids
        end = next((k for k, t in enumerate(turn) if t in end_ids), None)
        if end is None:
            raise UsageError("--template chat: the chat template ends an assistant turn with no end-of-turn token")
        ids += prompt + turn
        labels += [IGNORE] * len(prompt) + turn[: end + 1] + [IGNORE] * (len(turn) - end - 1)
        done = through
    return ids, labels


def truncate(line: int, ids: list[int], labels: list[int], max_length: int, bos: int | None) -> Encoded | None:
    """Cut the prompt from the left so the whole fits; None if the last answer cannot fit."""
    labels = [IGNORE] + labels[1:]  # position 0 predicts nothing
    if len(ids) <= max_length:
        return Encoded(line, ids, labels)
    last = _last_answer_start(labels)
    keep_bos = bos is not None and ids[0] == bos
    cut = len(ids) - max_length
    start = cut + (1 if keep_bos else 0)
    if start >= last:  # not one prompt token would be left before the answer
        return None
    head = ids[:1] if keep_bos else []
    return Encoded(line, head + ids[start:], [IGNORE] * len(head) + [IGNORE] + labels[start + 1:], cut)


def _last_answer_start(labels: list[int]) -> int:
    k = len(labels) - 1
    while k > 0 and labels[k] == IGNORE:  # trailing masked tokens (a chat turn's newline)
        k -= 1
    while k > 0 and labels[k - 1] != IGNORE:
        k -= 1
    return k


def pad_batch(batch: Sequence[Encoded | dict], pad_id: int) -> dict:
    """Right padding to the longest of the batch (never to a fixed length): pad id in the
    inputs, 0 in the attention mask, -100 in the labels."""
    import torch

    rows = [b if isinstance(b, dict) else {"input_ids": b.input_ids, "labels": b.labels} for b in batch]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def describe_example(tokenizer, enc: Encoded) -> list[tuple[str, str]]:
    """(text, style) pieces for ``--show``: masked text dim, each trained run in brackets
    with its token ids (a CJK character can span several byte-level tokens)."""
    pieces: list[tuple[str, str]] = []
    k = 0
    while k < len(enc.input_ids):
        trained = enc.labels[k] != IGNORE
        j = k
        while j < len(enc.input_ids) and (enc.labels[j] != IGNORE) == trained:
            j += 1
        text = tokenizer.decode(enc.input_ids[k:j])
        if trained:
            pieces.append((f"[{text}]", "bold green"))
            pieces.append((f"{{{' '.join(map(str, enc.input_ids[k:j]))}}}", "green"))
        else:
            pieces.append((text, "dim"))
        k = j
    return pieces
