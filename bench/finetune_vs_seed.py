"""LoRA fine-tuning: seed 001's recipe against `lmboard finetune`, same examples, model,
LoRA settings and number of optimizer steps.

    python bench/finetune_vs_seed.py [--examples 64] [--steps 8] [--batch-size 8]

The seed's recipe (its Chinese-LLaMA collator): prompt and answer + EOS text tokenized
apart and concatenated, every example padded to a fixed length (the seed's 128 + 64 =
192), labels -100 on the prompt and padding; transformers' Trainer with a peft LoRA
model, float32 (transformers' default), logits on every position. Examples: the first
ChnSentiCorp reviews of the train side of `--split 0.8 --seed 123` that fit in 192
tokens, so neither side cuts anything. lmboard runs its command line (`lmboard
finetune`, default dtype: bfloat16 on CPUs with AVX-512 BF16 or AMX) and once more in
float32. Reported: training tokens/s of real (unpadded) tokens, the ratio, and each
trained model's mean loss over the answer tokens of all the examples (one function,
float32), which should agree within noise. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"
LABELS = {"0": "负面", "1": "正面"}
FIXED = 192  # the seed's max_seq_length (128 + 64)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "lr": 1e-3}
sys.path.insert(0, str(ROOT))


def examples(n: int, tok) -> list[tuple[int, str, str]]:
    from lmboard.tasks.classify import ClassifySettings, load_examples, split

    s = ClassifySettings(LABELS)
    train = split(load_examples(CSV, "review", "label", LABELS)[0], 0.8, 123)[0]
    out = []
    for e in train:
        prompt = s.prompt(e.text)
        if len(tok(prompt).input_ids) + 6 <= FIXED:
            out.append((e.line, prompt, e.label))
        if len(out) == n:
            return out
    return out


def seed_recipe(rows, steps: int, batch: int, workdir: Path, folder: str):
    """Seed 001's collator (padding to FIXED), Trainer, peft; float32. The model is loaded
    from a plain Hugging Face folder (the GGUF unpacked), as the seed's users have it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    real = [0]

    def collate(batch_rows):
        ids_all, labels_all = [], []
        for _, source, label in batch_rows:
            s = tok(source).input_ids
            t = tok(f"{label}{tok.eos_token}", add_special_tokens=False).input_ids
            ids, labels = (s + t)[:FIXED], ([-100] * len(s) + t)[:FIXED]
            real[0] += len(ids)
            ids_all.append(ids + [tok.pad_token_id] * (FIXED - len(ids)))
            labels_all.append(labels + [-100] * (FIXED - len(labels)))
        return {"input_ids": torch.tensor(ids_all), "labels": torch.tensor(labels_all)}

    args = TrainingArguments(output_dir=str(workdir / "seed"), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=LORA["lr"], logging_steps=1, save_strategy="no", report_to="none",
                             disable_tqdm=True, use_cpu=True, remove_unused_columns=False, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return model, tok, real[0], seconds


def lmboard_run(rows, steps: int, batch: int, workdir: Path, dtype: str) -> tuple[dict, float]:
    data = workdir / "rows.csv"
    import csv

    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label", "review"])
        by_name = {v: k for k, v in LABELS.items()}
        for _, prompt, label in rows:
            w.writerow([by_name[label], prompt])
    out = workdir / f"lmboard-{dtype}"
    cmd = [sys.executable, "-m", "lmboard", "finetune", f"smollm2,dtype={dtype}", "--data", str(data), "--labels",
           ",".join(f"{k}={v}" for k, v in LABELS.items()), "--text-column", "review", "--template", "{text}",
           "--out", str(out), "--db", str(workdir / "db"), "--max-steps", str(steps), "--batch-size", str(batch),
           "--lr", str(LORA["lr"]), "--lora-r", str(LORA["r"]), "--lora-alpha", str(LORA["alpha"]),
           "--lora-dropout", str(LORA["dropout"]), "--max-length", str(FIXED), "--warmup", "0", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads((out / "lmboard-finetune.json").read_text()), time.perf_counter() - t0


def mean_answer_loss(model, tok, rows) -> float:
    """One definition for both: mean cross-entropy over label tokens + EOS, float32."""
    import torch

    from lmboard.finetune.masking import IGNORE, pad_batch
    from lmboard.finetune.train import answer_loss

    model = model.float().eval()
    total, count = 0.0, 0
    for k in range(0, len(rows), 8):
        enc = []
        for _, source, label in rows[k:k + 8]:
            s = tok(source).input_ids
            t = tok(label, add_special_tokens=False).input_ids + [tok.eos_token_id]
            enc.append({"input_ids": s + t, "labels": [IGNORE] * len(s) + t})
        b = pad_batch(enc, tok.pad_token_id)
        n = int((b["labels"][:, 1:] != IGNORE).sum())
        with torch.no_grad():
            total += float(answer_loss(model, b)) * n
        count += n
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    import torch

    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="ft-bench-"))
    base = load_model(parse_model_spec("smollm2,dtype=float32"))
    rows = examples(a.examples, base.tokenizer)
    before = mean_answer_loss(base.model, base.tokenizer, rows)
    seed_model, tok, seed_real, seed_s = seed_recipe(rows, a.steps, a.batch_size, work, base.gguf_cache)
    seed_loss = mean_answer_loss(seed_model, tok, rows)
    seen = a.steps * a.batch_size
    print(f"== {len(rows)} ChnSentiCorp reviews, {a.steps} steps of {a.batch_size}, LoRA r={LORA['r']} on all "
          "projections ==")
    print(f"base model: loss {before:.4f}")
    print(f"seed recipe (fixed {FIXED}, Trainer, fp32): {seed_s:6.1f} s, {seed_real / seed_s:6.1f} real tokens/s "
          f"({seed_real} real of {seen * FIXED} padded), loss after {seed_loss:.4f}")
    res = {"examples": len(rows), "steps": a.steps, "loss_before": before, "seed_real_tokens_per_s": seed_real / seed_s,
           "seed_loss_after": seed_loss}
    for dtype in ("auto", "float32"):
        rec, whole = lmboard_run(rows, a.steps, a.batch_size, work, dtype)
        tuned = load_model(parse_model_spec(f"smollm2,dtype=float32,adapter={work / f'lmboard-{dtype}'}"))
        loss = mean_answer_loss(tuned.model, tuned.tokenizer, rows)
        tps = rec["tokens_per_s"]
        print(f"lmboard finetune ({rec['dtype']}): {rec['seconds_this_process']:6.1f} s training ({whole:.1f} s "
              f"whole command), {tps:6.1f} real tokens/s, loss after {loss:.4f}")
        print(f"ratio ({rec['dtype']} vs seed fp32): {tps / (seed_real / seed_s):.2f}x real tokens/s")
        res[f"lmboard_{rec['dtype']}_tokens_per_s"] = tps
        res[f"lmboard_{rec['dtype']}_loss_after"] = loss
        res[f"ratio_{rec['dtype']}"] = tps / (seed_real / seed_s)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
