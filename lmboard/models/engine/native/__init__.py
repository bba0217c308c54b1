"""Native kernels: C compiled on first use with the machine's C compiler, loaded with ctypes.

Two attention kernels, and the fused elementwise passes of a bfloat16 forward
(elementwise.c: RMSNorm to bfloat16, rotary from the q/k/v output, SiLU product; AVX-512
only, else torch's passes). The scoring engine's packed attention (packed_attention.c): each packed
row against its prefix cache and causally against its own segment in one pass, in
float32, 12 queries (rows x the query heads of one kv head) per block of keys; torch's
fused kernel spends most of its time on per-block overhead at these lengths (a segment
of 60-100 tokens, a prefix of 700). And decode attention over the slotted cache
(decode_attention.c): torch's fused CPU attention spends most of its time on per-head
overhead when each sequence has a single query, and it reads every key once per query
head; this kernel reads each key and value once for all the query heads that share
them and computes in float32 (caches in bfloat16 or float32). It also makes a
sequence's attention independent of its batch-mates (no padded width). Both are
written once over the vector operations of simd.h, for AVX-512 or AVX2 + FMA. Built
with ``cc -O3 -march=native -fopenmp`` into the cache folder (keyed by the source, the
header, the flags and the CPU), so it is compiled once per machine; without a compiler,
or if the build fails, or with ``LMBOARD_NATIVE=0``, the engine uses torch's kernel and
says why in ``why_not()``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("decode_attention.c")
PACKED_SOURCE = Path(__file__).with_name("packed_attention.c")
ELEMENTWISE_SOURCE = Path(__file__).with_name("elementwise.c")
HEADER = Path(__file__).with_name("simd.h")  # the vector operations both include (AVX-512 or AVX2)
# Compiled and linked apart: gcc 12 links crtfastmath.o (denormals flushed in the whole
# process) into a shared library when unsafe-math flags reach the link step.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fPIC"]
# the elementwise kernels round each product as torch's separate passes do (no fused multiply-add)
SOURCE_FLAGS = {"elementwise.c": ["-ffp-contract=off"]}
_STATE: dict[str, Any] = {}


def _cache_dir() -> Path:
    base = os.environ.get("LMBOARD_CACHE") or Path.home() / ".cache" / "lmboard"
    return Path(base) / "native"


def _cpu_id() -> str:
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _build(source: Path = SOURCE) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (cc or gcc) on PATH")
    flags = FLAGS + SOURCE_FLAGS.get(source.name, [])
    key = hashlib.sha256(source.read_bytes() + HEADER.read_bytes() + " ".join(flags).encode() + _cpu_id().encode()).hexdigest()[:16]
    out = _cache_dir() / f"{source.stem}-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as td:
        tmp, obj = Path(td) / out.name, Path(td) / "kernel.o"
        for cmd in ([cc, *flags, "-c", str(source), "-o", str(obj)], [cc, "-shared", "-fopenmp", str(obj), "-o", str(tmp), "-lm"]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise OSError(f"{Path(cc).name} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(tmp, out)  # atomic: a concurrent process sees the whole file or none
    return out


def _open(source: Path, why_key: str) -> Any:
    """The compiled library of ``source``, or None with the reason under ``why_key``."""
    if os.environ.get("LMBOARD_NATIVE", "1") == "0":
        _STATE[why_key] = "LMBOARD_NATIVE=0"
        return None
    try:
        import torch  # noqa: F401  (its OpenMP runtime must be the one loaded)

        return ctypes.CDLL(str(_build(source)))
    except OSError as e:
        _STATE[why_key] = str(e)
        return None


def _load() -> dict[str, Callable[..., None]] | None:
    lib = _open(SOURCE, "why")
    if lib is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fns = {}
    for cache_dtype in ("bf16", "f32"):
        fn = getattr(lib, f"decode_attention_{cache_dtype}")
        fn.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, ctypes.c_float]
        fn.restype = None
        fns[cache_dtype] = fn
    return fns


def decode_attention_kernel() -> dict[str, Callable[..., None]] | None:
    """The compiled kernels (by cache dtype: "bf16", "f32"), or None (then ``why_not()`` says why)."""
    if "fn" not in _STATE:
        _STATE["fn"] = _load()
    return _STATE["fn"]


def why_not() -> str | None:
    decode_attention_kernel()
    return _STATE.get("why")


def decode_attention(q: Any, k: Any, v: Any, lens: Any, scale: float) -> Any:
    """Attention of ``q`` (B, H, D) float32 against slots 0..B-1 of ``k``/``v``
    (slots, KH, cap, D) bfloat16 or float32, each over its first ``lens[b]`` positions;
    (B, H, D) float32."""
    import torch

    fns = decode_attention_kernel()
    assert fns is not None and k.dtype == v.dtype and k.is_contiguous() and v.is_contiguous()
    assert k.dtype in (torch.bfloat16, torch.float32)
    fn = fns["bf16" if k.dtype == torch.bfloat16 else "f32"]
    b, h, d = q.shape
    q = q.float().contiguous()
    lens = lens.to(torch.int64).contiguous()
    out = torch.empty_like(q)
    fn(q.data_ptr(), k.data_ptr(), v.data_ptr(), lens.data_ptr(), out.data_ptr(), b, h, k.shape[1], d, k.shape[2],
       float(scale))
    return out


def applies(dtype: Any, heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel runs this cache: bfloat16 or float32, at most 16 query heads
    per kv head and head_dim <= 256 (its stack buffers), and it compiled here."""
    import torch

    return (dtype in (torch.bfloat16, torch.float32) and heads % kv_heads == 0 and heads // kv_heads <= 16
            and head_dim <= 256 and decode_attention_kernel() is not None)


QB = 12  # queries per block in packed_attention.c


def _load_packed() -> tuple[Callable[..., int] | None, int]:
    """The packed kernel and its vector width (16: AVX-512, 8: AVX2), or (None, 0)."""
    lib = _open(PACKED_SOURCE, "packed_why")
    if lib is None:
        return None, 0
    width = lib.lmb_packed_ok()
    if not width:
        _STATE["packed_why"] = "no AVX-512 or AVX2 + FMA"
        return None, 0
    fn = lib.lmb_attend
    i32, ptr = ctypes.c_int, ctypes.c_void_p
    fn.argtypes = [ptr, ptr, ptr, i32, i32, i32, i32, ptr, i32, i32, ptr, ptr, ptr, ptr, ctypes.c_float, ptr]
    fn.restype = ctypes.c_int
    return fn, width


# At 8 lanes (AVX2) the kernel is exact but not faster than torch's fused kernel (a
# 12 x 80-token batch on a 700-token prefix, SmolLM2 float32, 2 cores: 5.18 s against
# 4.94 s), so the engine keeps torch's there; the tests still run it (``any_width``).
_AVX2_ONLY = "AVX2 only (not faster than torch's kernel at 8 lanes)"


def packed_attention_kernel(any_width: bool = False) -> Callable[..., int] | None:
    """The compiled packed-attention kernel, or None (``packed_why_not()`` says why).
    The engine takes it on AVX-512 only; ``any_width`` also takes the AVX2 build."""
    if "packed" not in _STATE:
        _STATE["packed"] = _load_packed()
    fn, width = _STATE["packed"]
    return fn if width >= 16 or any_width else None


def packed_why_not(any_width: bool = False) -> str | None:
    if packed_attention_kernel(any_width) is not None:
        return None
    return _STATE.get("packed_why", _AVX2_ONLY)


class PackedLayout:
    """A packed batch's rows for the kernel: blocks of consecutive rows of one segment
    (at most QB // G rows, G query heads per kv head: QB queries share each key), the
    first row of each block's segment, and each row's prefix (-1: none)."""

    def __init__(self, lens: list[int], prefix_of: list[int], group: int, device: Any):
        import torch

        per = max(1, QB // group)
        blocks: list[int] = []
        pid: list[int] = []
        start = 0
        for n, p in zip(lens, prefix_of, strict=True):
            for r in range(start, start + n, per):
                blocks += (r, min(per, start + n - r), start)
            pid += [p] * n
            start += n
        self.blocks = torch.tensor(blocks, dtype=torch.int32, device=device)
        self.pid = torch.tensor(pid, dtype=torch.int32, device=device)
        self.n_blocks = len(blocks) // 3


def packed_attention(q: Any, k: Any, v: Any, layout: PackedLayout, prefixes: list[tuple[Any, Any]],
                     scale: float) -> Any:
    """Attention of packed rows ``q`` (T, H, D) over their prefix's keys and values
    (``prefixes[p]``: each (KH, P, D)) and causally over their own segment's (``k``,
    ``v``: (T, KH, D)); float32 in and out, (T, H, D)."""
    import torch

    fn = packed_attention_kernel(any_width=True)  # the engine asked packed_applies first
    assert fn is not None
    t, h, d = q.shape
    kh = k.shape[1]
    q, v = q.contiguous(), v.contiguous()
    kt = k.permute(1, 2, 0).contiguous()  # (KH, D, T): 16 keys per vector load
    pk = [a.transpose(1, 2).contiguous() for a, _ in prefixes]
    pv = [b.contiguous() for _, b in prefixes]
    n = max(len(pk), 1)
    ptr_k = (ctypes.c_void_p * n)(*[a.data_ptr() for a in pk])
    ptr_v = (ctypes.c_void_p * n)(*[b.data_ptr() for b in pv])
    plen = torch.tensor([b.shape[1] for b in pv] or [0], dtype=torch.int32)
    out = torch.empty_like(q)
    code = fn(q.data_ptr(), kt.data_ptr(), v.data_ptr(), t, h, kh, d, layout.blocks.data_ptr(), 0, layout.n_blocks,
              layout.pid.data_ptr(), ptr_k, ptr_v, plen.data_ptr(), float(scale), out.data_ptr())
    if code:
        raise MemoryError("packed attention: a buffer could not be allocated")
    return out


def packed_applies(dtype: Any, heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether the packed kernel runs these rows: float32, at most QB query heads per kv
    head, head_dim a multiple of 16, and it compiled here."""
    import torch

    return (dtype == torch.float32 and heads % kv_heads == 0 and heads // kv_heads <= QB and head_dim % 16 == 0
            and packed_attention_kernel() is not None)


def _load_elementwise() -> Any:
    lib = _open(ELEMENTWISE_SOURCE, "elementwise_why")
    if lib is None:
        return None
    if lib.lmb_elementwise_width() < 16:
        _STATE["elementwise_why"] = "no AVX-512 (the engine takes the vector build only; the scalar one was not timed)"
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.lmb_rms_norm_bf16.argtypes = [ptr, ptr, i64, i64, ctypes.c_float, ptr]
    lib.lmb_silu_mul_bf16.argtypes = [ptr, i64, i64, ptr]
    lib.lmb_qkv_rotary.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ptr, ptr, ptr]
    for fn in (lib.lmb_rms_norm_bf16, lib.lmb_silu_mul_bf16, lib.lmb_qkv_rotary):
        fn.restype = None
    return lib


def elementwise_kernels() -> Any:
    """The fused elementwise kernels of a bfloat16 forward (elementwise.c), or None
    (``elementwise_why_not()`` says why)."""
    if "elementwise" not in _STATE:
        _STATE["elementwise"] = _load_elementwise()
    return _STATE["elementwise"]


def elementwise_why_not() -> str | None:
    return None if elementwise_kernels() is not None else _STATE.get("elementwise_why")


def rms_norm_bf16(x: Any, w: Any, eps: float) -> Any:
    """RMSNorm of float32 rows ``x`` (T, H), weighted by ``w`` (H,) float32, in bfloat16."""
    import torch

    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.bfloat16)
    elementwise_kernels().lmb_rms_norm_bf16(x.data_ptr(), w.data_ptr(), x.shape[0], x.shape[1], eps, out.data_ptr())
    return out


def silu_mul_bf16(gu: Any, inter: int) -> Any:
    """SiLU(gate) * up in bfloat16 from ``gu`` (T, 2 inter) bfloat16, gate first."""
    import torch

    gu = gu.contiguous()
    out = torch.empty((gu.shape[0], inter), dtype=torch.bfloat16)
    elementwise_kernels().lmb_silu_mul_bf16(gu.data_ptr(), gu.shape[0], inter, out.data_ptr())
    return out


def qkv_rotary(qkv: Any, cos: Any, sin: Any, heads: int, kv_heads: int, head_dim: int) -> tuple[Any, Any, Any]:
    """(q (T, H, D), k (T, KH, D), v (T, KH, D)) float32 from a fused q/k/v output (T, (H
    + 2 KH) D) bfloat16, rotary (``cos``, ``sin``: (T, D) float32) applied to q and k."""
    import torch

    t = qkv.shape[0]
    qkv, cos, sin = qkv.contiguous(), cos.contiguous(), sin.contiguous()
    q = torch.empty((t, heads, head_dim), dtype=torch.float32)
    k = torch.empty((t, kv_heads, head_dim), dtype=torch.float32)
    v = torch.empty((t, kv_heads, head_dim), dtype=torch.float32)
    elementwise_kernels().lmb_qkv_rotary(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), t, heads, kv_heads, head_dim,
                                         q.data_ptr(), k.data_ptr(), v.data_ptr())
    return q, k, v
