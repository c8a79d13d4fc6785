"""The verdict table of the WikiText-2 study v2 (README.md here): per compared arm and primary read-out
(validation MLM loss, BLiMP overall: the design's `report.primary`, the report's Holm family, so the
report's table and this one carry the same p (Holm, primary)), the paper's direction, this run's, the 95%
CI, the test and n, the tokens seen and peak LRs of the two arms, the MDE, and a one-line verdict:

- "collapsed arm": an arm's runs never left the one-token solution (robablate/collapse.py); the
  comparison tested nothing, whatever its interval says;
- "agrees" / "opposite": the CI excludes 0 and the Holm-adjusted p < 0.05, in the paper's direction or
  against it;
- "confounded by <axis>": the arms also differ in another axis; the blocked reading (the arm against
  each single value of the other axis, paired by seed: report/<table>/blocked.csv) follows it;
- "confounded": it would agree or oppose, but the arms also differ in something the report flags
  (tokens seen by > 2%, an LR set by a preset, another config key);
- "CI excludes 0, not after Holm": a single-comparison effect that the family does not let through;
- "not detectable below X": the CI holds 0; X is the MDE at 80% power, the smallest true effect these
  runs would have found.

    python experiments/wikitext2_cpu_v2/verdicts.py experiments/wikitext2_cpu_v2/report   # -> verdicts.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from robablate.report.collect import BLIMP_METRIC, BLIMP_TASK, PRETRAIN_TASK

ALPHA = 0.05
# RoBERTa (Liu et al. 2019) per arm against its table's baseline: +1 = the arm is better (lower MLM
# loss / perplexity, higher accuracy), -1 = worse, as the paper's rows read.
PAPER = {
    ("masking", "dynamic"): (+1, "Table 1: dynamic comparable or slightly better (SQuAD 2.0 78.7 vs 78.3, SST-2 92.9 vs 92.5)"),
    ("format", "sentence_pair"): (-1, "Table 2: SENTENCE-PAIR worse (SQuAD 2.0 76.2 vs 78.7, MNLI 82.9 vs 84.0)"),
    ("format", "full_sentences"): (+1, "Table 2: FULL-SENTENCES better (SQuAD 2.0 79.1 vs 78.7, MNLI 84.7 vs 84.0)"),
    ("format", "doc_sentences"): (+1, "Table 2: DOC-SENTENCES better (SQuAD 2.0 79.7 vs 78.7, MNLI 84.7 vs 84.0)"),
    ("nsp", "false"): (+1, "Table 2: removing NSP matches or slightly improves"),
    ("batch", "2k"): (+1, "Table 3: 2K better (perplexity 3.68 vs 3.99)"),
    ("batch", "8k"): (+1, "Table 3: 8K better (perplexity 3.77 vs 3.99)"),
}
PRIMARY = ((PRETRAIN_TASK, "val_mlm_loss", "val MLM loss", -1), (BLIMP_TASK, BLIMP_METRIC, "BLiMP overall", +1))


def _fmt(x: float) -> str:
    return f"{x:+.4f}" if abs(x) < 10 else f"{x:+.3g}"


def rows(report_dir: Path) -> list[dict]:
    p = pd.read_csv(report_dir / "paired.csv")
    out = []
    for (axis, arm), (paper_sign, paper_text) in PAPER.items():
        for task, metric, label, better_sign in PRIMARY:
            r = p[(p.axis == axis) & (p.arm.astype(str) == arm) & (p.task == task) & (p.metric == metric)]
            if r.empty:
                continue
            r = r.iloc[0]
            out.append({"axis": axis, "arm": arm, "baseline": str(r.baseline), "readout": label,
                        "paper_sign": paper_sign, "paper": paper_text, "better_sign": better_sign,
                        "diff": r.diff_mean, "lo": r.diff_ci_low, "hi": r.diff_ci_high,
                        "method": r.method, "n": int(r.n_pairs) if r.n_pairs >= 2 else f"{r.n_arm} vs {r.n_base}",
                        "p": r.p_value, "p_holm": r.p_holm, "mde": r.mde,
                        "flags": "" if pd.isna(r["flags"]) else str(r["flags"]),
                        "collapsed": "" if pd.isna(r["collapsed"]) else str(r["collapsed"]),
                        "confounded_by": "" if pd.isna(r["confounded_by"]) else str(r["confounded_by"]),
                        "blocked": blocked(report_dir, axis, arm, task, metric),
                        "tokens": r.tokens_rel, "lr": r.lr_base if r.lr_base == r.lr_arm else
                        f"{r.lr_base} vs {r.lr_arm}" + (" (tuned per arm)" if r.lr_tuned else "")})
    return out


def blocked(report_dir: Path, axis: str, arm: str, task: str, metric: str) -> str:
    """The blocked readings of a confounded comparison (report/<table>/blocked.csv), one clause each."""
    if not (report_dir / "blocked.csv").is_file():
        return ""
    b = pd.read_csv(report_dir / "blocked.csv", dtype={"arm": str, "baseline": str})
    b = b[(b.axis == axis) & (b.arm.astype(str) == arm) & (b.task == task) & (b.metric == metric)]
    return "; ".join(f"{r.reading.split(' vs ', 1)[-1].replace(', paired by seed', '')}: {_fmt(r.diff_mean)} "
                     f"[{_fmt(r.diff_ci_low)}, {_fmt(r.diff_ci_high)}], {r.n_pairs} pairs" for r in b.itertuples())


def verdict(r: dict) -> tuple[str, str]:
    """(this run's direction, verdict) of one row."""
    better = np.sign(r["diff"]) == r["better_sign"]
    direction = "better" if better else "worse"
    holds = not (r["lo"] > 0 or r["hi"] < 0)
    if r["collapsed"]:  # a model that predicts one token everywhere tested nothing
        return direction + " (CI holds 0)" * holds, f"collapsed arm ({r['collapsed']}): no verdict"
    if r["confounded_by"]:
        return direction + " (CI holds 0)" * holds, (f"confounded by {r['confounded_by']}; blocked reading: {r['blocked']}" if r["blocked"]
                           else f"confounded by {r['confounded_by']}")
    if not (r["lo"] > 0 or r["hi"] < 0):
        return direction + " (CI holds 0)", f"not detectable below {r['mde']:.3g}"
    if r["p_holm"] >= ALPHA:
        return direction, "CI excludes 0, not after Holm"
    if r["flags"]:  # tokens seen differ by > 2% or another config key differs: not the axis alone
        return direction, "confounded"
    return direction, "agrees" if (1 if better else -1) == r["paper_sign"] else "opposite"


def table(report_dir: Path) -> str:
    lines = ["| comparison | read-out | paper | this run | diff [95% CI] | test, n | tokens seen, arm vs base | "
             "peak LR | p | p (Holm, primary) | MDE (80%) | verdict |",
             "|---|---|---|---|---:|---|---:|---|---:|---:|---:|---|"]
    for r in rows(report_dir):
        this, v = verdict(r)
        flag = f" ({r['flags']})" if r["flags"] and not (r["collapsed"] or r["confounded_by"]) else ""
        lines.append(f"| {r['axis']} {r['arm']} − {r['baseline']} | {r['readout']} | "
                     f"{'better' if r['paper_sign'] > 0 else 'worse'}: {r['paper']} | {this} | "
                     f"{_fmt(r['diff'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}] | {r['method']}, {r['n']} | "
                     f"{100 * r['tokens']:+.1f}% | {r['lr']} | "
                     f"{r['p']:.3g} | {r['p_holm']:.3g} | {r['mde']:.3g} | {v}{flag} |")
    return "\n".join(lines) + "\n"


TITLES = {"table1": "Table 1: masking", "table2": "Table 2: input format and NSP",
          "table3": "Table 3: batch size (LR tuned per arm)"}


def document(root: Path) -> str:
    """verdicts.md: one table per report/<table>/ folder under `root`."""
    return "".join(f"**{TITLES.get(d.name, d.name)}**\n\n{table(d)}\n" for d in sorted(root.glob("table*"))
                   if (d / "paired.csv").is_file())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    text = document(Path(sys.argv[1]))
    (Path(sys.argv[1]) / "verdicts.md").write_text(text, encoding="utf-8")
    print(text, end="")
