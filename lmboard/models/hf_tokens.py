"""The tokenizing half of the LM protocol on a transformers tokenizer, shared by every
backend whose tokenizer runs in this process: the hf backend, vLLM in-process, and an
OpenAI-compatible server scored on token ids (prompts measured, cut and scored here,
in the model's own tokens)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lmboard.errors import MissingDependency, UsageError
from lmboard.lm import encode_pair

# End-of-turn markers of common chat templates, stopped at besides the configured ids.
TURN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>", "<|end|>")


def load_tokenizer(name: str, where: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer`` of a folder or hub id; a missing one is a one-line error."""
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise MissingDependency("transformers", "transformers") from e
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{where}: cannot load the tokenizer of {name!r} ({first})") from None


def load_generation_config(name: str, revision: str | None = None) -> Any:
    """The folder's generation_config.json, else transformers' defaults."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError):
        return GenerationConfig()


class HFTokenizing:
    """TokenizingLM's methods over ``self.tokenizer`` (a transformers tokenizer) and
    ``self.generation_config`` (its model's, for the end-of-turn ids)."""

    spec: Any
    tokenizer: Any
    generation_config: Any

    def encode(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special).input_ids

    def encode_many(self, texts: Sequence[str], special: bool = True) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=special).input_ids

    def encode_pair(self, context: str, continuation: str, special: bool = True) -> tuple[list[int], list[int]]:
        return encode_pair(self.tokenizer, context, continuation, special)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if not self.has_chat_template():
            raise UsageError(f"model {self.spec.display_name} has no chat template: pass --raw to send plain text")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def eos_token_ids(self) -> list[int]:
        """Every end-of-turn id: the generation config's, the tokenizer's, <|im_end|>/<|eot_id|>...
        (worked out once: reading the vocabulary takes 20 ms, and generation asks per group)."""
        cached = self.__dict__.get("_eos_ids")
        if cached is not None:
            return list(cached)
        ids: list[int] = []
        gc_eos = getattr(self.generation_config, "eos_token_id", None)
        for v in (gc_eos if isinstance(gc_eos, list) else [gc_eos]):
            if v is not None:
                ids.append(int(v))
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        ids += [int(vocab[tok]) for tok in TURN_ENDS if tok in vocab]
        self.__dict__["_eos_ids"] = sorted(set(ids))
        return list(self.__dict__["_eos_ids"])

    def plain_token_ids(self) -> list[int]:
        special = set(self.tokenizer.all_special_ids)
        return [i for i in range(len(self.tokenizer)) if i not in special]

    def tokenizer_info(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {"class": type(tok).__name__, "name_or_path": getattr(tok, "name_or_path", None),
                "vocab_size": len(tok), "bos_token": tok.bos_token, "eos_token": tok.eos_token}
