"""What a trained adapter records about itself (``lmboard-finetune.json`` in its folder),
the ``--out`` check, and the eval-side check that a model is not tested on its training rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.lm import ModelSpec

FILE = "lmboard-finetune.json"


def read(folder: Path) -> dict | None:
    p = Path(folder) / FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write(folder: Path, record: dict) -> None:
    """Atomically (a killed run never leaves half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (FILE + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, folder / FILE)


def check_out(folder: Path, run_id: str) -> dict | None:
    """The record of this run if ``folder`` holds it (resume); an error if it holds another's."""
    rec = read(folder)
    if rec is not None and rec.get("run_id") != run_id:
        base = rec.get("base", {}).get("name", "?")
        raise UsageError(f"--out {folder} holds another run's adapter (run {rec.get('run_id')}, base {base}, "
                         f"data {rec.get('data', {}).get('path', '?')}); choose another folder")
    if rec is None and (folder / "adapter_config.json").is_file():
        raise UsageError(f"--out {folder} holds an adapter that lmboard did not train; choose another folder")
    return rec


def trained_record(spec: ModelSpec) -> tuple[Path, dict] | None:
    """The fine-tuning record of the model a spec loads: its adapter folder's, or a merged folder's."""
    for where in (spec.option("adapter"), spec.name):
        if where and Path(where).expanduser().is_dir():
            rec = read(Path(where).expanduser())
            if rec is not None:
                return Path(where), rec
    return None


def check_not_trained_on(spec: ModelSpec, data: Path, test_lines: list[int]) -> None:
    """Refuse to test a fine-tuned model on rows it was trained on (same file, same lines)."""
    found = trained_record(spec)
    if found is None:
        return
    where, rec = found
    from lmboard.finetune.data import file_hash

    digest = file_hash(Path(data))
    for d in rec.get("trained_on") or [rec.get("data", {})]:
        if d.get("sha256") != digest:
            continue
        overlap = sorted(set(d.get("train_lines", [])).intersection(test_lines))
        if overlap:
            how = (f"test on the other side of its split: --split {d['split']} --seed {d['seed']}" if d.get("split")
                   else "it was trained on every row of this file")
            raise UsageError(f"--data {data}: {len(overlap)} of the {len(test_lines)} test rows (lines "
                             f"{', '.join(map(str, overlap[:5]))}{', ...' if len(overlap) > 5 else ''}) were used to "
                             f"train {where}; {how}")
