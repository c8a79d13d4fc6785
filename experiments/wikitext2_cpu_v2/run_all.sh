#!/usr/bin/env bash
# Reproduce the WikiText-2 CPU study v2 (README.md here): the pilot and its seed decision, the three
# sweeps each with its random-init control, then the report over each table.
# From the repository root: bash experiments/wikitext2_cpu_v2/run_all.sh [OUT] [TABLES]
# (defaults: outputs/wikitext2_cpu_v2, "1 2 3"). CPU (user + system) and wall seconds per sweep are
# appended to OUT/cpu_times.txt; a finished sweep (OUT/<dir>/.done) is skipped when the script re-runs.
set -euo pipefail
OUT=${1:-outputs/wikitext2_cpu_v2}
TABLES=${2:-1 2 3}
HERE=experiments/wikitext2_cpu_v2
# Every results.json records the commit it ran at; uncommitted changes make that record incomplete
# (study v2's committed runs say git_dirty: true). Refuse unless told: ALLOW_DIRTY=1 bash ... .
if [ -z "${ALLOW_DIRTY:-}" ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "run_all.sh: the git tree has uncommitted changes (git status); commit them so every results.json" \
       "names the code it ran, or set ALLOW_DIRTY=1 to run anyway (the runs then record git_dirty: true)." >&2
  exit 2
fi
mkdir -p "$OUT"

sweep() {  # sweep <label> <dir> <overrides...>: one multirun, timed by bash's `time`
  local label=$1 dir=$2; shift 2
  [ -f "$dir/.done" ] && return 0
  TIMEFORMAT="$label cpu_s %U+%S wall_s %R"
  { time python run.py -m "$@" hydra.sweep.dir="$dir" trainer.enable_progress_bar=false 2>&3; } 3>&2 2>>"$OUT/cpu_times.txt"
  touch "$dir/.done"
}

# 1. The pilot: the reference arm's spread over 3 seeds and the control's, at the study's model and budget.
sweep pilot "$OUT/pilot" experiment=wikitext2_cpu_pilot
sweep pilot_control "$OUT/pilot/control" experiment=wikitext2_cpu_pilot model.init=random
python $HERE/pilot.py "$OUT/pilot" | tee "$OUT/pilot.md"

# 2. The tables, each with the seeds the pilot chose and 3 random-init control runs (no pretraining:
# the control trains nothing, so its arm value is arbitrary; the report shows each arm's gain over it).
CONTROL_ARM=("" "masking=dynamic" "format=full_sentences" "batch=bs256")
for t in $TABLES; do
  seeds=$(python $HERE/pilot.py "$OUT/pilot" --seeds table$t)
  sweep table$t "$OUT/table$t" experiment=wikitext2_cpu_table$t seed="$seeds"
  sweep table${t}_control "$OUT/table$t/control" experiment=wikitext2_cpu_table$t model.init=random \
    ${CONTROL_ARM[$t]} seed=0,1,2
done

# 3. Collect the results.json files (only those) and write each table's report and headline.
python experiments/wikitext2_cpu/collect.py "$OUT" "$HERE/results"
cp "$OUT/cpu_times.txt" "$HERE/results/"
python $HERE/pilot.py "$HERE/results/pilot" > "$HERE/results/pilot.md"
for t in $TABLES; do
  python -m robablate.report "$HERE/results/table$t" --out "$HERE/report/table$t"
  python experiments/wikitext2_cpu/headline.py "$HERE/report/table$t"
done
python $HERE/verdicts.py "$HERE/report"
python $HERE/quote.py   # README.md's generated tables
