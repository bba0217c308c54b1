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
    # padded tokens one forward/backward holds (a batch runs in as many as it needs, its
    # gradients summed: the same step); None: from the free memory (memory_plan)
    micro_tokens: int | None = None

    def key(self) -> dict:
        """What can move the trained weights (not where checkpoints go, nor how a step is cut up)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("save_steps", "keep_checkpoints", "micro_tokens")}

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


# Memory of a training step. Measured on SmolLM2-135M (30 layers, hidden 576, MLP 1536),
# bfloat16, SDPA, LoRA r=16 on every projection, one forward and backward, each shape in
# a fresh process: 1.55-1.64 MB of activations per token (1x1024, 4x1024, 2x2048), i.e.
# about layers x (20 x hidden + 10 x intermediate) x 2 bytes (more than bfloat16 tensors alone:
# float32 copies, probably RMSNorm's and rotary's). A batch of 8 reviews cut at 1024 tokens held 8,192 tokens: 13-14 GB
# resident at its first step, and the default ChnSentiCorp run grew past 21 GB. A step's
# rows now run in micro-batches of a token budget, their gradients summed before the
# optimizer step (the loss divides by the whole step's answer tokens, so the sum is the
# step's gradient). On a CPU a step's time is linear in its tokens above a few hundred
# (3.5, 13.1 and 15.8 s for the three shapes above: 3.4, 3.2 and 3.9 ms a token), so the
# budget is capped low.
MICRO_SHARE = 0.25  # of the memory free at the start, for one micro-batch's activations
CPU_MICRO_CAP = 2048  # tokens


def activation_bytes_per_token(config, element_bytes: int) -> int:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 12)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 768)
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    return layers * (20 * hidden + 10 * inter) * element_bytes


@dataclass(frozen=True)
class MemoryPlan:
    micro_tokens: int  # padded tokens per forward/backward
    checkpointing: bool  # gradient checkpointing: one row alone would not fit otherwise


def memory_plan(model, longest: int, free_bytes: int, cpu: bool, micro_tokens: int | None = None) -> MemoryPlan:
    """A quarter of the free memory over the activations a token holds, as a power of two
    (the same cut on every run of one machine), 256 at least; gradient checkpointing
    (layers recomputed in the backward: about a third more compute) only where the
    longest row's activations exceed half the free memory."""
    import torch

    dtype = next(model.parameters()).dtype
    per_token = activation_bytes_per_token(model.config, max(2, torch.finfo(dtype).bits // 8))
    if micro_tokens is None:
        tokens = max(256, int(free_bytes * MICRO_SHARE / per_token))
        micro_tokens = min(1 << (tokens.bit_length() - 1), CPU_MICRO_CAP) if cpu else 1 << (tokens.bit_length() - 1)
    return MemoryPlan(micro_tokens, longest * per_token > free_bytes // 2)


def free_memory(device) -> int:
    """Bytes free for this process: MemAvailable on a CPU, the GPU's free memory on a GPU."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def micro_batches(inputs: dict, budget: int) -> list[dict]:
    """A right-padded batch's rows (longest first) in parts of at most ``budget`` padded
    tokens, each part cut to its own longest row; a row over the budget runs alone."""
    lengths = inputs["attention_mask"].sum(1).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    parts: list[list[int]] = []
    for i in order:
        if parts and (len(parts[-1]) + 1) * lengths[parts[-1][0]] <= budget:
            parts[-1].append(i)
        else:
            parts.append([i])
    if len(parts) == 1:
        return [inputs]
    out = []
    for part in parts:
        rows, width = sorted(part), lengths[part[0]]
        out.append({k: v[rows, :width] for k, v in inputs.items()})
    return out


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint Trainer finished writing (a kill mid-save leaves one without the mark)."""
    done = [p for p in folder.glob("checkpoint-*") if (p / COMPLETE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def _trainer_classes():
    from transformers import Trainer, TrainerCallback

    class AnswerTrainer(Trainer):
        tokens = 0
        examples = 0

        micro_tokens = 1 << 30

        def training_step(self, model, inputs, num_items_in_batch=None):
            """The step's batch in micro-batches (micro_batches), each backward adding to
            the gradients; their losses, each over the whole step's answer tokens, sum to
            the batch's."""
            parts = micro_batches(inputs, self.micro_tokens)
            if len(parts) == 1:
                return super().training_step(model, inputs, num_items_in_batch)
            if num_items_in_batch is None:
                num_items_in_batch = int((inputs["labels"][:, 1:] != IGNORE).sum())
            return sum(super(AnswerTrainer, self).training_step(model, p, num_items_in_batch) for p in parts)

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
    plan = memory_plan(model, max(len(e.input_ids) for e in job.encoded), free_memory(args.device),
                       args.device.type == "cpu", s.micro_tokens)
    trainer.micro_tokens = plan.micro_tokens
    if plan.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
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
                   "micro_tokens": plan.micro_tokens, "gradient_checkpointing": plan.checkpointing,
                   "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
