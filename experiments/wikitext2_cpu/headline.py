"""The headline table of each sweep (what README.md here shows), from the report's summary.csv and
paired.csv: per arm, validation MLM loss and perplexity (the primary read-outs at this scale), the GLUE
score (GLUE convention, CoLA + MRPC + RTE) and the synthetic-task score, as mean ± std over the
pretraining seeds, the bootstrap 95% CI, and the difference to the baseline arm with its 95% CI and
paired-test p-value, raw and Holm-adjusted over every comparison of the sweep.

    python experiments/wikitext2_cpu/headline.py experiments/wikitext2_cpu/report/table1 [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROWS = (  # (task, metric, label)
    ("pretrain", "val_mlm_loss", "val MLM loss"),
    ("pretrain", "val_mlm_ppl", "val MLM ppl"),
    ("GLUE (glue convention, tasks: CoLA, MRPC, RTE)", "score", "GLUE score (CoLA, MRPC, RTE)"),
    ("GLUE (synthetic convention, tasks: SYN-TOPIC, SYN-NEXT, SYN-SIM)", "score", "synthetic score"),
)


def _f(x: float) -> str:
    return f"{x:.4g}"


def headline(report_dir: str | Path) -> str:
    d = Path(report_dir)
    summary, paired = pd.read_csv(d / "summary.csv"), pd.read_csv(d / "paired.csv")
    lines = ["| read-out | arm | runs | mean ± std | 95% CI | arm - baseline [95% CI] | p | p (Holm) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for task, metric, label in ROWS:
        rows = summary[(summary.task == task) & (summary.metric == metric)]
        for r in rows.itertuples():
            base = " (baseline)" if r.baseline else ""
            p = paired[(paired.task == task) & (paired.metric == metric) & (paired.arm == r.arm)]
            diff = pval = praw = ""
            if len(p):
                q = p.iloc[0]
                diff = f"{_f(q.diff_mean)} [{_f(q.diff_ci_low)}, {_f(q.diff_ci_high)}]"
                pval = "-" if pd.isna(q.p_holm) else f"{q.p_holm:.3g}"
                praw = "-" if pd.isna(q.p_value) else f"{q.p_value:.3g}"
            lines.append(f"| {label} | {r.arm}{base} | {r.n_runs} | {_f(r.mean)} ± {_f(r.std)} | "
                         f"[{_f(r.ci_low)}, {_f(r.ci_high)}] | {diff} | {praw} | {pval} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for folder in sys.argv[1:]:
        text = headline(folder)
        (Path(folder) / "headline.md").write_text(text, encoding="utf-8")
        print(f"## {folder}\n\n{text}")
