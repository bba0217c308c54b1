"""Shared fixtures: the real SmolLM2 model, a tiny random model with a SentencePiece
tokenizer built here (for fast unit tests), and a real `transformers serve`.

tests/unit: fast, tiny fixtures, the CLI in this process (``pytest -m "not slow"``).
tests/e2e: SmolLM2, real data, servers, the CLI in subprocesses; every test there is
marked slow here. Helpers live in helpers.py (import them from there, not from here).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from helpers import MMLU

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A fresh cache per test session, as on a fresh machine: the first load of the GGUF
# unpacks it (the quantizer stays attached), later loads read the unpacked copy.
os.environ.setdefault("LMBOARD_CACHE", tempfile.mkdtemp(prefix="lmboard-cache-"))


E2E = Path(__file__).resolve().parent / "e2e"


def native_bf16() -> bool:
    """The CPU computes bfloat16 (AVX-512 BF16 or AMX): where it does not, bfloat16 runs
    emulated, several times slower than float32."""
    from lmboard.models.hf_load import cpu_supports_bf16

    return cpu_supports_bf16()


def pytest_collection_modifyitems(config, items):
    skip_bf16 = None if native_bf16() else pytest.mark.skip(
        reason="needs native bfloat16 (AVX-512 BF16 or AMX): emulated here, the test's SmolLM2 bfloat16 run is slow "
               "and the float32 answers it checks are what dtype=auto gives on this CPU anyway")
    for item in items:
        if E2E in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)
        if skip_bf16 is not None and item.get_closest_marker("bf16"):
            item.add_marker(skip_bf16)


@pytest.fixture(scope="session")
def smollm2_fp32():
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    return load_model(parse_model_spec("smollm2,dtype=float32"))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_fp32):
    return smollm2_fp32.tokenizer


SP_TEXT_SOURCES = ["anatomy", "astronomy", "abstract_algebra", "college_biology"]


@pytest.fixture(scope="session")
def sp_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a real SentencePiece (BPE, byte fallback) tokenizer
    trained here on MMLU questions, saved as a Hugging Face folder."""
    import sentencepiece as spm
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("sp_llama")
    corpus = d / "corpus.txt"
    lines = []
    for s in SP_TEXT_SOURCES:
        lines += (MMLU / "test" / f"{s}_test.csv").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines + ["Answer: A", "Answer: B", "Answer: C", "Answer: D"]), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(d / "tokenizer"),
        vocab_size=800,
        model_type="bpe",
        byte_fallback=True,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    (d / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                    "add_bos_token": True, "model_max_length": 512})
    )
    tok = AutoTokenizer.from_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_sp(sp_model_dir):
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    return load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=float32"))


@pytest.fixture(scope="session")
def serve(smollm2_fp32, tmp_path_factory):
    """A real OpenAI-compatible server (transformers serve) on loopback, for the session."""
    from servers import Server, smollm2_folder

    server = Server(smollm2_folder(smollm2_fp32), tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()
