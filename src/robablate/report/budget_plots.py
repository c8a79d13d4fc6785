"""The effect-vs-budget plot (robablate.report.budget): for one comparison, one panel per primary
read-out; the effect (arm - baseline) with its 95% interval at each rung on a log-tokens axis, zero
marked, the rung's MDE shaded around zero (an effect inside the band is below what that rung can
detect), collapsed or identical-training points hollow (no verdict is drawn from them), points with an
overfit arm square (robablate/collapse.py: they keep their verdict), and the
trend's slope in the title. A matplotlib Figure, no pyplot (notebook-safe, any backend).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from robablate.trend import fmt_tokens

BAND = 1.12  # half-width of a rung's MDE band, as a factor on the tokens axis


def plot_budget(br, axis: str, arm: str, baseline: str) -> Figure | None:
    """Effect of `arm` - `baseline` on `axis` across the rungs of BudgetReport `br`."""
    t = br.table[(br.table["axis"] == axis) & (br.table["arm"] == arm) & (br.table["baseline"] == baseline)]
    if t.empty:
        return None
    panels = list(t[["task", "metric"]].drop_duplicates().itertuples(index=False, name=None))
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    overfit_any = False
    for i, (task, metric) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        g = t[(t["task"] == task) & (t["metric"] == metric)]
        models = list(dict.fromkeys(g["model"]))
        for j, (model, gm) in enumerate(g.groupby("model", sort=False)):
            gm = gm.sort_values("tokens")
            x = gm["tokens"].to_numpy(float) * (1.03 ** (j - (len(models) - 1) / 2))  # models side by side
            y = gm["diff_mean"].to_numpy(float)
            err = np.clip(np.nan_to_num(np.vstack([y - gm["diff_ci_low"].to_numpy(float),
                                                   gm["diff_ci_high"].to_numpy(float) - y])), 0, None)
            color = f"C{j}"
            for xi, mde in zip(x, gm["mde"].to_numpy(float)):
                if math.isfinite(mde):
                    ax.fill_between([xi / BAND, xi * BAND], -mde, mde, color=color, alpha=0.15, linewidth=0)
            ax.errorbar(x, y, yerr=err, color=color, linestyle=":", capsize=3, marker="none",
                        label=model or None)
            used = gm["in_trend"].to_numpy(bool)
            over = gm["verdict"].astype(str).str.contains("runs overfit").to_numpy(bool)
            overfit_any |= bool((used & over).any())
            ax.plot(x[used & ~over], y[used & ~over], "o", color=color)
            ax.plot(x[used & over], y[used & over], "s", color=color)
            ax.plot(x[~used], y[~used], "o", color=color, markerfacecolor="none")
            tr = br.trends[(br.trends["axis"] == axis) & (br.trends["arm"] == arm) & (br.trends["task"] == task)
                           & (br.trends["metric"] == metric) & (br.trends["model"] == model)]
            if not tr.empty and math.isfinite(tr["slope"].iloc[0]):
                r = tr.iloc[0]
                ax.set_title(f"{metric}\nslope/doubling {r['slope']:+.2g} [{r['slope_low']:.2g}, "
                             f"{r['slope_high']:.2g}]", fontsize="small")
            else:
                ax.set_title(metric, fontsize="small")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_tokens(v)))
        ax.set_xticks(sorted(set(g["tokens"].astype(float))))
        ax.set_xlabel("tokens (log scale)")
        ax.set_ylabel(f"{arm} - {baseline} (95% CI)")
        ax.grid(alpha=0.3)
        if len(models) > 1:
            ax.legend(fontsize="small", title="model")
    fig.suptitle(f"{axis}: {arm} - {baseline} across budgets (shaded: each rung's MDE; hollow: collapsed, no verdict"
                 + ("; square: an arm overfit, verdict kept" if overfit_any else "") + ")", fontsize="small")
    return fig
