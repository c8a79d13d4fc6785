#!/usr/bin/env bash
# Reproduce the WikiText-2 CPU study v3, effects across budgets (README.md here): the pilot and its
# rule for the batch rungs, each comparison rung by rung, the random-init control once, then the reports.
# From the repository root: bash experiments/wikitext2_cpu_v3/run_all.sh [OUT] [PARTS]
# (defaults: outputs/wikitext2_cpu_v3, "pilot masking nsp batch control"; then the reports).
#
# Pinned: the first start records COMMIT (default HEAD) in OUT/commit and checks it out detached in
# OUT/src (git worktree); every run executes there, so every results.json names that one commit and
# edits to this checkout during the study change nothing. A later start reuses OUT/commit (a different
# COMMIT= is refused).
# Resumable, in several sittings: a finished rung (OUT/<part>/tokens-<budget>/.done) is skipped; within a rung the
# relaunch rule skips complete runs and resumes partial ones (robablate/relaunch.py). Committed runs of a
# rung (results/<part>/tokens-<budget>/) made at the pinned commit are copied in first, so they are skipped, not
# re-run; a committed pilot is reused whatever its commit (it only decides the batch rungs).
# After each rung its results.json files go to results/<part>/tokens-<budget>/ and are committed (NO_COMMIT=1:
# copy only). CPU (user + system) and wall seconds per rung are appended to results/cpu_times.txt.
# Before anything trains: DRY_RUN=1 prints each part's runs, tokens and CPU-time estimate and stops.
set -euo pipefail
REPO=$(pwd)
OUT=$(realpath -m "${1:-outputs/wikitext2_cpu_v3}")
PARTS=${2:-pilot masking nsp batch control}
HERE=experiments/wikitext2_cpu_v3
PY=${PYTHON:-python}
# The runs import the pinned commit's package (PYTHONPATH=$SRC/src below); the analysis (pilot.py, the
# reports, quote.py) this checkout's, as tests/test_wikitext2_study_v3.py does when it reproduces them.
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
# The runs execute in the pinned worktree under OUT: the shared data (corpus, BLiMP) is found through this
# absolute path, the same in every sitting, instead of the presets' ../shared/data relative to the checkout.
export ROBABLATE_SHARED_DATA=${ROBABLATE_SHARED_DATA:-$(realpath -m ../shared/data)}
declare -A PRESET=([pilot]=wikitext2_cpu_v3_pilot [masking]=wikitext2_cpu_v3_masking [nsp]=wikitext2_cpu_v3_nsp
                   [batch]=wikitext2_cpu_v3_batch [control]=wikitext2_cpu_v3_control)
declare -A RUNGS=([pilot]=- [masking]="500000 1000000 2000000 3000000 4000000" [nsp]="1000000 2000000 4000000"
                  [batch]="2000000 4000000" [control]=-)
# RUNGS_<part>="..." runs only those rungs of a part, in that order (a sitting that fits its time).
for part in "${!RUNGS[@]}"; do v=RUNGS_$part; [ -z "${!v:-}" ] || RUNGS[$part]=${!v}; done

# Every results.json records the commit it ran at; uncommitted changes make that record incomplete. Only the
# pinning start checks: once OUT/commit exists the runs execute in the clean pinned worktree, and this
# checkout is free to change (the study's own reports and README are rewritten here after every rung).
if [ -z "${ALLOW_DIRTY:-}${DRY_RUN:-}" ] && [ ! -f "$OUT/commit" ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "run_all.sh: the git tree has uncommitted changes (git status); commit them so every results.json" \
       "names the code it ran, or set ALLOW_DIRTY=1 to run anyway (the runs then record git_dirty: true)." >&2
  exit 2
fi
mkdir -p "$OUT" "$HERE/results"
if [ -n "${DRY_RUN:-}" ] && [ ! -d "$OUT/src" ]; then
  SRC=$REPO  # not started yet: estimate from this checkout (its commit decides what counts as done)
else
  [ -f "$OUT/commit" ] || git rev-parse "${COMMIT:-HEAD}" > "$OUT/commit"
  SRC=$OUT/src
fi
PIN=$(cat "$OUT/commit" 2>/dev/null || git rev-parse HEAD)
if [ -n "${COMMIT:-}" ] && [ "$(git rev-parse "$COMMIT")" != "$PIN" ]; then
  echo "run_all.sh: $OUT is pinned to $PIN, not COMMIT=$COMMIT; use another OUT for another commit." >&2
  exit 2
fi
[ "$SRC" = "$REPO" ] || [ -d "$SRC" ] || git worktree add --detach "$SRC" "$PIN"

seed_committed() {  # seed_committed <name> <dir>: committed results.json of this rung at the pinned commit
  local src="$REPO/$HERE/results/$1" f
  [ -d "$src" ] || return 0
  (cd "$src" && find . -name results.json) | while read -r f; do
    if [ "$1" = pilot ] || $PY -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["environment"]["git_commit"] != sys.argv[2])' "$src/$f" "$PIN"; then
      mkdir -p "$2/$(dirname "$f")" && cp -n "$src/$f" "$2/$f"
    fi
  done
}

# The reports: one per comparison, each led by its effects-across-budgets section (budget.md once a part
# has two rungs), and the README blocks; rebuilt after every rung, so a commit mid-study is consistent.
# The masking rungs validate on WikiText-2's first 16 articles (corpus.max_docs caps both splits), the
# control on all of valid.txt: it joins the comparisons read on the same validation set only.
reports() {
  local R=$HERE/results CTRL=()
  [ -d $R/control ] && CTRL=($R/control)
  if [ -d $R/masking ]; then report $R/masking --out $HERE/report/masking; fi
  if [ -d $R/nsp ]; then
    report $R/nsp "${CTRL[@]}" --baseline format=segment_pair --out $HERE/report/nsp_full_vs_segment_pair
    report $R/nsp "${CTRL[@]}" --baseline format=full_sentences --out $HERE/report/nsp_doc_vs_full
  fi
  if [ -d $R/batch ]; then report $R/batch "${CTRL[@]}" --out $HERE/report/batch; fi
  $PY $HERE/quote.py
}
report() { $PY -m robablate.report "$@" > /dev/null; }

save() {  # save <name> <dir>: copy the rung's results.json files into results/, rebuild the reports, commit
  $PY experiments/wikitext2_cpu/collect.py "$2" "$HERE/results/$1"
  # CPU times of every sitting: the committed lines plus this sitting's, the newest line per rung kept.
  touch "$OUT/cpu_times.txt" "$HERE/results/cpu_times.txt"
  cat "$HERE/results/cpu_times.txt" "$OUT/cpu_times.txt" | awk '!($1 in last) {order[++n] = $1} {last[$1] = $0}
    END {for (i = 1; i <= n; i++) print last[order[i]]}' > "$OUT/cpu_times.merged"
  mv "$OUT/cpu_times.merged" "$HERE/results/cpu_times.txt"
  reports
  if [ -z "${NO_COMMIT:-}" ]; then
    git add "$HERE/results/$1" "$HERE/results/cpu_times.txt" "$HERE/report" "$HERE/README.md"
    git commit -q -m "study v3: $1 results (runs at ${PIN:0:12}), reports" -- "$HERE/results/$1" \
      "$HERE/results/cpu_times.txt" "$HERE/report" "$HERE/README.md"
  fi
}

rung() {  # rung <part> <tokens or ->: one sweep of the part's preset at one budget, timed by timed.py
  local part=$1 tokens=$2 name dir args=()
  name=$part; [ "$tokens" = - ] || { name=$part/tokens-$tokens; args=(train.tokens=$tokens); }
  dir=$OUT/$name
  [ -f "$dir/.done" ] && return 0
  seed_committed "$name" "$dir"
  if [ "$part" = pilot ] && [ -n "$(find "$dir" -name results.json 2>/dev/null)" ]; then
    echo "run_all.sh: reusing the committed pilot ($HERE/results/pilot)" >&2
  elif [ -n "${DRY_RUN:-}" ]; then  # what this rung would run, skip and cost; nothing trains
    (cd "$SRC" && PYTHONPATH="$SRC/src" $PY run.py -m experiment=${PRESET[$part]} "${args[@]}" dry_run=true \
       hydra.sweep.dir="$dir" 2>/dev/null)
  else
    (cd "$SRC" && PYTHONPATH="$SRC/src" $PY "$REPO/$HERE/timed.py" "$OUT/cpu_times.txt" "$name" \
       $PY run.py -m experiment=${PRESET[$part]} "${args[@]}" hydra.sweep.dir="$dir" trainer.enable_progress_bar=false)
  fi
  [ -n "${DRY_RUN:-}" ] && return 0
  touch "$dir/.done"
  save "$name" "$dir"
}

for part in $PARTS; do
  for t in ${RUNGS[$part]}; do rung "$part" "$t"; done
  if [ "$part" = pilot ] && [ -z "${DRY_RUN:-}" ]; then
    $PY $HERE/pilot.py "$OUT/pilot" > "$HERE/results/pilot.md"
    if [ -z "${NO_COMMIT:-}" ] && [ -n "$(git status --porcelain -- "$HERE/results/pilot.md")" ]; then
      git add "$HERE/results/pilot.md" && git commit -q -m "study v3: pilot.md" -- "$HERE/results/pilot.md"
    fi
    # The batch rungs must give the largest batch enough steps (pilot.py states the rule).
    $PY $HERE/pilot.py "$OUT/pilot" --check ${RUNGS[batch]}
  fi
done

[ -n "${DRY_RUN:-}" ] && exit 0
reports
