"""Turn the report's tables into Markdown, LaTeX and terminal text (the numbers stay in the CSVs)."""

from __future__ import annotations

import math
import os

import pandas as pd

import numpy as np

from robablate.report.plots import effect_readouts
from robablate.report.design import eng
from robablate.report.tables import CONTROL_ARM, NO_AXIS

METHOD = (
    "Unit of replication: the pretraining run. `mean`/`std`/`median` pool every value (runs x "
    "fine-tuning seeds); the 95% CI of an arm's mean is Student t over the run means (one value per "
    "pretraining run, df = runs - 1), or over fine-tuning seeds when an arm has one run (`ci method` says "
    "which). `run median` = mean over runs of each run's median over fine-tuning seeds (RoBERTa's "
    "protocol). Differences are arm minus baseline, each run entering with its median over fine-tuning "
    "seeds. Runs pair when they share the pretraining seed and every config key except the compared axis "
    "and the keys it determines (each arm has one value of the key, e.g. format determines nsp); a per-arm "
    "tuned LR is part of the arm. With >= 2 pairs: paired t CI and p (df = pairs - 1); otherwise Welch's t "
    "(Welch-Satterthwaite df) over runs, and `pairing` says why nothing paired. No bootstrap: with 3-10 runs "
    "percentile and BCa intervals under-cover (simulated in tests/test_stats_calibration.py). `p (Holm, "
    "primary)` = Holm-adjusted over the primary family, fixed by the design (config `report.primary`, "
    "default val_mlm_loss and BLiMP overall) x the comparisons of an axis, whatever else is printed; every "
    "other row is exploratory (unadjusted p only; throughput and perplexity are never primary). `MDE` = the "
    "smallest true difference the same test detects with 80% power at two-sided alpha 0.05 with these runs "
    "(paired: noncentral t with the SD of the paired differences; Welch: simulated Welch test with each "
    "arm's SD); `runs to detect` = pairs (paired) or runs per arm (Welch) needed for the observed "
    "difference at that power. Flags: tokens seen (non-padding input tokens fed in pretraining, special "
    "tokens included) differing by > 2% between the arms, and a peak LR that differs without per-arm "
    "tuning, another axis that varies within an arm (`confounded by`), a config key set differently on the "
    "command line, different git commits. A run that never left the one-token solution is `collapsed` "
    "(robablate/collapse.py states the rule) and no verdict is drawn from a comparison with it; arms "
    "with equal training fingerprints are `identical training`. Task scores are fractions in [0, 1]; a "
    "task's score is the mean of its metrics."
)


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    return f"{x:.{digits}g}"


def glue_note(conventions: dict[str, str], tidy: pd.DataFrame) -> str:
    """The sentence every table carries: which GLUE score convention(s) and tasks it uses (the GLUE
    score rows of the tidy frame: read-out glue, group = the convention)."""
    rows = tidy[(tidy["readout"] == "glue") & (tidy["group"] != "task")].drop_duplicates("task")
    glue = sorted(zip(rows["task"], rows["group"]))
    if not glue:
        return "GLUE score: none in these runs (no fine-tuning results)."
    parts = [f"{name}" + (f" [{conventions[c]}]" if c in conventions else "") for name, c in glue]
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
        "ci method": s["ci_method"], "run median": s["run_median_mean"].map(fmt),
        "collapsed": [f"{int(c)} of {n}" if c else "" for c, n in zip(s["collapsed_runs"].fillna(0), s["n_runs"])]
        if "collapsed_runs" in s else "",
    })


def _runs_needed(x) -> str:
    if x is None or not np.isfinite(x):
        return "-" if x is None or np.isnan(x) else "never (diff 0)"
    return f"> {int(x) - 1}" if x > 10_000 else str(int(x))


def _n(row) -> str:
    if row["n_pairs"] >= 2:
        return f"{row['n_pairs']} pairs"
    return f"{row['n_arm']} vs {row['n_base']}"


def paired_display(paired: pd.DataFrame, base_col: str = "baseline") -> pd.DataFrame:
    p = paired
    base = p[base_col] if base_col in p else pd.Series(CONTROL_ARM, index=p.index)
    out = pd.DataFrame({
        "arm - base": p["arm"] + " - " + base, "task": p["task"], "metric": p["metric"],
        "n": [_n(r) for _, r in p.iterrows()], "diff": p["diff_mean"].map(fmt),
        "95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(p["diff_ci_low"], p["diff_ci_high"])],
        "method": p["method"], "p": p["p_value"].map(fmt),
        "p (Holm, primary)": [fmt(h) if f == "primary" else "exploratory" for h, f in zip(p["p_holm"], p["family"])]
        if "family" in p else p["p_holm"].map(fmt),
        "MDE (80%)": p["mde"].map(fmt), "runs to detect": p["runs_needed"].map(_runs_needed),
        "verdict": p["verdict"], "pairing": p["pairing"],
    })
    if "flags" in p:
        out["flags"] = p["flags"].fillna("")
    return out


def context_display(paired: pd.DataFrame) -> pd.DataFrame:
    """Once per compared pair of arms: tokens seen, LR, the other config differences and flags."""
    c = paired.drop_duplicates(["axis", "arm"])
    return pd.DataFrame({
        "arm - base": c["arm"] + " - " + c["baseline"],
        "tokens seen (base -> arm)": [f"{eng(b)} -> {eng(a)} ({100 * r:+.1f}%)" if np.isfinite(r) else "-"
                                      for a, b, r in zip(c["tokens_arm"], c["tokens_base"], c["tokens_rel"])],
        "peak lr (base -> arm)": [f"{b} -> {a}" + (" (tuned per arm)" if t else "")
                                  for a, b, t in zip(c["lr_arm"], c["lr_base"], c["lr_tuned"])],
        "also differs": c["also_differs"].fillna("").replace("", "-"),
        "flags": c["flags"].fillna("").replace("", "none"),
    })


def compute_display(compute: pd.DataFrame) -> pd.DataFrame:
    c = compute
    return pd.DataFrame({
        "arm": c["arm"] + c["baseline"].map({True: " (base)", False: ""}), "runs": c["n_runs"],
        "tokens seen (mean)": c["tokens_mean"].map(lambda x: eng(x) if np.isfinite(x) else "-"),
        "min..max": [f"{eng(lo)}..{eng(hi)}" if np.isfinite(lo) else "-"
                     for lo, hi in zip(c["tokens_min"], c["tokens_max"])],
        "vs base": c["tokens_vs_base"].map(lambda x: f"{100 * x:+.1f}%" if np.isfinite(x) else "-"),
        "tokens/step (target)": [(f"{a:.0f}" if np.isfinite(a) else "-") + (f" ({t:.0f})" if np.isfinite(t) else "")
                                 for a, t in zip(c["tokens_per_step"], c["tokens_per_step_target"])],
        "peak lr": c["lr"], "lr source": c["lr_source"],
    })


def effects_display(report, axis: str) -> pd.DataFrame:
    """The headline of an axis: the effect-plot read-outs, one row per arm."""
    p = report.paired[report.paired["axis"] == axis]
    keep = pd.Series(False, index=p.index)
    for task, metric in effect_readouts(p):
        keep |= (p["task"] == task) & (p["metric"] == metric)
    return paired_display(p[keep])


def blocked_display(blocked: pd.DataFrame) -> pd.DataFrame:
    b = blocked
    return pd.DataFrame({
        "arm - base": b["arm"] + " - " + b["baseline"], "confounded by": b["confounded_by"],
        "reading": b["reading"], "task": b["task"], "metric": b["metric"],
        "n": [_n(r) for _, r in b.iterrows()], "diff": b["diff_mean"].map(fmt),
        "95% CI": [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in zip(b["diff_ci_low"], b["diff_ci_high"])],
        "method": b["method"], "p": b["p_value"].map(fmt), "MDE (80%)": b["mde"].map(fmt), "verdict": b["verdict"],
    })


def provenance_lines(report) -> list[str]:
    """Runs from a dirty tree or from more than one commit: said, since the code is then not one version."""
    d = report.design
    if d.empty or "_commit" not in d:
        return []
    out = []
    dirty = int(d["_dirty"].sum())
    if dirty:
        out.append(f"- **dirty tree**: {dirty} of {len(d)} runs were made from a git tree with uncommitted "
                   "changes (environment.git_dirty): their code is not exactly the recorded commit.")
    commits = d["_commit"].replace("", "<unknown>").value_counts()
    if len(commits) > 1:
        out.append("- **different commits**: " + ", ".join(f"{c[:7]} ({n} runs)" for c, n in commits.items()))
    return out


def collapsed_lines(report, which: str = "collapsed") -> list[str]:
    """One line per collapsed run (which="overfit": per overfit run) and why."""
    short = short_dirs(report.tidy["run_dir"])
    return [f"- `{short.get(d, d)}`: {why}" for d, why in sorted(getattr(report, which).items())]


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
    cols["collapsed"] = runs["run_dir"].map(lambda d: "collapsed" if d in report.collapsed else "")
    if not report.design.empty and "_dirty" in report.design:
        info = report.design.set_index("run_dir")
        cols["commit"] = runs["run_dir"].map(lambda d: (info.at[d, "_commit"][:7] or "-") +
                                             (" (dirty)" if info.at[d, "_dirty"] else "") if d in info.index else "-")
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


def _flag_lines(report, axis: str) -> list[str]:
    f = report.token_flags
    f = f[f["axis"] == axis] if not f.empty else f
    return [f"- **not compute-matched**: {r.arm_more} vs {r.arm_fewer}: {r.flag}" for r in f.itertuples()]


def markdown(report, plots: dict[str, list[str]]) -> str:
    note = glue_note(report.conventions, report.tidy)
    n_ctrl = report.control["run_dir"].nunique() if not report.control.empty else 0
    out = ["# robablate ablation report", "",
           f"{report.tidy['run_dir'].nunique()} complete runs; varied axes: "
           f"{', '.join(report.axes) or 'none'}"
           + (f"; {n_ctrl} random-init control runs" if n_ctrl else "") + ".", "", note, ""]
    effects = [(a, [p for p in plots.get(a, []) if p.startswith("effects_")]) for a in report.axes]
    if any(e for _, e in effects):
        out += ["## Effects: arm minus baseline", "",
                "Point = mean difference, bar = 95% CI (paired t over pretraining seeds when runs pair, else "
                "Welch), grey band = the minimal detectable effect at 80% power with these runs, red = a "
                "flagged comparison (tokens seen, LR or a config key differ, another axis confounds it, or an "
                "arm collapsed). Method: see the end.", ""]
        for axis, pngs in effects:
            out += [f"### {axis} (baseline {report.baselines[axis]})", ""] + [f"![{p}]({p})" for p in pngs] + [""]
            out += [md_table(effects_display(report, axis)), ""] + _flag_lines(report, axis) + [""]
    if report.collapsed:
        out += ["## Collapsed runs", "",
                "These runs never left the one-token solution (they predict one token at every masked position); "
                "they have not tested their arm, and no verdict is drawn from a comparison with them.", ""]
        out += collapsed_lines(report) + [""]
    if report.overfit:
        out += ["## Overfit runs", "",
                "These runs left the one-token solution, then their validation loss rose above the unigram "
                "loss while their accuracy held (robablate/collapse.py). They tested their arm: comparisons "
                "with them keep their verdict and name them.", ""]
        out += collapsed_lines(report, "overfit") + [""]
    if prov := provenance_lines(report):
        out += ["## Provenance", ""] + prov + [""]
    out += ["## Runs", "", md_table(runs_display(report)), ""]
    if report.problems:
        out += ["## Failed, unfinished or skipped", "", md_table(pd.DataFrame(report.problems)), ""]
    if not report.off_axis.empty:
        out += ["## Config differences that are not a swept axis", "",
                "These keys differ between runs; a difference in results may come from them, not from the axis "
                "(`confounded_with`: the axis whose arms each hold one value of the key).",
                "", md_table(report.off_axis), ""]
    for axis, title, summ, paired in axis_sections(report):
        out += [f"## {title}", "", note, ""]
        if report.determined.get(axis):
            also = ", ".join(report.determined[axis])
            out += [f"Determined by {axis} in these runs (one value per arm): {also}. This contrast is also "
                    f"that of {also}; runs pair across it.", ""]
        comp = report.compute[report.compute["axis"] == axis] if not report.compute.empty else report.compute
        if not comp.empty:
            out += ["### Compute and learning rate per arm", "", md_table(compute_display(comp)), ""]
            out += _flag_lines(report, axis) + [""]
        out += ["### Per arm", "", md_table(summary_display(summ)), ""]
        if not paired.empty:
            out += ["### Difference to the baseline", "", md_table(paired_display(paired)), "",
                    "### What else differs between the compared arms", "", md_table(context_display(paired)), ""]
        blocked = report.blocked[report.blocked["axis"] == axis] if not report.blocked.empty else report.blocked
        if not blocked.empty:
            out += ["### Confounded comparisons, read within the other axis", "",
                    "The arms also differ in another axis, so the pooled row above is that axis's effect too. "
                    "The readings below keep it fixed where the design allows (matched subset), else compare "
                    "the arm with each single value of the baseline's, paired by seed (primary read-outs).",
                    "", md_table(blocked_display(blocked)), ""]
        gain = report.gain[report.gain["axis"] == axis] if not report.gain.empty else report.gain
        if not gain.empty:
            out += ["### Gain over the random-init control", "",
                    "Arm minus the random-init control (no pretraining, same read-outs): paired by seed when "
                    ">= 2 seeds are shared, else Welch.", "", md_table(paired_display(gain)), ""]
        out += [f"![{p}]({p})" for p in plots.get(axis, []) if not p.startswith("effects_")] + [""]
    out += ["## Variance: pretraining seeds vs fine-tuning seeds", "",
            "One-way random-effects ANOVA per arm (one combination of the varied axes) and task: "
            "`var pretrain` = between-run variance beyond what fine-tuning noise explains, `var finetune` = "
            "pooled within-run variance over fine-tuning seeds. " + note, "",
            md_table(variance_display(report.variance)), "", "## Method", "", METHOD, ""]
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
    note = glue_note(report.conventions, report.tidy)
    parts = ["% robablate report tables (needs booktabs). " + METHOD]
    for axis, title, summ, paired in axis_sections(report):
        parts.append(_latex_table(summary_display(summ), f"{title.replace('`', '')}: per arm. {note}"))
        if not paired.empty:
            parts.append(_latex_table(paired_display(paired), f"{title.replace('`', '')}: arm minus baseline. {note}"))
            parts.append(_latex_table(context_display(paired), f"{title.replace('`', '')}: what else differs "
                                                                "between the compared arms."))
    parts.append(_latex_table(variance_display(report.variance),
                              f"Variance components (pretraining vs fine-tuning seeds). {note}"))
    return "\n".join(parts)


def terminal(report) -> str:
    note = glue_note(report.conventions, report.tidy)
    out = []
    if report.problems:
        out += ["Failed, unfinished or skipped:", text_table(pd.DataFrame(report.problems)), ""]
    if not report.off_axis.empty:
        out += ["WARNING: config differences that are not a swept axis:", text_table(report.off_axis), ""]
    if report.collapsed:
        out += ["COLLAPSED runs (no verdict drawn from them):"] + collapsed_lines(report) + [""]
    if report.overfit:
        out += ["OVERFIT runs (verdicts kept, named):"] + collapsed_lines(report, "overfit") + [""]
    out += provenance_lines(report)
    for axis, title, summ, paired in axis_sections(report):
        out += [f"== {title.replace('`', '')} ==", note, text_table(summary_display(summ)), ""]
        if not paired.empty:
            out += [text_table(paired_display(paired)), "", text_table(context_display(paired)), ""]
        out += _flag_lines(report, axis)
    return "\n".join(out)
