"""Small text helpers shared by every layer: stable hashes and the one CJK test."""

from __future__ import annotations

import hashlib
import json
import re

# CJK ideographs (with extension A and compatibility forms), kana and hangul.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_LETTER = re.compile(r"\w", re.UNICODE)


def stable_hash(obj: object, n: int = 16) -> str:
    """A hex digest of ``obj`` (text as is, anything else as sorted JSON); stable across runs."""
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def template_hash(*parts: object) -> str:
    """The hash recorded as ``prompt_template_hash``: what a prompt template renders from."""
    return stable_hash(list(parts))


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def is_mostly_cjk(text: str) -> bool:
    """More than half of the word characters are CJK (Chinese, Japanese or Korean)."""
    letters = len(_LETTER.findall(text))
    return letters > 0 and len(_CJK.findall(text)) / letters > 0.5
