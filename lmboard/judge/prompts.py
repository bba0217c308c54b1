"""Judge prompts: pairwise (after alpaca_eval's weighted annotator) and single-answer grading.

Pairwise: the two outputs appear under the labels "m" and "M" in a random order; the
judge answers with one token naming the better one, so its next-token probabilities of
"m" and "M" give a probability-weighted preference in [1, 2].
"""

from __future__ import annotations

import json
import re

from lmboard.text import is_mostly_cjk, template_hash

PAIRWISE = {
    "en": {
        "system": (
            "You are a careful, impartial assistant that compares the answers of large language models "
            "to an instruction and selects the better one. Your choice builds a leaderboard of the answers "
            "people find most accurate and helpful."
        ),
        "user": (
            "Here is an instruction, followed by the answers of two models.\n\n"
            "## Instruction\n\n{instruction_json}\n\n"
            "## Answers\n\n{answers_json}\n\n"
            "## Task\n\nDecide which model answered better: judge helpfulness, accuracy and relevance, not length "
            "or style alone. Reply with the identifier of the better model, `m` or `M`, and nothing else.\n\n"
            "Answer with exactly one character: m or M."
        ),
    },
    "zh": {
        "system": "你是一位细致、公正的助手，负责比较大语言模型对同一指令的回答，并选出更好的一个。你的选择将用于构建排行榜。",
        "user": (
            "下面是一条指令，以及两个模型的回答。\n\n"
            "## 指令\n\n{instruction_json}\n\n"
            "## 回答\n\n{answers_json}\n\n"
            "## 任务\n\n判断哪个模型回答得更好：看是否有帮助、准确、切题，而不是只看长度或文风。"
            "只回复更好的模型的标识符 `m` 或 `M`，不要输出其他内容。\n\n只回答一个字符：m 或 M。"
        ),
    },
}

SINGLE = {
    "en": {
        "system": "You are an impartial judge who grades the quality of an AI assistant's answer.",
        "user": (
            "Grade the answer to the instruction below for helpfulness, relevance, accuracy, depth and clarity."
            "{reference_block}\n\n[Instruction]\n{instruction}\n\n[Answer]\n{output}\n\n"
            "Give a short justification, then the grade from 1 to 10 in exactly this format: [[N]]"
        ),
        "reference": "\n\nA reference answer is given; use it to check correctness.\n\n[Reference answer]\n{reference}",
    },
    "zh": {
        "system": "你是一位公正的评审，负责为 AI 助手的回答打分。",
        "user": (
            "请从有用性、相关性、准确性、深度和清晰度评价下面指令的回答。{reference_block}\n\n[指令]\n{instruction}\n\n"
            "[回答]\n{output}\n\n先简要说明理由，然后严格按此格式给出 1 到 10 的分数：[[N]]"
        ),
        "reference": "\n\n下面给出参考答案，请据此判断正确性。\n\n[参考答案]\n{reference}",
    },
}

LABELS = ("m", "M")


def choose_lang(instruction: str, lang: str) -> str:
    if lang == "auto":
        return "zh" if is_mostly_cjk(instruction) else "en"
    return lang


def pairwise_messages(instruction: str, first: str, second: str, lang: str) -> list[dict[str, str]]:
    """first is shown as model "m", second as model "M"."""
    t = PAIRWISE[lang]
    answers = [{"model_identifier": "m", "output": first}, {"model_identifier": "M", "output": second}]
    user = t["user"].format(
        instruction_json=json.dumps({"instruction": instruction}, indent=4, ensure_ascii=False),
        answers_json=json.dumps(answers, indent=4, ensure_ascii=False),
    )
    return [{"role": "system", "content": t["system"]}, {"role": "user", "content": user}]


def single_messages(instruction: str, output: str, reference: str | None, lang: str) -> list[dict[str, str]]:
    t = SINGLE[lang]
    block = t["reference"].format(reference=reference) if reference else ""
    user = t["user"].format(instruction=instruction, output=output, reference_block=block)
    return [{"role": "system", "content": t["system"]}, {"role": "user", "content": user}]


def judge_template_hash(mode: str) -> str:
    return template_hash(mode, PAIRWISE if mode == "pairwise" else SINGLE)


def parse_label(text: str) -> str | None:
    """The judge's answer: exactly m or M (allowing quotes, backticks, 'Model M', a period)."""
    t = text.strip().strip("`'\".").strip()
    t = re.sub(r"^(model|模型)\s*", "", t, flags=re.IGNORECASE).strip("`'\".: ")
    if t in LABELS:
        return t
    m = re.match(r"^[`'\"]?(m|M)\b", text.strip())
    if m:
        return m.group(1)
    # a sentence naming exactly one of the two ("Model M is better")
    found = set(re.findall(r"(?<![\w'])[`'\"]?(m|M)[`'\"]?(?![\w'])", text))
    return found.pop() if len(found) == 1 else None


def parse_grade(text: str) -> float | None:
    m = re.search(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]", text)
    if not m:
        return None
    v = float(m.group(1))
    return v if 1 <= v <= 10 else None
