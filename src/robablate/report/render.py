"""Turn the report's tables into Markdown, LaTeX and terminal text (the numbers stay in the CSVs)."""

from __future__ import annotations

import math
import os

import pandas as pd

from robablate.report.collect import is_glue_task
from robablate.report.tables import NO_AXIS

METHOD = (
    "Unit of replication: the pretraining run. `mean`/`std`/`median` pool every value (runs x "
    "fine-tuning seeds); the 95% CI of the mean is a percentile bootstrap ({n_boot:,} resamples, rng seed 0) "
    "over whole runs, or over fine-tuning seeds when an arm has one run (`ci over`). `run median` = mean "
    "over runs of each run's median over fine-tuning seeds (RoBERTa's protocol). Differences are arm minus "
    "baseline over runs paired by every other axis value and the pretraining seed (each run = its median "
    "over fine-tuning seeds; fine-tuning seeds are not paired across runs: seed k of two different "
    "encoders shares nothing that would make them a pair); Wilcoxon signed-rank with >= 6 pairs, else "
    "paired t-test; Welch's t-test "
    "when nothing pairs (the `test` column says so); `p holm` = Holm-adjusted over an axis's rows. "
    "Task scores are fractions in [0, 1]; a task's score is the mean of its metrics."
)


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    return f"{x:.{digits}g}"


def glue_note(conventions: dict[str, str], tasks) -> str:
    """The sentence every table carries: which GLUE score convention(s) and tasks it uses."""
    glue = sorted(t for t in set(tasks) if is_glue_task(t))
    if not glue:
        return "GLUE score: none in these runs (no fine-tuning results)."
    parts = [f"{name}" + (f" [{conventions[c]}]" if (c := name[6:].split(" ")[0]) in conventions else "")
             for name in glue]
    return "GLUE score rows: " + "; ".join(parts) + " (the run's own GLUE score, one value per run)."


def short_dirs(dirs) -> dict[str, str]:
    dirs = list(dict.fromkeys(dirs))
    if not dirs:
        return {}
    root = os.path.commonpath([os.path.abspath(d) for d in dirs]) if len(dirs) > 1 else os.path.dirname(
        os.path.abspath(dirs[0]))
    return {d: os.path.relpath(os.path.abspath(d), root) for d in dirs}


def summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary
    return pd.DataFrame({
        "arm": s["arm"] + s["baseline"].map({True: " (base)", False: ""}),
        "task": s["task"], "metric": s["metric"], "runs": s["n_runs"], "values": s["n_values"],
        "mean ± std": [f"{fmt(m)} ± {fmt(sd)}" for m, sd in zip(s["mean"], s["std"])],
        "median": s["median"].map(fmt),
        "95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(s["ci_low"], s["ci_high"])],
        "ci over": s["ci_over"], "run median": s["run_median_mean"].map(fmt),
    })


def paired_display(paired: pd.DataFrame) -> pd.DataFrame:
    p = paired
    return pd.DataFrame({
        "arm - base": p["arm"] + " - " + p["baseline"], "task": p["task"], "metric": p["metric"],
        "pairs": p["n_pairs"], "diff": p["diff_mean"].map(fmt),
        "95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(p["diff_ci_low"], p["diff_ci_high"])],
        "test": p["test"], "p": p["p_value"].map(fmt), "p holm": p["p_holm"].map(fmt),
    })


def variance_display(var: pd.DataFrame) -> pd.DataFrame:
    v = var
    return pd.DataFrame({
        "arm": v["arm"], "task": v["task"], "metric": v["metric"], "runs": v["n_runs"],
        "values": v["n_values"], "var pretrain": v["var_pretrain"].map(fmt),
        "var finetune": v["var_finetune"].map(fmt), "frac pretrain": v["frac_pretrain"].map(fmt),
        "sd pretrain": v["sd_pretrain"].map(fmt), "sd finetune": v["sd_finetune"].map(fmt),
    })


def runs_display(report) -> pd.DataFrame:
    runs = report.tidy.drop_duplicates("run_dir")
    short = short_dirs(runs["run_dir"])
    cols = {"run": runs["run_dir"].map(short)}
    for a in report.axes:
        cols[a] = runs[a]
    cols["seed"] = runs["seed"]
    return pd.DataFrame(cols)


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(empty)_"
    return df.to_markdown(index=False, disable_numparse=True)


def text_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(empty)"
    return df.to_markdown(index=False, tablefmt="simple", disable_numparse=True)


def axis_sections(report):
    """(axis, title, summary rows, paired rows) per varied axis, or one pooled section."""
    for axis in report.axes or [NO_AXIS]:
        title = (f"Axis `{axis}` (baseline: {axis}={report.baselines[axis]})" if axis in report.baselines
                 else "All runs (no axis varies)")
        yield (axis, title, report.summary[report.summary["axis"] == axis],
               report.paired[report.paired["axis"] == axis])


def markdown(report, plots: dict[str, list[str]]) -> str:
    note = glue_note(report.conventions, report.tidy["task"])
    out = ["# robablate ablation report", "",
           f"{report.tidy['run_dir'].nunique()} complete runs; varied axes: "
           f"{', '.join(report.axes) or 'none'}.", "", note, "", "## Runs", "", md_table(runs_display(report)), ""]
    if report.problems:
        out += ["## Failed, unfinished or skipped", "", md_table(pd.DataFrame(report.problems)), ""]
    if not report.off_axis.empty:
        out += ["## Warning: config differences that are not a swept axis", "",
                "These keys differ between runs; a difference in results may come from them, not from the axis.",
                "", md_table(report.off_axis), ""]
    for axis, title, summ, paired in axis_sections(report):
        out += [f"## {title}", "", note, ""]
        if report.aliases.get(axis):
            also = ", ".join(report.aliases[axis])
            out += [f"Note: {also} varies together with {axis} in these runs (one value per arm), so this "
                    f"contrast is also that of {also}; runs pair across it.", ""]
        out += ["### Per arm", "", md_table(summary_display(summ)), ""]
        if not paired.empty:
            out += ["### Difference to the baseline", "", md_table(paired_display(paired)), ""]
        out += [f"![{p}]({p})" for p in plots.get(axis, [])] + [""]
    out += ["## Variance: pretraining seeds vs fine-tuning seeds", "",
            "One-way random-effects ANOVA per arm (one combination of the varied axes) and task: "
            "`var pretrain` = between-run variance beyond what fine-tuning noise explains, `var finetune` = "
            "pooled within-run variance over fine-tuning seeds. " + note, "",
            md_table(variance_display(report.variance)), "", "## Method", "", METHOD.format(n_boot=report.n_boot), ""]
    return "\n".join(out)


def _tex(s: str) -> str:
    s = s.replace("\\", "\x00")  # placeholder, so the braces of \textbackslash{} stay unescaped
    for a, b in [("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"), ("{", r"\{"),
                 ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")]:
        s = s.replace(a, b)
    return s.replace("\x00", r"\textbackslash{}").replace("±", r"$\pm$")


def _latex_table(df: pd.DataFrame, caption: str) -> str:
    if df.empty:
        return f"% {caption}: empty\n"
    df = df.astype(str).map(_tex).rename(columns=_tex)
    body = df.style.hide(axis="index").to_latex(hrules=True, caption=_tex(caption),
                                                 position="htbp", position_float="centering")
    return body


def latex(report) -> str:
    note = glue_note(report.conventions, report.tidy["task"])
    parts = ["% robablate report tables (needs booktabs). " + METHOD.format(n_boot=report.n_boot)]
    for axis, title, summ, paired in axis_sections(report):
        parts.append(_latex_table(summary_display(summ), f"{title.replace('`', '')}: per arm. {note}"))
        if not paired.empty:
            parts.append(_latex_table(paired_display(paired), f"{title.replace('`', '')}: arm minus baseline. {note}"))
    parts.append(_latex_table(variance_display(report.variance),
                              f"Variance components (pretraining vs fine-tuning seeds). {note}"))
    return "\n".join(parts)


def terminal(report) -> str:
    note = glue_note(report.conventions, report.tidy["task"])
    out = []
    if report.problems:
        out += ["Failed, unfinished or skipped:", text_table(pd.DataFrame(report.problems)), ""]
    if not report.off_axis.empty:
        out += ["WARNING: config differences that are not a swept axis:", text_table(report.off_axis), ""]
    for axis, title, summ, paired in axis_sections(report):
        out += [f"== {title.replace('`', '')} ==", note, text_table(summary_display(summ)), ""]
        if not paired.empty:
            out += [text_table(paired_display(paired)), ""]
    return "\n".join(out)
