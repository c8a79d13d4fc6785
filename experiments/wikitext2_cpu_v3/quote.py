"""Refresh the generated blocks of README.md here from the committed results and reports, so the prose
around them is written by hand but every number comes from the files:

    <!-- BEGIN name -->...<!-- END name -->

with name one of: pilot (results/pilot.md), cpu (results/cpu_times.txt as a table), verdicts (one line
per comparison and read-out: the trend and what the largest rung cannot say), and one block per
comparison (COMPARISONS: its plot and, per primary read-out, the effect-vs-budget table and trend, from
report/<comparison>/budget.csv and budget_trends.csv). A part not run yet reads "(not run yet)".

    python experiments/wikitext2_cpu_v3/quote.py          # rewrites README.md in place
    python experiments/wikitext2_cpu_v3/quote.py --check  # exit 1 if README.md is not up to date
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

from robablate.report.budget import comparison_markdown
from robablate.trend import fmt_tokens

HERE = Path(__file__).resolve().parent
NOT_RUN = "(not run yet)"
# block name -> (report folder, axis, arm, baseline)
COMPARISONS = {
    "masking": ("masking", "masking", "dynamic", "static"),
    "nsp": ("nsp_full_vs_segment_pair", "format", "full_sentences", "segment_pair"),
    "doc": ("nsp_doc_vs_full", "format", "doc_sentences", "full_sentences"),
    "batch": ("batch", "batch", "2k", "bs256"),
}
TEXT_COLUMNS = ["verdict", "collapsed", "confounded_by", "reading", "left_out", "model"]


def _read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    for c in TEXT_COLUMNS:
        if c in df:
            df[c] = df[c].map(lambda v: "" if pd.isna(v) else str(v))  # an all-empty column reads as float NaN
    return df


def _rows(folder: str, axis: str, arm: str, base: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    rep = HERE / "report" / folder
    if not (rep / "budget.csv").is_file():
        return None
    t, tr = _read(rep / "budget.csv"), _read(rep / "budget_trends.csv")
    sel = lambda d: d[(d["axis"] == axis) & (d["arm"] == arm) & (d["baseline"] == base)]  # noqa: E731
    return sel(t), sel(tr)


def comparison_block(name: str) -> str:
    folder, axis, arm, base = COMPARISONS[name]
    got = _rows(folder, axis, arm, base)
    if got is None:
        return NOT_RUN
    t, tr = got
    out = [f"![{axis}: {arm} - {base} across budgets](report/{folder}/budget_{axis}_{arm}_vs_{base}.png)", ""]
    for _, trend in tr.iterrows():
        g = t[(t["task"] == trend["task"]) & (t["metric"] == trend["metric"]) & (t["model"] == trend["model"])]
        out += [f"**{trend['metric']}** ({trend['task']})", "", comparison_markdown(g, trend), ""]
    return "\n".join(out)


def verdicts() -> str:
    lines = []
    for name, (folder, axis, arm, base) in COMPARISONS.items():
        got = _rows(folder, axis, arm, base)
        if got is None:
            lines.append(f"- {axis} {arm} - {base}: {NOT_RUN}")
            continue
        t, tr = got
        for _, r in tr.iterrows():
            top = t[(t["metric"] == r["metric"]) & (t["task"] == r["task"])].sort_values("tokens").iloc[-1]
            slope = ("" if math.isnan(r["slope"]) else
                     f"{r['slope']:+.3g} per doubling [{r['slope_low']:.3g}, {r['slope_high']:.3g}], ")
            lines.append(f"- {axis} {arm} - {base}, {r['metric']}: {slope}**{r['reading']}**. Largest rung "
                         f"({fmt_tokens(top['tokens'])}): {top['diff_mean']:.3g} [{top['diff_ci_low']:.3g}, "
                         f"{top['diff_ci_high']:.3g}], {top['verdict']}; it cannot tell an effect below "
                         f"{top['mde']:.3g} from zero.")
    return "\n".join(lines)


def cpu_table(path: Path) -> str:
    if not path.is_file():
        return NOT_RUN
    lines = ["| rung | CPU time (user + system) | wall time |", "|---|---:|---:|"]
    total_cpu = total_wall = 0.0
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"(\S+) cpu_s ([\d.]+)\+([\d.]+) wall_s ([\d.]+)", line.strip())
        if m:
            cpu, wall = float(m[2]) + float(m[3]), float(m[4])
            total_cpu, total_wall = total_cpu + cpu, total_wall + wall
            lines.append(f"| {m[1]} | {cpu / 60:.1f} min | {wall / 60:.1f} min |")
    lines.append(f"| **total** | **{total_cpu / 3600:.2f} h** | **{total_wall / 3600:.2f} h** |")
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    pilot = HERE / "results" / "pilot.md"
    out = {"pilot": pilot.read_text(encoding="utf-8") if pilot.is_file() else NOT_RUN,
           "cpu": cpu_table(HERE / "results" / "cpu_times.txt"), "verdicts": verdicts()}
    out.update({name: comparison_block(name) for name in COMPARISONS})
    return out


BLOCK = re.compile(r"(<!-- BEGIN (\w+) -->\n).*?(<!-- END \2 -->)", re.S)


def refresh(text: str) -> str:
    """`text` with every generated block replaced by its current content."""
    new = blocks()
    if missing := sorted(set(new) - {m[2] for m in BLOCK.finditer(text)}):
        raise SystemExit(f"README.md: no <!-- BEGIN name --> ... <!-- END name --> block for {', '.join(missing)}")
    return BLOCK.sub(lambda m: f"{m[1]}\n{new[m[2]].strip(chr(10))}\n\n{m[3]}" if m[2] in new else m[0], text)


def main(argv: list[str]) -> int | str:
    readme = HERE / "README.md"
    text = readme.read_text(encoding="utf-8")
    fresh = refresh(text)
    if "--check" in argv:
        return 0 if fresh == text else "README.md is not up to date: run python experiments/wikitext2_cpu_v3/quote.py"
    if fresh != text:
        readme.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
