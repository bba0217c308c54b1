"""LoRA training on transformers' Trainer (peft adapters, its checkpoints and resume,
schedules and gradient accumulation), with lmboard's own collator and loss.

Why not TRL's SFTTrainer: it tokenizes prompt and completion itself, so the trained ids
could differ from the ids ``lmboard eval`` scores (masking.py makes them the same), and it
computes the LM head on every position. Here the loss runs the head on the trained
positions only (a 49k-word head on 4 label tokens instead of 130 review tokens), in
float32, and equals the mean cross-entropy over the answer tokens of the optimizer step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmboard.errors import MissingDependency
from lmboard.finetune.masking import IGNORE, Encoded, pad_batch

# LoRA targets by architecture (every attention and MLP projection); others: all linear layers.
TARGETS = {
    ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo2"):
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    ("gpt2",): ("c_attn", "c_proj", "c_fc"),
    ("bloom", "gpt_neox", "chatglm"): ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    ("opt",): ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}
COMPLETE = "lmboard-complete"  # written into a checkpoint once Trainer has saved all of it


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # see README: dropout is a third of a CPU training step
    targets: tuple[str, ...] = ()  # empty: by architecture


@dataclass(frozen=True)
class TrainSettings:
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 2e-4
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    seed: int = 0
    save_steps: int = 50
    keep_checkpoints: int = 2  # 0: all
    init_adapter: str | None = None  # continue training this adapter (its LoRA settings hold)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StepLog:
    step: int
    loss: float
    lr: float
    epoch: float
    tokens: int  # real (unpadded) tokens trained on in this process so far
    examples: int
    seconds: float


def lora_targets(model, lora: LoraSettings) -> list[str] | str:
    if lora.targets:
        return list(lora.targets)
    mt = getattr(model.config, "model_type", "")
    return next((list(v) for k, v in TARGETS.items() if mt in k), "all-linear")


def with_lora(model, lora: LoraSettings):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise MissingDependency("peft (needed for lmboard finetune)", "peft") from e
    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=lora_targets(model, lora), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def _continued(model, folder: str):
    from peft import PeftModel

    return PeftModel.from_pretrained(model, folder, is_trainable=True)


def answer_loss(model, batch: dict, num_items=None):
    """Sum of cross-entropy over the trained positions / num_items (the whole optimizer
    step's count, so accumulated micro-batches average exactly), the head in float32."""
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    target = batch["labels"][:, 1:]
    keep = target != IGNORE
    h = hidden[:, :-1][keep]
    head = base.get_output_embeddings()
    with torch.autocast(device_type=h.device.type, enabled=False):
        logits = F.linear(h.float(), head.weight.float(), None if head.bias is None else head.bias.float())
        cap = getattr(base.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        total = F.cross_entropy(logits, target[keep], reduction="sum")
    n = num_items if num_items is not None else keep.sum()
    return total / n


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint Trainer finished writing (a kill mid-save leaves one without the mark)."""
    done = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _trainer_classes():
    from transformers import Trainer, TrainerCallback

    class AnswerTrainer(Trainer):
        tokens = 0
        examples = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.tokens += int(inputs["attention_mask"].sum())
            self.examples += int(inputs["input_ids"].shape[0])
            loss = answer_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

    class Log(TrainerCallback):
        def __init__(self, trainer, on_log, on_save):
            self.trainer, self.on_log_cb, self.on_save_cb, self.t0 = trainer, on_log, on_save, time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                t = self.trainer
                self.on_log_cb(StepLog(state.global_step, float(logs["loss"]), float(logs.get("learning_rate", 0.0)),
                                       float(logs.get("epoch", 0.0)), t.tokens, t.examples,
                                       time.perf_counter() - self.t0))

        def on_save(self, args, state, control, **kw):
            ck = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ck.is_dir():
                self.on_save_cb(ck)
                (ck / COMPLETE).write_text("ok")

    return AnswerTrainer, Log


@dataclass
class TrainJob:
    model: object  # the base transformers model
    tokenizer: object
    encoded: Sequence[Encoded]
    settings: TrainSettings
    checkpoints: Path
    on_log: Callable[[StepLog], None]
    on_save: Callable[[Path], None]


def run_training(job: TrainJob) -> tuple[object, dict]:
    """Train (resuming from the newest complete checkpoint); (peft model, statistics)."""
    import torch
    from transformers import PrinterCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    # peft looks for the base's config.json beside a GGUF file to check the vocabulary; it is unchanged
    warnings.filterwarnings("ignore", message="Could not find a config file")
    s = job.settings
    torch.manual_seed(s.seed)  # the LoRA A matrices' initialisation
    model = with_lora(job.model, s.lora) if s.init_adapter is None else _continued(job.model, s.init_adapter)
    args = TrainingArguments(
        output_dir=str(job.checkpoints), per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.grad_accum, learning_rate=s.lr, num_train_epochs=s.epochs,
        max_steps=s.max_steps, warmup_steps=s.warmup_ratio, weight_decay=s.weight_decay, lr_scheduler_type="linear",
        logging_steps=1, save_strategy="steps", save_steps=s.save_steps, save_total_limit=s.keep_checkpoints or None, seed=s.seed,
        data_seed=s.seed, use_cpu=not torch.cuda.is_available(), report_to="none",
        disable_tqdm=True, train_sampling_strategy="group_by_length", remove_unused_columns=False,
        dataloader_num_workers=0, label_names=["labels"],
    )
    AnswerTrainer, Log = _trainer_classes()
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in job.encoded]
    pad = job.tokenizer.pad_token_id if job.tokenizer.pad_token_id is not None else job.tokenizer.eos_token_id
    trainer = AnswerTrainer(model=model, args=args, train_dataset=rows, data_collator=lambda b: pad_batch(b, pad))
    trainer.model_accepts_loss_kwargs = True  # our loss divides by the step's answer-token count itself
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Log(trainer, job.on_log, job.on_save))
    resume = latest_checkpoint(job.checkpoints)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    return model, {"steps": trainer.state.global_step, "train_loss": out.training_loss,
                   "resumed_from_step": int(resume.name.split("-")[1]) if resume else 0,
                   "tokens_this_process": trainer.tokens, "seconds_this_process": seconds,
                   "tokens_per_s": trainer.tokens / seconds if seconds > 0 else None,
                   "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
