"""Effects across budgets: a sweep whose runs differ in `train.tokens` (and optionally `model.name`)
is read rung by rung, and each comparison's primary read-outs are followed across the rungs.

The budget is a sweep dimension, not an arm: within a rung the usual report is built (load_report:
pairing, flags, Holm over the rung's primary read-outs, collapsed arms, confounds), so a rung's verdict
is exactly what a one-budget sweep would say. Across rungs this module adds, per comparison (axis, arm,
baseline) and primary read-out: a table (rung, tokens, steps per arm, diff [95% CI], verdict, collapsed
arms) and the trend of the effect in log2(tokens) from robablate.trend (its docstring states the method
and its coverage; tests/test_trend.py simulates it). A rung with a collapsed arm, identical training or
a confound or no interval shows in the table but is left out of the trend, as no verdict is drawn from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
from scipy import stats

from robablate.report.collect import RESULTS_NAME, Run, load_runs
from robablate.trend import LEVEL, fmt_tokens, slope_log2

COMPARISON = ["axis", "arm", "baseline", "task", "metric"]
RUNG_COLUMNS = [*COMPARISON, "model", "rung", "tokens", "steps_arm", "steps_base", "n_pairs", "diff_mean",
                "diff_ci_low", "diff_ci_high", "df", "se", "mde", "p_holm", "verdict", "collapsed",
                "confounded_by", "tokens_arm", "tokens_base", "in_trend", "left_out"]
TREND_COLUMNS = [*COMPARISON, "model", "n_rungs", "rungs_used", "slope", "slope_low", "slope_high", "slope_se",
                 "slope_df", "slope_mde", "reading", "left_out"]
METHOD = ("equal-weight least-squares slope in log2(tokens), its standard error from each rung's own "
          "standard error, Student t with Welch-Satterthwaite df (robablate/trend.py)")


@dataclass
class Rung:
    tokens: float          # the rung's budget (config train.tokens)
    model: str             # config model.name
    report: object         # robablate.report.Report of this rung's runs
    steps: dict[str, float] = field(default_factory=dict)  # run_dir -> optimizer steps taken


@dataclass
class BudgetReport:
    rungs: list[Rung]
    table: pd.DataFrame    # RUNG_COLUMNS: one row per comparison, primary read-out and rung
    trends: pd.DataFrame   # TREND_COLUMNS: one row per comparison, primary read-out and model
    problems: list[dict] = field(default_factory=list)

    @property
    def multi_rung(self) -> bool:
        return len({(r.tokens, r.model) for r in self.rungs}) > 1


def rung_key(run: Run) -> tuple[float, str]:
    """(budget, model) of a run: config train.tokens (else the tokens it saw) and model.name."""
    cfg = run.config
    tokens = (cfg.get("train") or {}).get("tokens")
    if tokens is None:
        tokens = (run.data.get("pretrain") or {}).get("tokens_seen") or math.nan
    return float(tokens), str((cfg.get("model") or {}).get("name") or "")


def split_rungs(paths: Iterable[str | Path]) -> tuple[dict[tuple[float, str], list[Run]], list[dict]]:
    """Complete runs under `paths` grouped by rung_key, smallest budget first; and the problems."""
    runs, problems = load_runs(paths)
    groups: dict[tuple[float, str], list[Run]] = {}
    for r in runs:
        groups.setdefault(rung_key(r), []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))), problems


def rung_se(low: float, high: float, df: float, level: float = LEVEL) -> float:
    """A rung's standard error back from its Student-t interval (the report's diff_ci_low/high, df)."""
    if not (df >= 1 and math.isfinite(low) and math.isfinite(high)):
        return math.nan
    return (high - low) / (2 * float(stats.t.ppf(0.5 + level / 2, df)))


def _steps(rung: Rung, axis: str, arm: str) -> float:
    d = rung.report.design
    vals = [rung.steps.get(rd, math.nan) for rd in d.loc[d[axis] == arm, "run_dir"]] if axis in d else []
    vals = [v for v in vals if not math.isnan(v)]
    return float(pd.Series(vals).median()) if vals else math.nan


def rung_rows(rung: Rung, index: int) -> list[dict]:
    """The rung's primary comparisons, as RUNG_COLUMNS rows."""
    p = rung.report.paired
    if p.empty:
        return []
    rows = []
    for _, r in p[p["family"] == "primary"].iterrows():
        se = rung_se(float(r["diff_ci_low"]), float(r["diff_ci_high"]), float(r["df"]))
        out = _left_out(r, se)
        rows.append({**{c: r[c] for c in COMPARISON}, "model": rung.model, "rung": index, "tokens": rung.tokens,
                     "steps_arm": _steps(rung, r["axis"], r["arm"]),
                     "steps_base": _steps(rung, r["axis"], r["baseline"]),
                     **{c: r[c] for c in ("n_pairs", "diff_mean", "diff_ci_low", "diff_ci_high", "df", "mde",
                                          "p_holm", "verdict", "collapsed", "confounded_by", "tokens_arm",
                                          "tokens_base")},
                     "se": se, "in_trend": not out, "left_out": out})
    return rows


def _left_out(row: pd.Series, se: float) -> str:
    """Why a rung's row gives the trend no point ('' when it does): the rung itself draws no verdict."""
    if row["collapsed"]:
        return f"collapsed arm: {row['collapsed']}"
    if bool(row.get("identical_training", False)):
        return "identical training"
    if row["confounded_by"]:
        return f"confounded by {row['confounded_by']}"
    return "" if math.isfinite(se) and se > 0 else "no interval"


def trend_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One trend per comparison, read-out and model, over the rungs marked in_trend."""
    rows = []
    for key, g in table.groupby([*COMPARISON, "model"], sort=False):
        g = g.sort_values("tokens")
        use = g[g["in_trend"]]
        left = [f"{fmt_tokens(t)} ({why})" for t, why in zip(g.loc[~g["in_trend"], "tokens"],
                                                             g.loc[~g["in_trend"], "left_out"])]
        row = dict(zip([*COMPARISON, "model"], key), n_rungs=len(g), rungs_used=len(use), left_out="; ".join(left))
        if use["tokens"].nunique() >= 2:
            t = slope_log2(use["tokens"], use["diff_mean"], use["se"], use["df"])
            row.update(slope=t.slope, slope_low=t.low, slope_high=t.high, slope_se=t.se, slope_df=t.df,
                       slope_mde=t.mde, reading=t.reading)
        else:
            row.update(slope=math.nan, slope_low=math.nan, slope_high=math.nan, slope_se=math.nan,
                       slope_df=math.nan, slope_mde=math.nan,
                       reading=f"no trend: {len(use)} rung(s) with a verdict, a trend needs 2")
        rows.append(row)
    return pd.DataFrame(rows, columns=TREND_COLUMNS)


def load_budget_report(paths: Iterable[str | Path] | str | Path, baseline: dict[str, str] | None = None,
                       primary: Iterable[str] | None = None) -> BudgetReport:
    """Split the runs under `paths` into rungs and build each rung's report, table and trends. Works
    with one rung too (then `multi_rung` is False and the trends say a trend needs 2 rungs)."""
    from robablate.report import load_report  # the package imports this module's hook lazily too

    if isinstance(paths, (str, Path)):
        paths = [paths]
    groups, problems = split_rungs(paths)
    rungs, rows = [], []
    for i, ((tokens, model), runs) in enumerate(groups.items(), start=1):
        files = [Path(r.run_dir) / RESULTS_NAME for r in runs]
        rep = load_report(files, baseline, primary=primary)
        rung = Rung(tokens, model, rep, {r.run_dir: float((r.data.get("pretrain") or {}).get("steps") or math.nan)
                                         for r in runs})
        rungs.append(rung)
        rows += rung_rows(rung, i)
    table = pd.DataFrame(rows, columns=RUNG_COLUMNS)
    return BudgetReport(rungs, table, trend_rows(table), problems)


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _steps_cell(a: float, b: float) -> str:
    return " / ".join("n/a" if math.isnan(v) else f"{v:.0f}" for v in (a, b))


def comparison_markdown(table: pd.DataFrame, trend: pd.Series) -> str:
    """One comparison and read-out: the rung table and the trend line (markdown)."""
    head = "| rung | tokens | steps arm / base | diff [95% CI] | verdict | collapsed arms |\n|---|---|---|---|---|---|"
    lines = [head]
    for _, r in table.sort_values("tokens").iterrows():
        ci = f"{_num(r['diff_mean'])} [{_num(r['diff_ci_low'])}, {_num(r['diff_ci_high'])}]"
        verdict = r["verdict"] + (f" (confounded by {r['confounded_by']})" if r["confounded_by"] else "")
        lines.append(f"| {r['rung']} | {fmt_tokens(r['tokens'])} | {_steps_cell(r['steps_arm'], r['steps_base'])} "
                     f"| {ci} | {verdict} | {r['collapsed'] or '-'} |")
    if math.isnan(trend["slope"]):
        tline = f"Trend: {trend['reading']}."
    else:
        tline = (f"Trend per doubling of tokens: {trend['slope']:+.3g} [{trend['slope_low']:.3g}, "
                 f"{trend['slope_high']:.3g}] over {trend['rungs_used']} rungs: **{trend['reading']}**.")
    if trend["left_out"]:
        tline += f" Left out of the trend: {trend['left_out']}."
    return "\n".join(lines) + "\n\n" + tline


def markdown(br: BudgetReport, plots: dict[tuple[str, str, str], str] | None = None) -> str:
    """The 'Effects across budgets' section: per comparison its plot, then per read-out table + trend."""
    plots = plots or {}
    out = ["## Effects across budgets", "",
           f"Rungs: {', '.join(f'{fmt_tokens(r.tokens)}' + (f' ({r.model})' if r.model else '') for r in br.rungs)}."
           f" Each rung is its own report (pairing, Holm over its primary read-outs, collapsed arms); the "
           f"trend is the {METHOD}. Rungs with a collapsed arm are shown, not used. The sections after "
           f"this one pool all rungs: read a rung's verdict here.", ""]
    for (axis, arm, base), g in br.table.groupby(["axis", "arm", "baseline"], sort=False):
        out += [f"### {axis}: {arm} - {base}", ""]
        if (axis, arm, base) in plots:
            out += [f"![{axis} {arm} - {base} across budgets]({plots[(axis, arm, base)]})", ""]
        for (task, metric, model), gm in g.groupby(["task", "metric", "model"], sort=False):
            tr = br.trends[(br.trends["axis"] == axis) & (br.trends["arm"] == arm) & (br.trends["baseline"] == base)
                           & (br.trends["task"] == task) & (br.trends["metric"] == metric)
                           & (br.trends["model"] == model)].iloc[0]
            out += [f"**{metric}** ({task}{', ' + model if model else ''})", "", comparison_markdown(gm, tr), ""]
    return "\n".join(out)


def write_budget(br: BudgetReport, out_dir: str | Path) -> list[Path]:
    """budget.csv, budget_trends.csv, one effect-vs-budget plot per comparison (PNG + PDF), budget.md."""
    from robablate.io import atomic_write_text
    from robablate.report.budget_plots import plot_budget

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "budget.csv", out / "budget_trends.csv"]
    br.table.to_csv(written[0], index=False)
    br.trends.to_csv(written[1], index=False)
    plots = {}
    for key in br.table[["axis", "arm", "baseline"]].drop_duplicates().itertuples(index=False, name=None):
        fig = plot_budget(br, *key)
        stem = f"budget_{key[0]}_{key[1]}_vs_{key[2]}".replace("/", "-")
        for ext in ("png", "pdf"):
            fig.savefig(out / f"{stem}.{ext}", dpi=150, metadata={"CreationDate": None} if ext == "pdf" else None)
            written.append(out / f"{stem}.{ext}")
        plots[key] = f"{stem}.png"
    atomic_write_text(out / "budget.md", markdown(br, plots))
    return written + [out / "budget.md"]


def lead_report(paths: Iterable[str | Path], out_dir: str | Path, baseline: dict[str, str] | None = None,
                primary: Iterable[str] | None = None) -> BudgetReport | None:
    """The report's hook: when the runs under `paths` span more than one rung, write the budget files
    to out_dir and put the 'Effects across budgets' section first in out_dir/report.md."""
    from robablate.io import atomic_write_text

    br = load_budget_report(paths, baseline, primary)
    if not br.multi_rung:
        return None
    write_budget(br, out_dir)
    md = Path(out_dir) / "report.md"
    body = md.read_text(encoding="utf-8") if md.exists() else ""
    atomic_write_text(md, (Path(out_dir) / "budget.md").read_text(encoding="utf-8") + "\n\n" + body)
    return br


def budget_terminal(br: BudgetReport) -> str:
    """The trends, one line each, for the terminal (the tables are in budget.md)."""
    lines = [f"Effects across budgets ({len(br.rungs)} rungs; tables and plots in budget.md):"]
    for _, t in br.trends.iterrows():
        slope = "" if math.isnan(t["slope"]) else (f" {t['slope']:+.3g}/doubling "
                                                     f"[{t['slope_low']:.3g}, {t['slope_high']:.3g}]:")
        lines.append(f"  {t['axis']}: {t['arm']} - {t['baseline']}, {t['metric']}"
                     f"{' (' + t['model'] + ')' if t['model'] else ''}:{slope} {t['reading']}")
    return "\n".join(lines)
