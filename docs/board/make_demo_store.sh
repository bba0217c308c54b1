#!/usr/bin/env bash
# The store behind the board's screenshots (docs/board/*.png): real SmolLM2 runs, four
# model rows (bfloat16, float32, and a LoRA adapter fine-tuned on ChnSentiCorp in both),
# over MMLU, CMMLU, ChnSentiCorp, a judged run and a speed run, on the shared data.
# Usage: docs/board/make_demo_store.sh OUT_DIR   (about 25 minutes on 2 cores)
set -euo pipefail
OUT=${1:?usage: make_demo_store.sh OUT_DIR}
DATA=${LMBOARD_DATA:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data}
LM=${LMBOARD:-.venv/bin/lmboard}
mkdir -p "$OUT"
DB=(--db "$OUT/db" --quiet)
CSC="$DATA/chnsenticorp/ChnSentiCorp_htl_all.csv"
CLS=(--task classify --data "$CSC" --text-column review --labels "0=负面,1=正面" --split 0.8 --test-size 200)
$LM finetune smollm2,dtype=float32 --data "$CSC" --text-column review --labels "0=负面,1=正面" --split 0.8 \
  --max-steps 30 --out "$OUT/adapter" "${DB[@]}"
MODELS=("smollm2,dtype=bfloat16" "smollm2,dtype=float32" "smollm2,dtype=bfloat16,adapter=$OUT/adapter"
        "smollm2,dtype=float32,adapter=$OUT/adapter")
for m in "${MODELS[@]}"; do
  $LM eval "$m" --task mmlu --data "$DATA/mmlu" --subjects anatomy,astronomy,college_biology,econometrics,\
high_school_geography,high_school_us_history,international_law,marketing,philosophy,virology,world_religions,\
abstract_algebra --limit 20 --shots 5 --out "$OUT/mmlu" "${DB[@]}"
  $LM eval "$m" --task cmmlu --data "$DATA/cmmlu" --subjects anatomy,astronomy,chinese_history,economics,\
high_school_geography,international_law,marketing,philosophy,world_religions,virology,college_medicine,nutrition \
  --limit 15 --shots 5 --out "$OUT/cmmlu" "${DB[@]}"
  $LM eval "$m" "${CLS[@]}" --shots 4 --out "$OUT/cls" "${DB[@]}"
  $LM speed "$m" --prompt-tokens 128 --new-tokens 32 --batch-sizes 1,8 --warmup 1 --repeats 2 "${DB[@]}"
done
python3 - "$DATA/alpaca_eval/reference_gpt4_1106_preview.json" "$OUT/prompts.json" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1]))[:24]
json.dump(ref, open(sys.argv[2], "w"), ensure_ascii=False)
PY
$LM generate --models "smollm2,dtype=bfloat16,label=bf16" --models "smollm2,dtype=float32,label=fp32" \
  --models "smollm2,dtype=bfloat16,adapter=$OUT/adapter,label=lora-bf16" \
  --models "smollm2,dtype=float32,adapter=$OUT/adapter,label=lora-fp32" \
  --prompts "$OUT/prompts.json" --out "$OUT/gen" --max-new-tokens 128 "${DB[@]}"
$LM judge --outputs "$OUT/gen/output.json" --reference "$OUT/prompts.json" --judge smollm2,dtype=float32 \
  --leaderboard "$OUT/lb.csv" "${DB[@]}"
