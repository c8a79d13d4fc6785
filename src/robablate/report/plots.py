"""Plots of a Report, as matplotlib Figures (no pyplot: no global state, any backend, notebook-safe).

Every plot shows 95% CIs (at small budgets the CI decides whether a bar is an effect); the effect
plot (arm minus baseline, MDE shaded) comes first, since the comparison is what a reader wants.
Each function returns None when the runs hold nothing to plot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from robablate.registry import zero_shot
from robablate.report.collect import PRETRAIN_TASK, is_glue_task

# The read-outs an effect plot shows (task, metric): validation MLM loss, each zero-shot read-out's
# overall (robablate/registry.py), and every GLUE score pseudo-task (added per report, since their
# names carry convention and tasks).
EFFECT_READOUTS = ((PRETRAIN_TASK, "val_mlm_loss"), *((r.label, r.metric) for r in zero_shot()))


def _arms(report, axis: str) -> list[str]:
    s = report.summary[report.summary["axis"] == axis]
    return list(dict.fromkeys(s["arm"]))


def _bars(ax, frame: pd.DataFrame, groups: list[str], arms: list[str], group_col: str) -> None:
    width = 0.8 / max(len(arms), 1)
    x = np.arange(len(groups))
    for i, arm in enumerate(arms):
        rows = frame[frame["arm"] == arm].set_index(group_col).reindex(groups)
        mean = rows["mean"].to_numpy(float)
        err = np.vstack([mean - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - mean])
        ax.bar(x + (i - (len(arms) - 1) / 2) * width, mean, width, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=3,
               label=arm)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.grid(axis="y", alpha=0.3)


def _axis_label(report, axis: str) -> str:
    return f"{axis} (baseline {report.baselines[axis]})" if axis in report.baselines else "all runs"


def plot_tasks(report, axis: str, metric: str = "score") -> Figure | None:
    """Per-task mean score by arm with 95% CI error bars (fine-tuning tasks only)."""
    s = report.summary
    s = s[(s["axis"] == axis) & (s["metric"] == metric) & (s["task"] != PRETRAIN_TASK)
          & ~s["task"].map(is_glue_task) & s["mean"].notna()]
    if s.empty:
        return None
    tasks = list(dict.fromkeys(s["task"]))
    fig = Figure(figsize=(max(5.0, 1.3 * len(tasks) + 2), 3.8), layout="constrained")
    ax = fig.add_subplot()
    _bars(ax, s, tasks, _arms(report, axis), "task")
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    fig.suptitle(f"Fine-tuning tasks by {_axis_label(report, axis)}")
    fig.legend(title=axis, fontsize="small", loc="outside right center")
    return fig


def _arm_bars(ax, frame: pd.DataFrame, arms: list[str], axis: str) -> None:
    """One bar per arm (x = the arm), 95% CI error bars."""
    t = frame.set_index("arm").reindex(arms)
    mean = t["mean"].to_numpy(float)
    err = np.vstack([mean - t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float) - mean])
    ax.bar(arms, mean, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=4,
           color=[f"C{j}" for j in range(len(arms))])
    ax.set_xlabel(axis)
    ax.grid(axis="y", alpha=0.3)


def plot_glue(report, axis: str) -> Figure | None:
    """The GLUE score by arm, one panel per convention (the panel title names convention and tasks)."""
    s = report.summary
    s = s[(s["axis"] == axis) & s["task"].map(is_glue_task) & s["mean"].notna()]
    if s.empty:
        return None
    tasks = list(dict.fromkeys(s["task"]))
    fig = Figure(figsize=(4.5 * len(tasks), 3.8), layout="constrained")
    arms = _arms(report, axis)
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), i + 1)
        _arm_bars(ax, s[s["task"] == task], arms, axis)
        ax.set_title(task.replace(", tasks:", ",\ntasks:"), fontsize="small")
        ax.set_ylabel("GLUE score (mean over runs, 95% CI)")
    return fig


def _curves(hist: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-run curves on one token grid (runs may validate at different token counts): the union of
    their points inside the range every run covers, linear interpolation in between."""
    runs = [g.dropna(subset=[metric]).sort_values("tokens") for _, g in hist.groupby("run_dir")]
    runs = [g for g in runs if len(g)]
    if not runs:
        return np.empty(0), np.empty((0, 0))
    lo, hi = max(g["tokens"].min() for g in runs), min(g["tokens"].max() for g in runs)
    grid = np.unique(np.concatenate([g["tokens"].to_numpy() for g in runs]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    return grid, np.array([np.interp(grid, g["tokens"], g[metric]) for g in runs])


def plot_mlm_curve(report, axis: str) -> Figure | None:
    """Validation MLM loss and perplexity against tokens seen: mean per arm, band = min..max over runs."""
    h = report.history
    if h.empty or h[["val_mlm_loss", "val_mlm_ppl"]].isna().all().all():
        return None
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    arms = _arms(report, axis)
    for i, (metric, label) in enumerate([("val_mlm_loss", "validation MLM loss"),
                                         ("val_mlm_ppl", "validation MLM perplexity")]):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, arm in enumerate(arms):
            grid, ys = _curves(h if axis not in h.columns else h[h[axis] == arm], metric)
            if not grid.size:
                continue
            coll = set(h.loc[h[axis] == arm, "run_dir"]) & set(report.collapsed) if axis in h.columns else set()
            tag = f", {len(coll)} collapsed" if coll else ""
            ax.plot(grid, ys.mean(0), color=f"C{j}", label=f"{arm} (n={len(ys)}{tag})",
                    ls="--" if coll else "-")
            if len(ys) > 1:
                ax.fill_between(grid, ys.min(0), ys.max(0), color=f"C{j}", alpha=0.2, lw=0)
        ax.set_xlabel("tokens seen")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1M: long integers overlap
        ax.set_ylabel(label)
        if metric == "val_mlm_ppl":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(title=axis, fontsize="small")
    fig.suptitle(f"Pretraining by {_axis_label(report, axis)} (band: min..max over pretraining seeds)")
    return fig


def _one_panel() -> tuple[Figure, Any]:
    fig = Figure(figsize=(4.5, 3.8), layout="constrained")
    return fig, fig.add_subplot()


def plot_throughput(report, axis: str) -> Figure | None:
    """Pretraining throughput (tokens/s) by arm with 95% CIs."""
    s = report.summary
    s = s[(s["axis"] == axis) & (s["task"] == PRETRAIN_TASK) & (s["metric"] == "tokens_per_s")]
    if s.empty or s["mean"].isna().all():
        return None
    fig, ax = _one_panel()
    _arm_bars(ax, s, _arms(report, axis), axis)
    ax.set_ylabel("pretraining tokens / s (mean, 95% CI)")
    ax.set_title(f"Throughput by {_axis_label(report, axis)}", fontsize="medium")
    return fig


def plot_tokens(report, axis: str) -> Figure | None:
    """Tokens seen per arm (the compute budget: non-padding input tokens fed), mean with min..max over
    runs, against the baseline's mean +-1% (shaded): arms compared at equal compute sit inside it."""
    c = report.compute
    c = c[c["axis"] == axis] if not c.empty else c
    if c.empty or c["tokens_mean"].isna().all():
        return None
    fig, ax = _one_panel()
    x = np.arange(len(c))
    mean = c["tokens_mean"].to_numpy(float)
    err = np.vstack([mean - c["tokens_min"].to_numpy(float), c["tokens_max"].to_numpy(float) - mean])
    ax.bar(x, mean, 0.6, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=3,
           color=["C1" if b else "C0" for b in c["baseline"]])
    base = c.loc[c["baseline"].astype(bool), "tokens_mean"]
    if len(base):
        ax.axhspan(0.99 * base.iloc[0], 1.01 * base.iloc[0], color="0.8", zorder=0, label="baseline +-1%")
        ax.set_ylim(0.95 * min(mean.min(), base.iloc[0]), 1.03 * max(mean.max(), base.iloc[0]))
        ax.legend(fontsize="x-small", loc="lower right")
    ax.set_xticks(x, c["arm"], rotation=20 if len(c) > 3 else 0)
    ax.yaxis.set_major_formatter(EngFormatter())
    ax.set_ylabel("tokens seen (mean, bar: min..max over runs)")
    ax.set_title(f"Compute by {_axis_label(report, axis)}", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return fig


def effect_readouts(paired: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(zip(paired["task"], paired["metric"]))
    glue = sorted(t for t in set(paired["task"]) if is_glue_task(t))
    return [r for r in EFFECT_READOUTS if r in present] + [(t, "score") for t in glue if (t, "score") in present]


def _arm_label(arm: str, row: pd.Series) -> str:
    if not isinstance(row.get("method"), str):
        return arm
    if isinstance(row.get("collapsed"), str) and row["collapsed"]:
        arm += " [COLLAPSED]"
    n = f"{row['n_pairs']} pairs" if row["n_pairs"] >= 2 else f"{row['n_arm']} vs {row['n_base']} runs"
    return f"{arm}\n({row['method'].split(' over ')[0]}, {n})"


def plot_effects(report, axis: str) -> Figure | None:
    """Per read-out, each arm minus the baseline as a point with its 95% CI (paired t or Welch, as
    the paired table says), zero marked, and the minimal detectable effect (80% power) shaded as a
    band around zero: a CI inside the band is a null the runs could not have resolved."""
    p = report.paired
    p = p[p["axis"] == axis] if "axis" in p else p
    readouts = effect_readouts(p)
    if p.empty or not readouts:
        return None
    arms = list(dict.fromkeys(p["arm"]))
    fig = Figure(figsize=(4.2 * len(readouts), 0.9 + 0.6 * len(arms) + 0.8), layout="constrained")
    for i, (task, metric) in enumerate(readouts):
        ax = fig.add_subplot(1, len(readouts), i + 1)
        rows = p[(p["task"] == task) & (p["metric"] == metric)].set_index("arm").reindex(arms)
        y = np.arange(len(arms))[::-1]
        for yi, (arm, r) in zip(y, rows.iterrows()):
            if np.isfinite(r["mde"]):
                ax.fill_betweenx([yi - 0.3, yi + 0.3], -r["mde"], r["mde"], color="0.85", lw=0,
                                 label="MDE (80% power)" if yi == y[0] else None)
            if not np.isfinite(r["diff_mean"]):
                continue
            lo, hi = r["diff_ci_low"], r["diff_ci_high"]
            err = np.array([[r["diff_mean"] - lo], [hi - r["diff_mean"]]]) if np.isfinite(lo) else None
            flagged = any(isinstance(r.get(k), str) and bool(r[k]) for k in ("flags", "collapsed"))
            ax.errorbar(r["diff_mean"], yi, xerr=err, fmt="o", color="C3" if flagged else "C0", capsize=4)
        ax.axvline(0, color="k", lw=1)
        ax.set_yticks(y, [_arm_label(a, rows.loc[a]) for a in arms], fontsize="small")
        ax.set_ylim(-0.7, len(arms) - 0.3)
        label = metric if task == PRETRAIN_TASK else task.replace(", tasks:", ",\ntasks:")
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(f"arm - {report.baselines.get(axis, 'baseline')} (95% CI)")
        ax.grid(axis="x", alpha=0.3)
        if i == 0:
            ax.legend(fontsize="x-small", loc="best")
    fig.suptitle(f"Effects by {_axis_label(report, axis)}: point = mean difference, bar = 95% CI, "
                 "grey = MDE, red = flagged (tokens/LR/config/confound/collapsed)", fontsize="small")
    return fig


PLOTS = {"effects": plot_effects, "tasks": plot_tasks, "glue": plot_glue, "mlm_curve": plot_mlm_curve, "throughput": plot_throughput,
         "tokens": plot_tokens}
