"""The speed job: measure a model (local weights or a streaming endpoint) and record it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from lmboard.lm import LM, WORK_GENERATE, Capability, StreamingLM, TimingLM, require
from lmboard.speed.endpoint import LoadSettings, measure_endpoint
from lmboard.speed.local import SpeedSettings, hardware, measure_local
from lmboard.store import Store
from lmboard.text import stable_hash


def run_speed(lm: LM, settings: SpeedSettings | LoadSettings, store: Store,
              progress: Callable[[int, int], None] | None = None, busy: float | None = None) -> dict:
    """Local models run exact work (SpeedSettings); endpoints take streamed load (LoadSettings).
    The record (settings, rows, hardware, provenance) is stored as a finished run;
    ``busy``: the share of CPU time other processes took just before (recorded)."""
    if isinstance(settings, SpeedSettings):
        local: TimingLM = require(lm, Capability.TIMING, "lmboard speed with --batch-sizes", TimingLM)
        rows, kind = measure_local(local, settings, progress), "local"
        # the runtime timed (its scheduler): settings of the measurement
        timed = {**dataclasses.asdict(settings), **lm.run_identity(WORK_GENERATE)}
    else:
        streaming: StreamingLM = require(lm, Capability.STREAM, "lmboard speed on an endpoint", StreamingLM)
        rows, kind = measure_endpoint(streaming, settings, progress), "endpoint"
        timed = dataclasses.asdict(settings)
    info = lm.info()
    record = {"kind": kind, "model": lm.spec.display_name, "settings": timed, "results": rows,
              "hardware": {**hardware(info), "busy_share_before": busy}, "provenance": info, "time": time.time()}
    run_id = f"speed-{stable_hash([lm.spec.canonical(), record['settings'], record['time']], 12)}"
    store.open_run(run_id, "speed", lm.spec.display_name, {"model": lm.spec.canonical(), "settings": record["settings"]},
                   record["provenance"])
    store.finish_run(run_id, {"results": rows, "hardware": record["hardware"]})
    return record
