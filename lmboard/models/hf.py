"""Hugging Face causal LMs: a local folder, a hub id, a GGUF file, a PEFT adapter."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lmboard.config import GenerationSettings, ModelSpec
from lmboard.errors import MissingDependency, UsageError
from lmboard.models.base import GenRequest, GenResult
from lmboard.models.registry import register_model


def cpu_supports_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU has native bfloat16 matmul instructions."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def choose_dtype(requested: str, device: str) -> str:
    """dtype=auto: bfloat16 where the hardware computes it natively, else float32."""
    if requested != "auto":
        return requested
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"


def choose_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"model spec: device={requested} but no CUDA device is available")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UsageError(f"model spec: device must be auto, cpu or cuda:N (got {requested!r})")
    return requested


def _locate(spec: ModelSpec) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None); one-line errors for missing files."""
    name, gguf = spec.name, spec.gguf_file
    p = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not p.is_file():
            raise UsageError(f"model spec: GGUF file {name} does not exist")
        return str(p.parent), p.name
    looks_local = p.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local and not p.is_dir():
        raise UsageError(f"model spec: folder {name} does not exist")
    if gguf and looks_local and not (p / gguf).is_file():
        raise UsageError(f"model spec: GGUF file {p / gguf} does not exist")
    return (str(p) if looks_local else name), gguf


class HFModel:
    """A transformers causal LM, loaded once; used by the scoring and generation engines."""

    def __init__(self, spec: ModelSpec):
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise MissingDependency("transformers", "'lmboard'") from e
        self.spec = spec
        where, gguf = _locate(spec)
        self.device_name = choose_device(spec.device) if spec.device_map is None else "auto"
        self.dtype_name = choose_dtype(spec.dtype, self.device_name if spec.device_map is None else "cuda")
        dtype = getattr(torch, self.dtype_name)
        kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
        if gguf:
            kwargs["gguf_file"] = gguf
        if spec.revision:
            kwargs["revision"] = spec.revision
        model_kwargs: dict[str, Any] = dict(kwargs, dtype=dtype)
        if spec.device_map:
            model_kwargs["device_map"] = spec.device_map
        if spec.load_in:
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as e:
                raise MissingDependency("bitsandbytes (needed for load_in)", "bitsandbytes") from e
            from transformers import BitsAndBytesConfig

            model_kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=spec.load_in == "8bit", load_in_4bit=spec.load_in == "4bit"
            )
        # transformers warns that packed GGUF weights prefer float32 even when it has
        # unpacked them (no kernel): the weights are plain tensors of our dtype.
        transformers.utils.logging.set_verbosity_error()
        self.gguf_cache: str | None = None
        cached = gguf_cache_dir(where, gguf, self.dtype_name) if gguf and not spec.load_in else None
        if cached is not None and (cached / "complete").is_file():
            # A GGUF unpacked before: the same tensors, saved as safetensors in our dtype.
            where, kwargs = str(cached), {k: v for k, v in kwargs.items() if k != "gguf_file"}
            model_kwargs.pop("gguf_file", None)
            self.gguf_cache = where
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(where, **model_kwargs)
            if cached is not None and self.gguf_cache is None:
                self.gguf_cache = save_gguf_cache(cached, self.model, self.tokenizer)
        except OSError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"model {spec.name}: cannot load ({first})") from e
        if spec.adapter:
            self._apply_adapter(spec.adapter)
        if spec.device_map is None and spec.load_in is None:
            self.model.to(self.device_name)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        from lmboard.engine.prefix_attention import enable

        self.prefix_attention = enable(self.model, self.device)
        # A sliding-window cache keeps only the window: a shared prefix cannot be reused as is.
        self.prefix_reuse_supported = not has_sliding_window(self.model.config.get_text_config())
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = self._context_length()
        self.gen_batch_size: int | None = None  # None: packed by a token budget
        self.versions = {
            "lmboard": _lmboard_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        }

    def _apply_adapter(self, adapter: str) -> None:
        try:
            from peft import PeftModel
        except ImportError as e:
            raise MissingDependency("peft (needed for adapter=)", "peft") from e
        if not Path(adapter).expanduser().exists() and adapter.startswith((".", "/", "~")):
            raise UsageError(f"model spec: adapter folder {adapter} does not exist")
        try:
            peft_model = PeftModel.from_pretrained(self.model, adapter)
        except (OSError, ValueError) as e:
            raise UsageError(f"model spec: cannot load adapter {adapter} ({str(e).splitlines()[0]})") from e
        # Merged once at load: scoring and generation then run a plain model at full speed.
        self.model = peft_model.merge_and_unload()

    def _context_length(self) -> int:
        cfg = self.model.config.get_text_config()
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(cfg, attr, None)
            if isinstance(v, int) and v > 0:
                return v
        v = getattr(self.tokenizer, "model_max_length", None)
        return v if isinstance(v, int) and 0 < v < 10**7 else 2048

    def eos_token_ids(self) -> list[int]:
        """Every end-of-turn id: the generation config's, the tokenizer's, <|im_end|>/<|eot_id|>..."""
        ids: list[int] = []
        gc_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for v in (gc_eos if isinstance(gc_eos, list) else [gc_eos]):
            if v is not None:
                ids.append(int(v))
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|endoftext|>", "<|end|>"):
            if tok in vocab:
                ids.append(int(vocab[tok]))
        return sorted(set(ids))

    def info(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {
            "model_spec": self.spec.to_dict(),
            "model_class": type(self.model).__name__,
            "dtype": self.dtype_name,
            "dtype_requested": self.spec.dtype,
            "device": str(self.device),
            "tokenizer": {
                "class": type(tok).__name__,
                "name_or_path": getattr(tok, "name_or_path", None),
                "vocab_size": len(tok),
                "bos_token": tok.bos_token,
                "eos_token": tok.eos_token,
            },
            "context_length": self.max_length,
            "gguf_cache": self.gguf_cache,
            "attention": self.model.config._attn_implementation,
            "threads": _threads(),
            "versions": self.versions,
        }

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise UsageError(
                f"model {self.spec.display_name} has no chat template: pass --raw to send plain text"
            )
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[GenRequest], settings: GenerationSettings) -> Iterator[GenResult]:
        from lmboard.engine.generation import generate_batched

        yield from generate_batched(self, requests, settings, self.gen_batch_size)

    def stream(self, messages: Sequence[dict[str, str]], settings: GenerationSettings) -> Iterator[str]:
        from lmboard.engine.generation import stream_one

        yield from stream_one(self, messages, settings)


def has_sliding_window(cfg) -> bool:
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or []):
        return True
    return bool(getattr(cfg, "sliding_window", None)) and getattr(cfg, "use_sliding_window", True) is not False


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
    from lmboard.config import stable_hash

    key = stable_hash([str(path.resolve()), st.st_size, st.st_mtime_ns, dtype, transformers.__version__])
    root = Path(os.environ.get("LMBOARD_CACHE", Path.home() / ".cache" / "lmboard"))
    return root / "gguf" / f"{path.stem}-{dtype}-{key}"


def save_gguf_cache(target: Path, model, tokenizer) -> str | None:
    """Save atomically (a temp folder renamed into place); failure only costs speed."""
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
        (tmp / "complete").write_text("ok")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        return str(target)
    except (OSError, ValueError, AttributeError):
        return None


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _lmboard_version() -> str:
    from lmboard import __version__

    return __version__


@register_model("hf")
def _load_hf(spec: ModelSpec) -> HFModel:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return HFModel(spec)
