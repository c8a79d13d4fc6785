"""The pilot's numbers and the seed decision of the WikiText-2 study v2 (README.md here).

Reads the pilot sweep (pretrained runs of the reference arm, and its random-init control runs under
<pilot>/control), and prints: each read-out's mean and SD over pretraining seeds, the control's, the
pretrained − control gap with its Welch 95% CI, and the minimal detectable effect (80% power, two-sided
5%) of a paired comparison at 3 and 5 seeds. Then the seed rule: every table gets 3 pretraining seeds,
and the table whose expected effect on validation MLM loss is closest to the pilot's MDE at 3 seeds
(|log(effect / MDE)| smallest: far below the MDE nothing is decidable, far above 3 seeds decide it) gets
5. Expected effects come from measurements made before this study (PRIOR below).

    python experiments/wikitext2_cpu_v2/pilot.py outputs/wikitext2_cpu_v2/pilot           # the report
    python experiments/wikitext2_cpu_v2/pilot.py outputs/wikitext2_cpu_v2/pilot --seeds table2   # "0,1,2,3,4"
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from robablate.minimal_pairs.blimp_reader import FIELDS
from robablate.report.stats import mde_paired, welch_ci

# Expected |effect| on validation MLM loss per table, measured before this study:
# table1, table2: the largest |arm - baseline| of study v1 (experiments/wikitext2_cpu/report/table*/
#   paired.csv, BERT-Tiny, 1M tokens, 3 seeds): dynamic - static 0.0035; nsp false - true 0.013
#   (doc - segment 0.026 was measured with 21% unmatched tokens, so the matched NSP row is used).
# table3: v1's rows compared learning rates, not batch sizes; the per-arm LR pilots of the tuner
#   (250k tokens, seed 0, conf/experiment/roberta_table3.yaml history) reached 6.88 / 6.95 / 7.02 at
#   8 / 64 / 256 sequences: the largest gap, 0.14.
PRIOR = {"table1": 0.0035, "table2": 0.013, "table3": 0.14}
READOUTS = (  # (label, path in results.json)
    ("val MLM loss", ("pretrain", "val_mlm_loss")),
    ("BLiMP overall", ("blimp", "overall")),
    *((f"BLiMP {f}", ("blimp", "by_field", f)) for f in FIELDS),
)


def value(run: dict, path: tuple[str, ...]) -> float:
    for key in path:
        run = run[key]
    return float(run)


def load(folder: Path, init: str) -> list[dict]:
    """Complete runs under `folder` (any depth) with results["init"] == init (pretrained | random)."""
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("**/results.json"))]
    return [r for r in runs if r.get("status") == "complete" and r.get("init", "pretrained") == init]


def seeds_per_table(mde3: float) -> dict[str, int]:
    closest = min(PRIOR, key=lambda t: abs(math.log(PRIOR[t] / mde3)))
    return {t: 5 if t == closest else 3 for t in PRIOR}


def report(pilot: Path) -> tuple[str, dict[str, int]]:
    pre, ctl = load(pilot, "pretrained"), load(pilot, "random")
    if len(pre) < 2 or len(ctl) < 2:
        sys.exit(f"{pilot}: need >= 2 complete pretrained and >= 2 random-init control runs (found {len(pre)}, {len(ctl)})")
    lines = [f"Pilot: {len(pre)} pretrained runs (seeds {sorted(r['seed'] for r in pre)}), "
             f"{len(ctl)} random-init control runs.", "",
             "| read-out | pretrained mean ± SD | control mean ± SD | pretrained − control [95% CI, Welch] | "
             "MDE, 3 seeds | MDE, 5 seeds |", "|---|---:|---:|---:|---:|---:|"]
    mde3_loss = float("nan")
    for label, path in READOUTS:
        a, b = np.array([value(r, path) for r in pre]), np.array([value(r, path) for r in ctl])
        lo, hi, _ = welch_ci(a, b)
        # A paired comparison's SD of differences is sd * sqrt(2) when arms sharing a seed are uncorrelated
        # (conservative: a shared seed can only make the pairs positively correlated here).
        sd_diff = float(np.std(a, ddof=1)) * math.sqrt(2)
        mde3, mde5 = mde_paired(sd_diff, 3), mde_paired(sd_diff, 5)
        if label == "val MLM loss":
            mde3_loss = mde3
        lines.append(f"| {label} | {a.mean():.4f} ± {a.std(ddof=1):.4f} | {b.mean():.4f} ± {b.std(ddof=1):.4f} | "
                     f"{a.mean() - b.mean():+.4f} [{lo:+.4f}, {hi:+.4f}] | {mde3:.4f} | {mde5:.4f} |")
    seeds = seeds_per_table(mde3_loss)
    lines += ["", "| table | expected effect (val MLM loss) | / MDE at 3 seeds | pretraining seeds |",
              "|---|---:|---:|---:|"]
    for t, e in PRIOR.items():
        lines.append(f"| {t} | {e:.4f} | {e / mde3_loss:.2f} | {seeds[t]} |")
    lines += ["", f"Pretraining wall time per run: {np.mean([r['pretrain']['wall_s'] for r in pre]):.0f} s; "
              f"BLiMP: {np.mean([r['blimp']['wall_s'] for r in pre]):.0f} s."]
    return "\n".join(lines) + "\n", seeds


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 1:
        print(report(Path(args[0]))[0], end="")
    elif len(args) == 3 and args[1] == "--seeds":
        print(",".join(str(s) for s in range(report(Path(args[0]))[1][args[2]])))
    else:
        sys.exit(__doc__)
