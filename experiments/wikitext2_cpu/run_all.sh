#!/usr/bin/env bash
# Reproduce the WikiText-2 CPU study: three sweeps, then the report over each (see README.md here).
# Run from the repository root: bash experiments/wikitext2_cpu/run_all.sh [OUT]  (default outputs/wikitext2_cpu)
set -euo pipefail
OUT=${1:-outputs/wikitext2_cpu}
HERE=experiments/wikitext2_cpu
# The random-init control of each table (model.init=random: no pretraining, same tokenizer and read-outs;
# the report shows every arm's gain over it): one arm value (any: the control trains nothing), 3 seeds.
CONTROL_ARM=("" "masking=dynamic" "format=full_sentences" "batch=bs256")
for t in 1 2 3; do
  start=$(date +%s)
  python run.py -m experiment=wikitext2_cpu_table$t hydra.sweep.dir="$OUT/table$t" trainer.enable_progress_bar=false
  python run.py -m experiment=wikitext2_cpu_table$t model.init=random ${CONTROL_ARM[$t]} \
    hydra.sweep.dir="$OUT/table$t/control" trainer.enable_progress_bar=false
  echo "table$t wall_s $(( $(date +%s) - start ))" | tee -a "$OUT/wall_times.txt"
done
python $HERE/collect.py "$OUT" "$HERE/results"
for t in 1 2 3; do
  python -m robablate.report "$HERE/results/table$t" --out "$HERE/report/table$t"
done
python $HERE/headline.py $HERE/report/table1 $HERE/report/table2 $HERE/report/table3
