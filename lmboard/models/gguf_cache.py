"""The unpacked copy of a GGUF file: transformers unpacks GGUF blocks into dense tensors
at every load (seconds of work); the hf backend saves them once as safetensors in the
dtype it loads and loads that folder from then on (hf_load.py)."""

from __future__ import annotations

import os
from pathlib import Path

from lmboard.text import stable_hash


def gguf_cache_dir(where: str, gguf: str, dtype: str) -> Path | None:
    """Where the unpacked copy of a local GGUF file lives (None: caching is off).

    transformers unpacks GGUF blocks into dense tensors at every load (seconds of
    work per load); the unpacked tensors are saved once and loaded directly after.
    The key covers the file's path, size and mtime, the dtype and library version.
    """
    import transformers

    if os.environ.get("LMBOARD_GGUF_CACHE", "1") == "0":
        return None
    path = Path(where) / gguf
    if not path.is_file():
        return None
    st = path.stat()
    key = stable_hash([str(path.resolve()), st.st_size, st.st_mtime_ns, dtype, transformers.__version__])
    root = Path(os.environ.get("LMBOARD_CACHE", Path.home() / ".cache" / "lmboard"))
    return root / "gguf" / f"{path.stem}-{dtype}-{key}"


def save_gguf_cache(target: Path, model, tokenizer) -> str | None:
    """Save atomically (a temp folder renamed into place); failure only costs speed. A
    folder already in place is never removed: another process may be loading from it (two
    torchrun ranks unpacking the same file at once: the second's copy is dropped)."""
    import shutil
    import tempfile

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
        model.config.architectures = model.config.architectures or [type(model).__name__]
        # The GGUF quantizer marks the model unserializable even once unpacked; the
        # tensors are plain now, so save them without it.
        quantizer = getattr(model, "hf_quantizer", None)
        qconfig = getattr(model.config, "quantization_config", None)
        try:
            model.hf_quantizer = None
            if qconfig is not None:
                del model.config.quantization_config
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
            if qconfig is not None:
                model.config.quantization_config = qconfig
        tokenizer.save_pretrained(tmp)
        if not (tmp / "config.json").is_file() or not any(tmp.glob("*.safetensors")):
            # Under torch.distributed transformers writes weights on rank 0 only: this
            # rank's copy would be a folder of tokenizer files.
            shutil.rmtree(tmp, ignore_errors=True)
            return None
        (tmp / "complete").write_text("ok")
        try:
            tmp.rename(target)
        except OSError:  # the folder is there: another process (a torchrun rank) unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "complete").is_file():  # not a finished copy: not ours to remove; go on without
                return None
        return str(target)
    except (OSError, ValueError, AttributeError):
        return None
