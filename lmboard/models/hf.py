"""Hugging Face causal LMs: a local folder, a hub id, a GGUF file, a PEFT adapter.

The engines (lmboard/engine) score and generate on the loaded model through the
LocalLM protocol; this module only loads it and describes it."""

from __future__ import annotations

import os
import platform
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmboard.errors import MissingDependency, UsageError
from lmboard.lm import Capability, ModelSpec, encode_pair
from lmboard.registry import register_model
from lmboard.text import stable_hash
from lmboard.version import __version__

DTYPES = ("auto", "float32", "bfloat16", "float16")
LOAD_IN = ("8bit", "4bit")


@dataclass(frozen=True)
class HFOptions:
    """Options of ``hf:NAME``: a folder, a hub id or a GGUF file."""

    gguf_file: str | None = None
    adapter: str | None = None
    dtype: str = "auto"  # auto: bfloat16 where the hardware computes it natively, else float32
    device: str = "auto"
    device_map: str | None = None
    load_in: str | None = None  # 8bit | 4bit (bitsandbytes)
    trust_remote_code: bool = False
    revision: str | None = None

    def validate(self, where: str) -> None:
        if self.dtype not in DTYPES:
            raise UsageError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
        if self.load_in is not None and self.load_in not in LOAD_IN:
            raise UsageError(f"{where}: load_in must be 8bit or 4bit")


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

    if requested == "auto":  # under torchrun, each rank on its own GPU
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"model spec: device={requested} but no CUDA device is available")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UsageError(f"model spec: device must be auto, cpu or cuda:N (got {requested!r})")
    return requested


def _locate(spec: ModelSpec) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None); one-line errors for missing files."""
    name, gguf = spec.name, spec.options.gguf_file
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


@register_model("hf", options=HFOptions)
class HFModel:
    """A transformers causal LM, loaded once (LocalLM: the engines run it)."""

    capabilities = frozenset({Capability.LOGITS})

    def __init__(self, spec: ModelSpec):
        try:
            import torch
            import transformers
        except ImportError as e:
            raise MissingDependency("transformers", "'lmboard'") from e
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.spec = spec
        o: HFOptions = spec.options
        self.device_name = choose_device(o.device) if o.device_map is None else "auto"
        self.dtype_name = choose_dtype(o.dtype, self.device_name if o.device_map is None else "cuda")
        # transformers warns that packed GGUF weights prefer float32 even when it has
        # unpacked them (no kernel): the weights are plain tensors of our dtype.
        transformers.utils.logging.set_verbosity_error()
        if os.environ.get("TQDM_DISABLE") == "1":  # --quiet: its "Loading weights" bar too
            transformers.utils.logging.disable_progress_bar()
        # A reduced dtype rounds weights stored wider (a GGUF file's dequantized blocks, a
        # float32 checkpoint): the model then loads in float32 and keeps those originals
        # for the scoring engine's float32 recheck (exact_weights), so that a rechecked
        # answer is the float32 model's, not float32 arithmetic on rounded weights.
        keep = self._keeps_float32(o, where := _locate(spec))
        self.tokenizer, self.model, self.gguf_cache = self._load(o, torch.float32 if keep else getattr(torch, self.dtype_name))
        if o.adapter:
            self._apply_adapter(o.adapter)
        self.exact_weights: dict[str, Any] | None = None
        self.exact_source = "float32 weights" if self.dtype_name == "float32" else _upcast_note(where)
        if keep:
            self.exact_weights, self.exact_source = _float32_originals(self.model, getattr(torch, self.dtype_name))
        if o.device_map is None and o.load_in is None:
            self.model.to(self.device_name)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = self._context_length()
        self.versions = {
            "lmboard": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        }

    def _keeps_float32(self, o: HFOptions, where: tuple[str, str | None]) -> bool:
        """Whether to load in float32 and keep the originals: a reduced dtype on a CPU over
        weights stored wider, when a float32 copy fits in a quarter of the free memory."""
        if self.dtype_name == "float32" or self.device_name != "cpu" or o.device_map or o.load_in:
            return False
        stored = _stored_dtype(*where)
        if stored == self.dtype_name:
            return False  # upcasting the loaded weights gives the originals exactly
        return _fits_float32(*where)

    def _load(self, o: HFOptions, dtype) -> tuple[Any, Any, str | None]:
        """(tokenizer, model, the GGUF unpack cache folder or None)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where, gguf = _locate(self.spec)
        kwargs: dict[str, Any] = {"trust_remote_code": o.trust_remote_code}
        if gguf:
            kwargs["gguf_file"] = gguf
        if o.revision:
            kwargs["revision"] = o.revision
        model_kwargs: dict[str, Any] = dict(kwargs, dtype=dtype)
        if o.device_map:
            model_kwargs["device_map"] = o.device_map
        if o.load_in:
            model_kwargs["quantization_config"] = _bitsandbytes(o.load_in)
        dtype_name = str(dtype).removeprefix("torch.")
        cached = gguf_cache_dir(where, gguf, dtype_name) if gguf and not o.load_in else None
        gguf_cache = None
        if cached is not None and (cached / "complete").is_file():
            # A GGUF unpacked before: the same tensors, saved as safetensors in our dtype.
            where, gguf_cache = str(cached), str(cached)
            kwargs.pop("gguf_file", None)
            model_kwargs.pop("gguf_file", None)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(where, **model_kwargs)
        except OSError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"model {self.spec.name}: cannot load ({first})") from e
        if cached is not None and gguf_cache is None:
            gguf_cache = save_gguf_cache(cached, model, tokenizer)
        return tokenizer, model, gguf_cache

    def _apply_adapter(self, adapter: str) -> None:
        try:
            from peft import PeftModel
        except ImportError as e:
            raise MissingDependency("peft (needed for adapter=)", "peft") from e
        if not Path(adapter).expanduser().exists() and adapter.startswith((".", "/", "~")):
            raise UsageError(f"model spec: adapter folder {adapter} does not exist")
        try:
            with warnings.catch_warnings():  # transformers' deprecation notes about peft's calls
                warnings.simplefilter("ignore", FutureWarning)
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

    def check(self) -> None:
        """Loaded means usable."""

    def encode(self, text: str, special: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special).input_ids

    def encode_pair(self, context: str, continuation: str, special: bool = True) -> tuple[list[int], list[int]]:
        return encode_pair(self.tokenizer, context, continuation, special)

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
        import torch

        tok = self.tokenizer
        return {
            "model_spec": self.spec.to_dict(),
            "model_class": type(self.model).__name__,
            "dtype": self.dtype_name,
            "dtype_requested": self.spec.options.dtype,
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
            "float32_recheck_on": self.exact_source,
            "threads": torch.get_num_threads(),
            "versions": self.versions,
        }

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise UsageError(
                f"model {self.spec.display_name} has no chat template: pass --raw to send plain text"
            )
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def _stored_dtype(where: str, gguf: str | None) -> str | None:
    """The dtype the checkpoint's floating weights are stored in, where it can be read
    cheaply: a GGUF file dequantizes to float32; safetensors headers name theirs; a
    config's dtype otherwise. None: unknown (treated as wider than any reduced dtype)."""
    import json

    if gguf:
        return "float32"
    folder = Path(where)
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    for f in sorted(folder.glob("*.safetensors"))[:1]:
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
        except (OSError, ValueError):
            return None
        kinds = {v.get("dtype") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
        floats = [names[k] for k in kinds if k in names]
        return floats[0] if len(floats) == 1 else None
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("dtype") or cfg.get("torch_dtype")


def _fits_float32(where: str, gguf: str | None) -> bool:
    """A float32 copy of the weights (estimated from the files' size) within a quarter of free memory."""
    folder = Path(where)
    if gguf:
        size = (folder / gguf).stat().st_size * 8  # at most ~4.5 bits a weight in the file, 32 loaded
    else:
        files = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
        if not files:
            return False  # a hub id: its size is unknown here; do not double its memory
        size = sum(f.stat().st_size for f in files) * 2
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return False
    return size < free // 4


def _float32_originals(model: Any, dtype: Any) -> tuple[dict[str, Any], str]:
    """Keep the float32 parameters by name, then cast the parameters (not the buffers:
    rotary frequencies stay float32, as transformers keeps them) to ``dtype``."""
    exact = {n: p.detach() for n, p in model.named_parameters() if p.is_floating_point()}
    for p in model.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return exact, "float32 originals of the checkpoint's weights"


def _upcast_note(where: tuple[str, str | None]) -> str:
    stored = _stored_dtype(*where)
    if stored in ("bfloat16", "float16"):
        return f"weights upcast from the checkpoint's {stored} (exact)"
    return "weights upcast from the loaded dtype (a float32 copy did not fit: not the checkpoint's float32)"


def _bitsandbytes(load_in: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise MissingDependency("bitsandbytes (needed for load_in)", "bitsandbytes") from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=load_in == "8bit", load_in_4bit=load_in == "4bit")


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
