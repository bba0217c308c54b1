"""The continuous-batching scheduler on a tiny random Llama (float32): slots reused as
sequences finish, answers independent of batch-mates (greedy and seeded sampling), end
tokens and stop strings cut where they should, several recipes in one job, memory sizing
and out-of-memory back-off."""

from __future__ import annotations

import pytest

from helpers import continuous, generate, grouped
from lmboard.lm import GenerationSettings, GenRequest
from lmboard.models.engine.batching import InjectedOOM
from lmboard.models.engine.packed import packed_for
from lmboard.models.engine.sampling import SamplingConfig
from lmboard.models.engine.scheduler import DecodeJob, SchedulerSettings, plan_slots, run_continuous

WORDS = "the answer is a question of time and the room was clean but the staff".split()


def prompts(n: int, start: int = 0) -> list[GenRequest]:
    return [GenRequest(f"p{i}", text=" ".join(WORDS[: 2 + (i * 5) % len(WORDS)]) + f" {i}") for i in range(start, start + n)]


def answers(lm, reqs, settings, **sched) -> dict:
    return {r.key: r for r in continuous(lm, [(reqs, settings)], SchedulerSettings(**sched))}


GREEDY = GenerationSettings(max_new_tokens=12, do_sample=False, raw=True, ignore_eos=True)


def test_continuous_matches_one_at_a_time_and_static(tiny_sp):
    reqs = prompts(7)
    together = answers(tiny_sp, reqs, GREEDY, max_batch=3)
    alone = {r.key: next(iter(tiny_sp.generate([r], GREEDY))) for r in reqs}
    static = {r.key: r for r in generate(tiny_sp, reqs, GREEDY, scheduler="static")}
    assert {k: r.output for k, r in together.items()} == {k: r.output for k, r in alone.items()}
    assert {k: r.output for k, r in together.items()} == {k: r.output for k, r in static.items()}
    assert all(r.output_tokens == 12 and r.finish_reason == "length" for r in together.values())
    assert {r.settings["scheduler"] for r in together.values()} == {"continuous"}
    assert {r.settings["max_batch"] for r in together.values()} == {3}


def test_slots_are_reused_as_sequences_finish(tiny_sp):
    events: list[tuple[str, str, int]] = []
    reqs = prompts(6)
    pm, _ = packed_for(tiny_sp.model, tiny_sp.device)
    ids = [tiny_sp.encode(r.text) for r in reqs]
    job = DecodeJob(ids, [r.key for r in reqs], 3, SamplingConfig(False))
    sched = SchedulerSettings(max_batch=2, on_event=lambda *e: events.append(e))
    done = list(run_continuous(pm, tiny_sp.model.get_output_embeddings(), job, sched))
    assert sorted(f.index for f in done) == list(range(6))
    admits = [e for e in events if e[0] == "admit"]
    assert {slot for _, _, slot in admits} == {0, 1}  # six sequences through two slots
    first_finish = next(i for i, e in enumerate(events) if e[0] == "finish")
    later = [e for e in events[first_finish:] if e[0] == "admit"]
    assert len(later) == 4  # admitted into freed slots while others were still decoding
    assert all(len(f.tokens) == 3 for f in done)


def test_answer_does_not_depend_on_batch_mates_greedy_and_sampled(tiny_sp):
    target = prompts(1, start=3)[0]
    sampled = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.3, top_k=50, top_p=0.9,
                                 seed=7, raw=True, ignore_eos=True)
    for settings in (GREEDY, sampled):
        alone = answers(tiny_sp, [target], settings)[target.key].output
        crowd = answers(tiny_sp, prompts(5, start=10) + [target] + prompts(3, start=20), settings, max_batch=4)
        assert crowd[target.key].output == alone
    a = answers(tiny_sp, [target], sampled)[target.key].output
    b = answers(tiny_sp, [target], GenerationSettings(**{**sampled.to_dict(), "stop": (), "seed": 8}))[target.key].output
    assert a != b  # the seed matters (and so sampling really samples)


def test_end_token_cuts_and_stays_last(tiny_sp):
    req = prompts(1, start=2)[0]
    pm, _ = packed_for(tiny_sp.model, tiny_sp.device)
    head = tiny_sp.model.get_output_embeddings()
    ids = [tiny_sp.encode(req.text)]
    free = next(iter(run_continuous(pm, head, DecodeJob(ids, ["k"], 12, SamplingConfig(False)), SchedulerSettings())))
    end = free.tokens[4]
    cut = next(iter(run_continuous(pm, head, DecodeJob(ids, ["k"], 12, SamplingConfig(False, eos=(end,))),
                                   SchedulerSettings())))
    assert cut.tokens == free.tokens[: free.tokens.index(end) + 1]


def test_stop_string_cuts_the_answer(tiny_sp):
    req = prompts(1, start=4)[0]
    free = answers(tiny_sp, [req], GREEDY)[req.key]
    stop = free.output[len(free.output) // 2:][:3]
    assert stop.strip()
    cut = answers(tiny_sp, [req], GenerationSettings(**{**GREEDY.to_dict(), "stop": (stop,)}))[req.key]
    assert cut.output == free.output[: free.output.index(stop)]
    assert cut.finish_reason == "stop" and cut.output_tokens < free.output_tokens


def test_slots_sized_from_memory(tiny_sp):
    pm, _ = packed_for(tiny_sp.model, tiny_sp.device)
    per_token = 2 * 2 * 2 * 16 * 4  # layers x (k, v) x kv heads x head dim x float32
    assert plan_slots(pm, 100, 50, SchedulerSettings(memory_bytes=per_token * 100 * 5)) == 5
    assert plan_slots(pm, 100, 3, SchedulerSettings(memory_bytes=per_token * 100 * 5)) == 3
    assert plan_slots(pm, 100, 50, SchedulerSettings(memory_bytes=1)) == 1
    reqs = prompts(8)
    limited = answers(tiny_sp, reqs, GREEDY, memory_bytes=per_token * 40 * 3)
    assert {r.settings["max_batch"] for r in limited.values()} == {3}


def test_out_of_memory_backs_off_and_gives_the_same_answers(tiny_sp):
    reqs = prompts(8)
    ref = answers(tiny_sp, reqs, GREEDY, max_batch=8)
    seen = []

    def guard(sequences: int, positions: int) -> None:
        seen.append(sequences)
        if sequences > 3:
            raise InjectedOOM(f"injected: {sequences} sequences")

    got = answers(tiny_sp, reqs, GREEDY, max_batch=8, oom_guard=guard)
    assert {k: r.output for k, r in got.items()} == {k: r.output for k, r in ref.items()}
    assert max(seen) > 3 and min(r.settings["max_batch"] for r in got.values()) <= 3
    with pytest.raises(InjectedOOM):
        answers(tiny_sp, reqs[:1], GREEDY, oom_guard=lambda s, p: (_ for _ in ()).throw(InjectedOOM("always")))


def test_groups_in_one_job_answer_as_each_group_alone(tiny_sp):
    """Routes with their own limits, stops and prefixes (a shared start per group) decode
    in one job with the same answers as one job per group; sampled groups run apart."""
    head = "the staff was clean and the room "
    a = [GenRequest(f"a{i}", text=head + " ".join(WORDS[i:i + 3])) for i in range(4)]
    b = [GenRequest(f"b{i}", text="time " + " ".join(WORDS[i + 2:i + 6])) for i in range(3)]
    short = GenerationSettings(max_new_tokens=3, do_sample=False, raw=True, ignore_eos=True)
    free = answers(tiny_sp, b, GenerationSettings(**{**GREEDY.to_dict(), "max_new_tokens": 9}))
    stop = free["b1"].output[len(free["b1"].output) // 2:][:2]
    assert stop.strip()
    long = GenerationSettings(max_new_tokens=9, do_sample=False, raw=True, ignore_eos=True, stop=(stop,))
    sampled = GenerationSettings(max_new_tokens=5, do_sample=True, temperature=1.2, seed=3, raw=True, ignore_eos=True)
    c = prompts(2, start=30)
    sets = [(a, short), (b, long), (c, sampled)]
    together = {r.key: r for r in tiny_sp.generate(grouped(sets), short)}
    apart = {r.key: r for reqs, st in sets for r in tiny_sp.generate(reqs, st)}
    assert {k: r.output for k, r in together.items()} == {k: r.output for k, r in apart.items()}
    assert all(together[r.key].output_tokens == 3 for r in a)
    assert together["b1"].finish_reason == "stop" and stop not in together["b1"].output
    assert {k for k, r in together.items() if r.finish_reason == "length"} >= {r.key for r in a}
    assert set(together) == {r.key for reqs, _ in sets for r in reqs}
    skipped = {r.key for r in tiny_sp.generate(grouped(sets), short, skip=lambda k: k.startswith("a"))}
    assert skipped == {r.key for r in b + c}


def test_close_greedy_answers_are_decoded_again_in_float32(sp_model_dir, tiny_sp):
    """In bfloat16, an answer whose closest decision (its two best tokens, in float32
    logits) fell under the margin is float32's answer; the others are bfloat16's own."""
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    bf = load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=bfloat16"))
    reqs = prompts(10)
    st = GenerationSettings(max_new_tokens=10, do_sample=False, raw=True, ignore_eos=True)
    fp32 = {r.key: r.output for r in tiny_sp.generate(reqs, st)}
    plain = {r.key: r for r in bf.generate(reqs, st)}  # not exact: no recheck
    assert not any("recheck" in r.settings or r.note for r in plain.values())
    assert {k: r.output for k, r in plain.items()} != fp32  # a random model's logits nearly tie: bfloat16 moves some
    every = {r.key: r for r in generate(bf, reqs, st, exact=True, recheck=1e9)}
    assert {k: r.output for k, r in every.items()} == fp32
    assert all(r.settings["recheck"] == "float32" and r.note == {"recheck": "float32"} for r in every.values())
    # a margin in between: exactly the answers whose closest call fell under it are redone
    pm, _ = packed_for(bf.model, bf.device)
    ids = [bf.encode(r.text) for r in reqs]
    job = DecodeJob(ids, [r.key for r in reqs], 10, SamplingConfig(False), watch=True)
    gaps = {reqs[f.index].key: f.closest
            for f in run_continuous(pm, bf.model.get_output_embeddings(), job, SchedulerSettings())}
    margin = sorted(gaps.values())[len(gaps) // 2]
    some = {r.key: r for r in generate(bf, reqs, st, exact=True, recheck=margin)}
    redone = {k for k, r in some.items() if r.settings.get("recheck") == "float32"}
    assert redone == {k for k, g in gaps.items() if g < margin}
    assert all(some[k].output == (fp32[k] if k in redone else plain[k].output) for k in gaps)


def test_prompt_lookup_draft():
    from lmboard.models.engine.scheduler import lookup_draft

    ctx = [5, 6, 7, 8, 9, 1, 5, 6, 7]
    assert lookup_draft(ctx, 3) == [8, 9, 1]  # the 3-gram 5 6 7 seen before: what followed it
    assert lookup_draft(ctx, 10) == [8, 9, 1, 5, 6, 7]  # up to the context's end
    assert lookup_draft([1, 2, 3, 9, 2, 3, 4, 3], 2) == [4, 3]  # no 3- or 2-gram repeats: the latest 3 before
    assert lookup_draft([1, 2, 3, 4], 5) == [] and lookup_draft([4], 2) == []
    assert lookup_draft([7, 1, 7, 2, 7], 1) == [2]  # the latest earlier occurrence


def test_speculative_tail_gives_the_step_by_step_answers(tiny_sp):
    """Prompt lookup at the tail (speculate=True: on in float32 too) keeps exactly the
    tokens step-by-step decoding chooses, with fewer forwards where its guesses hold (a
    random model's greedy answers fall into loops that the lookup then predicts)."""
    reqs = prompts(3) + [GenRequest("loop", text=" ".join(WORDS[:6] * 4))]
    settings = GenerationSettings(max_new_tokens=40, do_sample=False, raw=True, ignore_eos=True)
    forwards = {}
    outs = {}
    for spec in (False, True):
        n = [0]
        outs[spec] = {k: r.output for k, r in answers(tiny_sp, reqs, settings, max_batch=4, speculate=spec,
                                                      on_tokens=lambda k, n=n: n.__setitem__(0, n[0] + 1)).items()}
        forwards[spec] = n[0]
    assert outs[True] == outs[False]
    assert forwards[False] == 40  # one forward per token (all four in flight together)
    assert forwards[True] < forwards[False]
