"""Finished runs -> comparison tables with calibrated confidence intervals, paired tests, power and plots.

    python -m robablate.report outputs/multirun/... [--out DIR] [--baseline masking=static]

or, from a notebook:

    from robablate.report import load_report, plot_tasks
    rep = load_report(["outputs/multirun/..."]); rep.summary; plot_tasks(rep, "masking")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from robablate.errors import ConfigError
from robablate.io import atomic_write_text
from robablate.registry import zero_shot
from robablate.report import render
from robablate.report.blocked import blocked_table
from robablate.report.collect import (AXES, PRETRAIN_METRICS, TIDY_COLUMNS, collapsed_runs, collect, history_frame, load_runs,
                                      overfit_runs, primary_of, tidy_frame)
from robablate.report.plots import (PLOTS, plot_effects, plot_glue, plot_mlm_curve, plot_tasks,
                                    plot_throughput, plot_tokens)
from robablate.report.design import (batch_sizes, compute_table, design_frame, off_axis_table, resolve_baselines,
                                     token_flags, varied_axes, varying_determined)
from robablate.report.tables import (DEFAULT_METRICS, DEFAULT_PRIMARY, gain_table, paired_table, summary_table,
                                     variance_table)

__all__ = ["Report", "load_report", "write_report", "collect", "plot_effects", "plot_tasks", "plot_glue",
           "plot_mlm_curve", "plot_throughput", "plot_tokens", "AXES", "PRETRAIN_METRICS"]


@dataclass
class Report:
    tidy: pd.DataFrame            # run x task x fine-tuning seed x metric (collect()), pretrained runs
    summary: pd.DataFrame         # per axis, arm, task, metric: n, mean, std, median, 95% t CI (+ control rows)
    paired: pd.DataFrame          # per axis, arm, task, metric: difference to the baseline, CI, test, power, flags
    variance: pd.DataFrame        # pretraining-seed vs fine-tuning-seed variance per arm and task
    problems: list[dict]          # corrupt / foreign / failed / unfinished files, never dropped silently
    axes: list[str]               # the varied axes
    baselines: dict[str, str] = field(default_factory=dict)
    off_axis: pd.DataFrame = field(default_factory=pd.DataFrame)  # differing non-axis config keys
    history: pd.DataFrame = field(default_factory=pd.DataFrame)   # pretrain.history of every run
    conventions: dict[str, str] = field(default_factory=dict)     # GLUE convention name -> description
    determined: dict[str, list[str]] = field(default_factory=dict)  # axis -> keys it determines that vary
    design: pd.DataFrame = field(default_factory=pd.DataFrame)    # per run: axes, seed, config keys, lr, tokens
    compute: pd.DataFrame = field(default_factory=pd.DataFrame)   # per axis and arm: tokens seen, LR and its source
    token_flags: pd.DataFrame = field(default_factory=pd.DataFrame)  # arm pairs whose tokens differ by > 2%
    control: pd.DataFrame = field(default_factory=pd.DataFrame)   # tidy rows of random-init control runs
    gain: pd.DataFrame = field(default_factory=pd.DataFrame)      # arm - control per axis, task and metric
    primary: tuple[str, ...] = DEFAULT_PRIMARY                    # the Holm family's read-outs (report.primary)
    collapsed: dict[str, str] = field(default_factory=dict)       # run_dir -> why it counts as collapsed
    overfit: dict[str, str] = field(default_factory=dict)         # run_dir -> how it overfit (verdicts kept)
    blocked: pd.DataFrame = field(default_factory=pd.DataFrame)   # confounded comparisons read within the other axis


def load_report(paths: Iterable[str | Path] | str | Path, baseline: dict[str, str] | None = None,
                metrics: Iterable[str] | None = None, primary: Iterable[str] | None = None) -> Report:
    """Collect and analyse the runs under `paths`. `baseline` maps an axis to its baseline arm,
    `metrics` the tidy metrics to summarise (default: task score + pretraining metrics + BLiMP); an
    unknown key, value or metric raises ConfigError listing the choices. Works with zero complete
    runs (empty tables, problems listed). Runs with results["init"] == "random" are the
    random-init control: they get their own rows and the `gain` table, not an arm of an axis.
    `primary`: the read-outs Holm adjusts over (default: the runs' config `report.primary`, else
    DEFAULT_PRIMARY); every other row is exploratory. Collapsed runs (robablate/collapse.py) are marked
    in every table and no verdict is drawn from them."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    runs, problems = load_runs(paths)
    control_runs = [r for r in runs if r.is_control]
    runs = [r for r in runs if not r.is_control]
    tidy, bad = tidy_frame(runs)
    control, bad_control = tidy_frame(control_runs)
    problems += bad + bad_control
    bad_dirs = {str(Path(p["path"]).parent) for p in bad}
    runs = [r for r in runs if r.run_dir not in bad_dirs]
    if metrics is None:
        metrics = list(DEFAULT_METRICS)
    else:
        metrics = list(metrics)
        known = set(tidy["metric"]) | set(control["metric"])
        unknown = [m for m in metrics if m not in known]
        if unknown and not tidy.empty:
            raise ConfigError(f"--metric {' '.join(unknown)}: not in these runs; available metrics: "
                              f"{', '.join(sorted(known))}")
    axes = varied_axes(tidy)
    sizes = batch_sizes(runs)
    baselines = resolve_baselines(tidy, axes, baseline, sizes)
    primary = tuple(primary) if primary is not None else primary_of(runs, DEFAULT_PRIMARY)
    names = {*PRETRAIN_METRICS, *(r.name for r in zero_shot()), "glue", *tidy["task"]}
    if unknown := [p for p in primary if p not in names] if not tidy.empty else []:
        raise ConfigError(f"report.primary: {', '.join(unknown)} is not a read-out of these runs; expected "
                          f"pretraining metrics ({', '.join(PRETRAIN_METRICS)}), "
                          f"{', '.join(r.name for r in zero_shot())}, glue or a task name")
    collapsed, overfit = collapsed_runs(runs), overfit_runs(runs)
    design = design_frame(runs, axes, collapsed, overfit)
    conventions = {}
    for r in runs + control_runs:
        for conv, sc in ((r.data.get("glue") or {}).get("score") or {}).items():
            if isinstance(sc, dict) and sc.get("convention"):
                conventions.setdefault(conv, str(sc["convention"]))
    paired = paired_table(tidy, axes, baselines, metrics, sizes, design=design, primary=primary)
    return Report(
        tidy=tidy, summary=summary_table(tidy, axes, baselines, metrics, sizes, control=control, collapsed=collapsed),
        paired=paired, primary=primary, collapsed=collapsed, overfit=overfit, blocked=blocked_table(tidy, paired, primary),
        variance=variance_table(tidy, axes, metrics),
        problems=problems, axes=axes, baselines=baselines, off_axis=off_axis_table(runs, axes),
        history=history_frame(runs), conventions=conventions,
        determined={a: varying_determined(design, a) for a in axes}, design=design,
        compute=compute_table(design, axes, baselines, sizes), token_flags=token_flags(design, axes, sizes),
        control=control, gain=gain_table(tidy, control, axes, baselines, metrics, sizes, primary))


def write_report(report: Report, out_dir: str | Path) -> list[Path]:
    """Write report.md, tables.tex, the CSVs and every plot (PNG + PDF) to out_dir; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    report.tidy[TIDY_COLUMNS].to_csv(out / "tidy.csv", index=False)  # the read-out columns are the registry's
    written.append(out / "tidy.csv")
    for name in ("summary", "paired", "variance", "compute"):
        getattr(report, name).to_csv(out / f"{name}.csv", index=False)
        written.append(out / f"{name}.csv")
    for name in ("gain", "control", "blocked"):
        if not (frame := getattr(report, name)).empty:
            (frame[TIDY_COLUMNS] if name == "control" else frame).to_csv(out / f"{name}.csv", index=False)
            written.append(out / f"{name}.csv")
    if not report.off_axis.empty:
        report.off_axis.to_csv(out / "off_axis.csv", index=False)
        written.append(out / "off_axis.csv")
    plots: dict[str, list[str]] = {}
    for axis in report.axes or [None]:
        key = axis or render.NO_AXIS
        for kind, fn in PLOTS.items():
            fig = fn(report, axis or render.NO_AXIS)
            if fig is None:
                continue
            stem = f"{kind}_{axis or 'all'}"
            for ext in ("png", "pdf"):
                # no creation date in the PDF: re-running the report leaves unchanged plots unchanged
                fig.savefig(out / f"{stem}.{ext}", dpi=150, metadata={"CreationDate": None} if ext == "pdf" else None)
                written.append(out / f"{stem}.{ext}")
            plots.setdefault(key, []).append(f"{stem}.png")
    atomic_write_text(out / "report.md", render.markdown(report, plots))
    atomic_write_text(out / "tables.tex", render.latex(report))
    return written + [out / "report.md", out / "tables.tex"]
