"""The headline table of each sweep (what README.md here shows), from the report's summary.csv,
paired.csv and compute.csv: per arm, validation MLM loss and perplexity (the primary read-outs at this
scale), BLiMP (overall and per field) when evaluated, the GLUE score (GLUE convention, CoLA + MRPC + RTE) and the synthetic-task
score, as mean ± std over the pretraining seeds with the Student-t 95% CI over run means; then the
difference to the baseline arm with its 95% CI, the method and n it rests on (paired t over seeds, or
Welch), p raw and Holm-adjusted over the primary family (the design's report.primary x the comparisons;
other rows are exploratory), the minimal detectable effect at
80% power, the verdict and the flags (tokens seen differing by > 2%, an LR set by the preset); a
table of tokens seen and peak LR per arm; and, when the sweep holds random-init control runs, each
arm's gain over the control.

    python experiments/wikitext2_cpu/headline.py experiments/wikitext2_cpu/report/table1 [...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from robablate.minimal_pairs.blimp_reader import FIELDS as BLIMP_FIELDS

ROWS = (  # (task, metric, label)
    ("pretrain", "val_mlm_loss", "val MLM loss"),
    ("pretrain", "val_mlm_ppl", "val MLM ppl"),
    ("BLiMP", "blimp_acc", "BLiMP accuracy"),
    *((f"BLiMP field: {f}", "blimp_acc", f"BLiMP {f}") for f in BLIMP_FIELDS),
    ("GLUE (glue convention, tasks: CoLA, MRPC, RTE)", "score", "GLUE score (CoLA, MRPC, RTE)"),
    ("GLUE (synthetic convention, tasks: SYN-TOPIC, SYN-NEXT, SYN-SIM)", "score", "synthetic score"),
)


def _f(x: float) -> str:
    return "-" if pd.isna(x) else f"{x:.4g}"


def _p(x: float) -> str:
    return "-" if pd.isna(x) else f"{x:.3g}"


def _tokens(x: float) -> str:
    return "-" if pd.isna(x) else f"{x / 1e6:.3f}M"


def _n(q) -> str:
    return f"{q.n_pairs} pairs" if q.n_pairs >= 2 else f"{q.n_arm} vs {q.n_base} runs"


def headline(report_dir: str | Path) -> str:
    d = Path(report_dir)
    summary, paired = pd.read_csv(d / "summary.csv"), pd.read_csv(d / "paired.csv")
    lines = ["| read-out | arm | runs | mean ± std | 95% CI (t) | arm - baseline [95% CI] | method, n | p | "
             "p (Holm, primary) | MDE (80%) | verdict | flags |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---|---|"]
    for task, metric, label in ROWS:
        rows = summary[(summary.task == task) & (summary.metric == metric)]
        for r in rows.itertuples():
            base = " (baseline)" if r.baseline else ""
            if getattr(r, "collapsed_runs", 0) and r.collapsed_runs > 0:  # robablate/collapse.py
                base += f" **collapsed: {int(r.collapsed_runs)} of {r.n_runs} runs**"
            p = paired[(paired.task == task) & (paired.metric == metric) & (paired.arm == r.arm)
                       & (paired.axis == r.axis)]
            cells = [""] * 7
            if len(p):
                q = p.iloc[0]
                cells = [f"{_f(q.diff_mean)} [{_f(q.diff_ci_low)}, {_f(q.diff_ci_high)}]", f"{q.method}, {_n(q)}",
                         _p(q.p_value), _p(q.p_holm) if getattr(q, "family", "primary") == "primary" else "exploratory",
                         _f(q.mde), q.verdict,
                         "" if pd.isna(q["flags"]) else str(q["flags"])]
            lines.append(f"| {label} | {r.arm}{base} | {r.n_runs} | {_f(r.mean)} ± {_f(r.std)} | "
                         f"[{_f(r.ci_low)}, {_f(r.ci_high)}] | " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if (d / "compute.csv").is_file():
        c = pd.read_csv(d / "compute.csv")
        out += ("\n| axis | arm | tokens seen (mean, min..max) | vs baseline | peak LR | LR source |\n"
                "|---|---|---:|---:|---:|---|\n")
        for r in c.itertuples():
            out += (f"| {r.axis} | {r.arm}{' (baseline)' if r.baseline else ''} | {_tokens(r.tokens_mean)} "
                    f"({_tokens(r.tokens_min)}..{_tokens(r.tokens_max)}) | "
                    f"{'-' if pd.isna(r.tokens_vs_base) else f'{100 * r.tokens_vs_base:+.1f}%'} | {r.lr} | "
                    f"{r.lr_source} |\n")
    if (d / "gain.csv").is_file():  # random-init control runs in the sweep: each arm's gain over them
        g = pd.read_csv(d / "gain.csv")
        out += ("\n| read-out | arm - random-init control [95% CI] | method, n | p | MDE (80%) | verdict |\n"
                "|---|---:|---|---:|---:|---|\n")
        for task, metric, label in ROWS:
            for q in g[(g.task == task) & (g.metric == metric)].itertuples():
                out += (f"| {label} | {q.arm}: {_f(q.diff_mean)} [{_f(q.diff_ci_low)}, {_f(q.diff_ci_high)}] | "
                        f"{q.method}, {_n(q)} | {_p(q.p_value)} | {_f(q.mde)} | {q.verdict} |\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for folder in sys.argv[1:]:
        text = headline(folder)
        (Path(folder) / "headline.md").write_text(text, encoding="utf-8")
        print(f"## {folder}\n\n{text}")
