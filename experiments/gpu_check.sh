#!/usr/bin/env bash
# GPU path check on one CUDA device: BERT-base shape (L=12, H=768, A=12, FFN=3072) at seq 128.
#  1. experiments/bench_pretrain.py on CUDA under bf16 autocast: training-step tokens/s and MFU of
#     robablate vs transformers' BertForMaskedLM (sdpa), fused AdamW for both.
#  2. The real training loop: `run.py model=base` for a few steps (Lightning, bf16-mixed, fused AdamW
#     with robablate's own clipping, pinned memory + non-blocking copies, DataLoader workers), then
#     tokens/s and MFU from results.json and the per-log-step values from metrics.csv.
#  3. The same with train.compile=true (torch.compile of the encoder).
# Usage: bash experiments/gpu_check.sh [steps]   (run from anywhere; needs a CUDA build of torch)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-60}"
OUT="${OUT:-$(mktemp -d)}"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device visible: this check needs a GPU"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY

echo "== 1. training step, base shape, bf16 autocast, vs transformers =="
python experiments/bench_pretrain.py --device cuda --precision bf16 --vocab 30522 --hidden 768 --layers 12 \
  --heads 12 --ffn 3072 --seq 128 --batch 64 --rounds 20 --warmup 5

run_arm() {  # $1 = name, then overrides
  local name="$1"; shift
  python run.py experiment=smoke model=base nsp=false masking=dynamic glue=none logger=csv trainer.accelerator=gpu trainer.devices=1 \
    trainer.enable_progress_bar=false batch.size=64 train.max_steps="$STEPS" train.val_every_steps="$STEPS" \
    train.num_workers=4 run_dir="$OUT/$name" cache_dir="$OUT/cache" "$@"
  python - "$OUT/$name" <<'PY'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
p = json.loads((run / "results.json").read_text())["pretrain"]
mfu = f"{p['mfu']:.1%}" if p.get("mfu") is not None else "n/a (GPU not in robablate.peak.PEAK_FLOPS_16BIT)"
print(f"{run.name}: {p['steps']} steps, {p['tokens_per_s']:,.0f} tokens/s, MFU {mfu}, "
      f"train {p['train_time_s']:.1f} s of {p['wall_s']:.1f} s wall, val MLM loss {p['val_mlm_loss']:.3f}")
rows = [r for r in csv.DictReader(open(run / "pretrain" / "metrics.csv")) if r.get("train/tokens_per_s")]
for r in rows[-3:]:
    print(f"  step {r['step']}: train/tokens_per_s {float(r['train/tokens_per_s']):,.0f}  train/mfu {r.get('train/mfu') or 'n/a'}")
PY
}

echo "== 2. Lightning loop, bf16-mixed (train.precision=auto on CUDA) =="
run_arm eager
echo "== 3. the same with train.compile=true =="
run_arm compiled train.compile=true
echo "outputs in $OUT"
