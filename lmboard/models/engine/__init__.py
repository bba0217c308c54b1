"""The hf backend's runtimes (lmboard/models/hf.py): nothing outside models/ imports them.

runtime.py is the backend's way in: it picks the CPU engine or the generic runtime and
answers the protocol's score / generate / stream / timing calls.

    requests.py     ScoreRequests -> scoring.py (score_last: prefix KV reuse, packed
                    batches, recheck.py's float32 recheck) and continuations.py (score_labels)
    continuous.py   request sets in one decode job on scheduler.py (continuous batching,
                    decode.py, sampling.py), greedy answers rechecked in float32
    generation.py   the static path, a streamed answer, exact work for timing
    generic.py      transformers' continuous batching (the generic runtime's generation)

Inside: plan.py (what runs where, pure), prefix_cache.py, runner.py (the runner
protocol), packed.py and kv.py (the two runners), packed_runner.py (the float32 twin),
prefix_attention.py, prefill.py, native/ (C kernels), arch.py, batching.py, stats.py,
local.py (what the engine reads of the backend) and transformers_api.py (every call
into transformers' internals).
"""
