"""The fine-tuning job: data -> tokens and masks -> LoRA training (checkpointed, resumable)
-> adapter, tokenizer and provenance in ``--out`` (and a merged model with ``--merge``).

The loss curve goes to the store as the run's samples (one per optimizer step), so a
killed run keeps it, and the same command resumes from the newest complete checkpoint."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.faults import fault
from lmboard.finetune import provenance
from lmboard.finetune.data import DataSpec, TrainData, load_train_data
from lmboard.finetune.masking import Encoded, encode_examples
from lmboard.finetune.train import StepLog, TrainJob, TrainSettings, run_training
from lmboard.job import Identity, JobRun, family, run_id, run_key
from lmboard.lm import TrainableLM
from lmboard.peak import peak_rss_mb
from lmboard.store import Store
from lmboard.text import template_hash

Status = Callable[[int, int, str], None]


@dataclass(frozen=True)
class FinetuneJob:
    data: DataSpec
    template: str
    max_length: int
    settings: TrainSettings
    out: Path
    merge: bool = False
    spec_text: str = ""  # the model as the user wrote it (for the eval command we print)


def prepare(lm: TrainableLM, job: FinetuneJob, data: TrainData | None = None) -> tuple[TrainData, list[Encoded],
                                                                                 dict[str, int]]:
    data = data or load_train_data(job.data)
    encoded, counts = encode_examples(lm.trainable()[1], job.template, data.examples, job.max_length,
                                      lm.eos_token_ids())
    if not encoded:
        raise UsageError(f"--data: no training examples left: all {len(data.examples)} answers are "
                                    f"longer than --max-length {job.max_length}")
    return data, encoded, counts


def identity(lm: TrainableLM, job: FinetuneJob, data: TrainData) -> Identity:
    d = job.data
    key = run_key(lm.spec, lm.info()["dtype"], data=data.data_hash, template=job.template, max_length=job.max_length,
                  columns=[d.prompt_column, d.response_column, d.instruction_column, d.messages_column,
                           d.text_column, d.label_column], classify=data.meta, split=data.split, seed=data.seed,
                  train=job.settings.key(),
                  init_weights=_init_hash(job.settings.init_adapter))
    return Identity(run_id("finetune", key), "finetune", lm.spec.display_name, key,
                    family("finetune", lm.spec, data=data.data_hash))


def _record(lm: TrainableLM, job: FinetuneJob, data: TrainData, rid: str, counts: dict, n: int) -> dict:
    return {
        "run_id": rid, "status": "running", "base": lm.spec.to_dict(), "base_spec": job.spec_text,
        "dtype": lm.info()["dtype"], "template": job.template,
        "template_hash": template_hash(job.template, data.meta.get("classify_template")),
        "data": {"path": str(Path(job.data.path).resolve()), "sha256": data.data_hash, "split": data.split,
                 "seed": data.seed, "train_lines": data.train_lines, **data.meta},
        "trained_on": _trained_on(job, data),
        "examples": n, "skipped": {**data.skipped, **counts}, "max_length": job.max_length,
        "hyperparameters": job.settings.to_dict(), "provenance": lm.info(), "peft": _version("peft"),
    }


def _init_hash(folder: str | None) -> str | None:
    if folder is None:
        return None
    from lmboard.finetune.data import file_hash

    weights = sorted(Path(folder).glob("adapter_model.*"))
    return file_hash(weights[0]) if weights else None


def _trained_on(job: FinetuneJob, data: TrainData) -> list[dict]:
    """Every data set the weights have learned from: this run's and its initial adapter's."""
    mine = {"sha256": data.data_hash, "split": data.split, "seed": data.seed, "train_lines": data.train_lines}
    init = job.settings.init_adapter
    if init is None:
        return [mine]
    rec = provenance.read(Path(init)) or {}
    return [*rec.get("trained_on", [rec["data"]] if "data" in rec else []), mine]


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def run_finetune(lm: TrainableLM, job: FinetuneJob, store: Store, status: Status | None = None,
                 prepared: tuple | None = None) -> dict:
    data, encoded, counts = prepared or prepare(lm, job)
    ident = identity(lm, job, data)
    rid = ident.run_id
    prev = provenance.check_out(job.out, rid)
    with JobRun(store, ident, lm.info(), 0) as run:
        if prev and prev.get("status") == "done":
            _merge_if_asked(lm, job, prev)
            return prev
        record = _record(lm, job, data, rid, counts, len(encoded))
        provenance.write(job.out, record)
        total = _total_steps(len(encoded), job.settings)

        def on_log(s: StepLog) -> None:
            run.add([(f"{s.step:07d}", s.__dict__)])
            fault("finetune.step")
            if status:
                status(s.step, total, f"loss {s.loss:.4f} · {s.tokens / max(s.seconds, 1e-9):.0f} tok/s")

        t0 = time.perf_counter()
        base, tokenizer = lm.trainable()
        tj = TrainJob(base, tokenizer, encoded, job.settings, job.out / "checkpoints", on_log,
                      lambda ck: provenance.write(ck, record))
        model, stats = run_training(tj)
        model.save_pretrained(str(job.out))
        tokenizer.save_pretrained(str(job.out))
        curve = [s for _, s in sorted(run.samples().items())]
        record.update(status="done", **stats, final_loss=curve[-1]["loss"] if curve else None,
                      training_seconds=time.perf_counter() - t0, loss_curve=[(s["step"], s["loss"]) for s in curve],
                      peak_memory_mb=peak_rss_mb(),
                      eval_spec=f"{job.spec_text},adapter={job.out}" if job.spec_text else None)
        provenance.write(job.out, record)
        _merge_if_asked(lm, job, record, model)
        run.done({k: record[k] for k in ("final_loss", "steps", "tokens_per_s", "training_seconds")})
    return record


def _total_steps(n: int, s: TrainSettings) -> int:
    if s.max_steps > 0:
        return s.max_steps
    per_epoch = -(-n // s.batch_size) // s.grad_accum or 1
    return int(per_epoch * s.epochs + 0.999999)


def _merge_if_asked(lm: TrainableLM, job: FinetuneJob, record: dict, model=None) -> None:
    """``--merge``: base + adapter as one plain model folder that every lmboard command loads."""
    target = job.out / "merged"
    if not job.merge or (target / "config.json").is_file():
        return
    base, tokenizer = lm.trainable()
    if model is None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(job.out))
    merged = model.merge_and_unload()
    tmp = job.out / "merged.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    provenance.write(tmp, {**record, "merged": True})
    tmp.rename(target)
