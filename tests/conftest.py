"""Shared fixtures: the real SmolLM2 model, the real data, and a tiny random model with a
SentencePiece tokenizer built here (for fast unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MMLU = DATA / "mmlu"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A fresh cache per test session, as on a fresh machine: the first load of the GGUF
# unpacks it (the quantizer stays attached), later loads read the unpacked copy.
os.environ.setdefault("LMBOARD_CACHE", tempfile.mkdtemp(prefix="lmboard-cache-"))


def lmboard(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "lmboard", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def smollm2_fp32():
    from lmboard.config import parse_model_spec
    from lmboard.models.registry import load_model

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
    from lmboard.config import parse_model_spec
    from lmboard.models.registry import load_model

    return load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=float32"))


@pytest.fixture(scope="session")
def serve(smollm2_fp32, tmp_path_factory):
    """A real OpenAI-compatible server (transformers serve) on loopback, for the session."""
    from servers import Server, smollm2_folder

    server = Server(smollm2_folder(smollm2_fp32), tmp_path_factory.mktemp("serve") / "serve.log")
    yield server
    server.stop()
