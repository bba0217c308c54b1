"""Loading a Hugging Face causal LM for the hf backend: where its files are, which dtype
and device, the GGUF unpack cache, the float32 originals the recheck runs on, adapters."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmboard.errors import MissingDependency, UsageError
from lmboard.lm import ModelSpec
from lmboard.models.gguf_cache import gguf_cache_dir, save_gguf_cache
from lmboard.version import __version__


@dataclass
class Loaded:
    """A loaded model and what describes it."""

    tokenizer: Any
    model: Any
    device: Any  # torch.device of its parameters
    dtype_name: str
    exact_weights: dict[str, Any] | None  # the checkpoint's float32 parameters, where kept
    exact_source: str  # what the float32 recheck runs on, in words
    gguf_cache: str | None
    max_length: int
    versions: dict[str, str]


@dataclass
class Described:
    """What a model is without its weights: enough for a job to tokenize its prompts,
    name its run and find what the store holds, so a finished run loads no weights."""

    tokenizer: Any
    config: Any
    generation_config: Any
    device: str
    dtype_name: str
    keep: bool  # load in float32 and keep the originals (decided once: free memory moves)
    exact_source: str
    gguf_cache: str | None
    max_length: int
    versions: dict[str, str]


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise MissingDependency("transformers", "'lmboard'") from e
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers warns that packed GGUF weights prefer float32 even when it has
    # unpacked them (no kernel): the weights are plain tensors of our dtype.
    transformers.utils.logging.set_verbosity_error()
    if os.environ.get("TQDM_DISABLE") == "1":  # --quiet or a log: its "Loading weights" bar too
        transformers.utils.logging.disable_progress_bar()
    return torch, transformers


def _decide(spec: ModelSpec) -> tuple[str, str, bool, tuple[str, str | None]]:
    """(device, dtype name, keep float32 originals, where)."""
    o = spec.options
    device = choose_device(o.device) if o.device_map is None else "auto"
    dtype_name = choose_dtype(o.dtype, device if o.device_map is None else "cuda")
    # A reduced dtype rounds weights stored wider (a GGUF file's dequantized blocks, a
    # float32 checkpoint): the model then loads in float32 and keeps those originals
    # for the float32 recheck (exact_weights), so that a rechecked answer is the
    # float32 model's, not float32 arithmetic on rounded weights.
    where = locate(spec)
    return device, dtype_name, _keeps_float32(o, device, dtype_name, where), where


def _versions(torch: Any, transformers: Any) -> dict[str, str]:
    import platform

    return {"lmboard": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def describe(spec: ModelSpec) -> Described | None:
    """The model without its weights, where that is cheap: a folder, a hub id, or a GGUF
    file already unpacked into the cache, with a local adapter (merged when the weights
    load); None where the weights load at once (a GGUF not yet unpacked, device_map,
    load_in, an adapter folder that is not one)."""
    o = spec.options
    if o.device_map or o.load_in:
        return None
    if o.adapter and not (Path(o.adapter).expanduser() / "adapter_config.json").is_file():
        return None  # the load says what is wrong with it, before any work
    torch, transformers = _imports()
    device, dtype_name, keep, (where, gguf) = _decide(spec)
    cached = None
    if gguf:
        cached = gguf_cache_dir(where, gguf, "float32" if keep else dtype_name)
        if cached is None or not (cached / "complete").is_file():
            return None
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    folder = str(cached) if cached is not None else where
    kwargs: dict[str, Any] = {"trust_remote_code": o.trust_remote_code}
    if o.revision and cached is None:
        kwargs["revision"] = o.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        config = AutoConfig.from_pretrained(folder, **kwargs)
    except (OSError, ValueError):
        return None  # the full load says what is wrong
    try:
        gen = GenerationConfig.from_pretrained(folder, **kwargs)
    except (OSError, ValueError):
        gen = GenerationConfig.from_model_config(config)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    source = ("float32 originals of the checkpoint's weights" if keep else
              "float32 weights" if dtype_name == "float32" else upcast_note((where, gguf)))
    return Described(tokenizer, config, gen, device, dtype_name, keep, source,
                     str(cached) if cached is not None else None,
                     context_length(config, tokenizer), _versions(torch, transformers))


def load(spec: ModelSpec, described: Described | None = None) -> Loaded:
    """Load ``spec``'s tokenizer and model (its adapter merged), on its device, in its
    dtype. ``described``: describe()'s answer, where it was made: its decision on the
    float32 originals holds and its tokenizer is used (not read again)."""
    torch, transformers = _imports()
    o = spec.options
    device, dtype_name, keep, where = _decide(spec)
    keep = keep if described is None else described.keep
    tokenizer, model, gguf_cache = _load(spec, torch.float32 if keep else getattr(torch, dtype_name),
                                         described.tokenizer if described else None)
    if o.adapter:
        model = _apply_adapter(model, o.adapter)
    exact, source = None, "float32 weights" if dtype_name == "float32" else upcast_note(where)
    if keep:
        exact, source = float32_originals(model, getattr(torch, dtype_name))
    if o.device_map is None and o.load_in is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(tokenizer, model, next(model.parameters()).device, dtype_name, exact, source, gguf_cache,
                  context_length(model.config, tokenizer), _versions(torch, transformers))


def _keeps_float32(o: Any, device: str, dtype_name: str, where: tuple[str, str | None]) -> bool:
    """Whether to load in float32 and keep the originals: a reduced dtype on a CPU over
    weights stored wider, when a float32 copy fits in a quarter of the free memory."""
    if dtype_name == "float32" or device != "cpu" or o.device_map or o.load_in:
        return False
    if stored_dtype(*where) == dtype_name:
        return False  # upcasting the loaded weights gives the originals exactly
    return fits_float32(*where)


def _load(spec: ModelSpec, dtype: Any, tokenizer: Any = None) -> tuple[Any, Any, str | None]:
    """(tokenizer, model, the GGUF unpack cache folder or None); ``tokenizer``: one read
    already (describe), not read again.

    A GGUF file is unpacked once into the cache folder, and the model is then loaded from
    that folder, the first time too: the weights are the same numbers either way, but
    the matrix products' last bits depend on where the tensors lie in memory (seen:
    float32 exam logits of the unpacking run differed from every later run's), and
    every run should compute alike."""
    o = spec.options
    where, gguf = locate(spec)
    kwargs: dict[str, Any] = {"trust_remote_code": o.trust_remote_code}
    if o.revision:
        kwargs["revision"] = o.revision
    model_kwargs: dict[str, Any] = dict(kwargs, dtype=dtype)
    if o.device_map:
        model_kwargs["device_map"] = o.device_map
    if o.load_in:
        model_kwargs["quantization_config"] = bitsandbytes(o.load_in)
    dtype_name = str(dtype).removeprefix("torch.")
    cached = gguf_cache_dir(where, gguf, dtype_name) if gguf and not o.load_in else None
    if cached is not None and not (cached / "complete").is_file():
        tokenizer, model = _from_pretrained(spec, where, {**kwargs, "gguf_file": gguf},
                                            {**model_kwargs, "gguf_file": gguf})
        saved = save_gguf_cache(cached, model, tokenizer)
        if saved is None:  # the cache could not be written: this load's model it is
            return tokenizer, model, None
        del model
    if cached is not None:  # the GGUF's unpacked tensors, saved as safetensors in our dtype
        return (*_from_pretrained(spec, str(cached), kwargs, model_kwargs, tokenizer), str(cached))
    if gguf:
        kwargs["gguf_file"] = model_kwargs["gguf_file"] = gguf
    return (*_from_pretrained(spec, where, kwargs, model_kwargs, tokenizer), None)


def _from_pretrained(spec: ModelSpec, where: str, kwargs: dict, model_kwargs: dict,
                     tokenizer: Any = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        return (tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(where, **kwargs),
                AutoModelForCausalLM.from_pretrained(where, **model_kwargs))
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"model {spec.name}: cannot load ({first})") from e


def _apply_adapter(model: Any, adapter: str) -> Any:
    try:
        from peft import PeftModel
    except ImportError as e:
        raise MissingDependency("peft (needed for adapter=)", "peft") from e
    if not Path(adapter).expanduser().exists() and adapter.startswith((".", "/", "~")):
        raise UsageError(f"model spec: adapter folder {adapter} does not exist")
    try:
        with warnings.catch_warnings():  # transformers' deprecation notes about peft's calls
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError) as e:
        raise UsageError(f"model spec: cannot load adapter {adapter} ({str(e).splitlines()[0]})") from e
    # Merged once at load: scoring and generation then run a plain model at full speed.
    return peft_model.merge_and_unload()


def context_length(config: Any, tokenizer: Any) -> int:
    cfg = config.get_text_config()
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(tokenizer, "model_max_length", None)
    return v if isinstance(v, int) and 0 < v < 10**7 else 2048


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


def locate(spec: ModelSpec) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None); one-line errors for missing files."""
    name, gguf = spec.name, spec.option("gguf_file")
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


def stored_dtype(where: str, gguf: str | None) -> str | None:
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


def fits_float32(where: str, gguf: str | None) -> bool:
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


def float32_originals(model: Any, dtype: Any) -> tuple[dict[str, Any], str]:
    """Keep the float32 parameters by name, then cast the parameters (not the buffers:
    rotary frequencies stay float32, as transformers keeps them) to ``dtype``."""
    exact = {n: p.detach() for n, p in model.named_parameters() if p.is_floating_point()}
    for p in model.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return exact, "float32 originals of the checkpoint's weights"


def upcast_note(where: tuple[str, str | None]) -> str:
    stored = stored_dtype(*where)
    if stored in ("bfloat16", "float16"):
        return f"weights upcast from the checkpoint's {stored} (exact)"
    return "weights upcast from the loaded dtype (a float32 copy did not fit: not the checkpoint's float32)"


def bitsandbytes(load_in: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise MissingDependency("bitsandbytes (needed for load_in)", "bitsandbytes") from e
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_8bit=load_in == "8bit", load_in_4bit=load_in == "4bit")


def memory(device: Any, reset: bool = False) -> dict[str, float]:
    """Peak memory in MB since the last reset: the process's resident set (VmHWM) on a CPU,
    allocated and reserved on a GPU. ``reset``: start a new peak."""
    import torch

    from lmboard.peak import peak_rss_mb, reset_rss_peak

    cuda = getattr(device, "type", "cpu") == "cuda"
    if reset:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        reset_rss_peak()
        return {}
    out = {"peak_rss_mb": peak_rss_mb()}
    if cuda:
        out.update(max_allocated_mb=torch.cuda.max_memory_allocated() / 2**20,
                   max_reserved_mb=torch.cuda.max_memory_reserved() / 2**20)
    return out
