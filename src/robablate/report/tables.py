"""From the tidy frame to the report's tables: per-arm summaries, paired differences against a
baseline arm, gains over the random-init control, variance components. Which runs compare (arms,
baselines, pairing, compute and config flags) is decided in report/design.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from robablate.report import stats
from robablate.registry import headline_readout, zero_shot
from robablate.report.collect import AXES, PRETRAIN_TASK, is_glue_task
from robablate.report.design import design_from_tidy, comparison_context, ordered_arms, pair_ids, why_unpaired

CONTROL_ARM = "random init (control)"  # the arm name of random-init control runs in every table
NO_AXIS = "(none)"  # the axis column when every run has the same axis values (one pooled arm)
# Which tidy metrics the summary covers unless --metric says otherwise.
DEFAULT_METRICS = ("score", "val_mlm_loss", "val_mlm_ppl", "val_mlm_acc", "val_nsp_acc", "tokens_per_s",
                   *(r.metric for r in zero_shot()))


def task_order(frame: pd.DataFrame) -> list[str]:
    """The tasks of a tidy frame in the registry's order (its `rank` column: pretrain, each zero-shot
    read-out's overall then groups, fine-tuning tasks, GLUE scores), by name within one rank."""
    ranks = frame.groupby("task", sort=False)["rank"].min()
    return sorted(ranks.index, key=lambda t: (ranks[t], t))


def _select(tidy: pd.DataFrame, metrics) -> pd.DataFrame:
    return tidy[tidy["metric"].isin(list(metrics))]


def run_level(tidy: pd.DataFrame) -> pd.DataFrame:
    """One value per run x task x metric: the median over fine-tuning seeds (RoBERTa §3.1)."""
    keys = ["run_dir", *AXES, "seed", "task", "metric"]
    return tidy.groupby(keys, sort=False, dropna=False)["value"].median().reset_index()


def _arm_rows(frame: pd.DataFrame, axis: str | None, arm: str) -> pd.DataFrame:
    return frame if axis is None else frame[frame[axis] == arm]


def summary_table(tidy: pd.DataFrame, axes: list[str], baselines: dict[str, str],
                  metrics=DEFAULT_METRICS, sizes=None, control: pd.DataFrame | None = None,
                  collapsed: dict[str, str] | None = None) -> pd.DataFrame:
    """Per axis, arm, task and metric: n, mean, std, median, the 95% CI of the mean (Student t over
    the run means, `ci_method` says so) and `run_median_mean` = mean over runs of each run's median
    over fine-tuning seeds. Random-init control runs (`control`, a tidy frame) add one row per
    axis, task and metric with arm CONTROL_ARM. `collapsed_runs` counts the arm's runs in `collapsed`
    (run_dir -> why: they never left the one-token solution, robablate/collapse.py)."""
    collapsed = collapsed or {}
    data = _select(tidy, metrics)
    ctrl = _select(control, metrics) if control is not None and not control.empty else None
    rows = []
    for axis in axes or [None]:
        arms = ordered_arms(axis, tidy, baselines, sizes)
        for task in task_order(pd.concat([data, ctrl]) if ctrl is not None else data):
            present = set(data.loc[data["task"] == task, "metric"])
            if ctrl is not None:
                present |= set(ctrl.loc[ctrl["task"] == task, "metric"])
            for metric in [m for m in metrics if m in present]:
                tm = data[(data["task"] == task) & (data["metric"] == metric)]
                cells = [(arm, _arm_rows(tm, axis, arm)) for arm in arms]
                if ctrl is not None:
                    cells.append((CONTROL_ARM, ctrl[(ctrl["task"] == task) & (ctrl["metric"] == metric)]))
                for arm, sub in cells:
                    if sub.empty:
                        continue  # a metric this arm cannot have (val_nsp_acc without NSP)
                    n_coll = sum(d in collapsed for d in sub["run_dir"].unique())
                    rows.append({"axis": axis or NO_AXIS, "arm": arm, "baseline": arm == baselines.get(axis),
                                 "task": task, "metric": metric, **_describe(sub), "collapsed_runs": n_coll})
    cols = ["axis", "arm", "baseline", "task", "metric", "n_runs", "n_values", "mean", "std", "median",
            "ci_low", "ci_high", "ci_method", "run_median_mean", "collapsed_runs"]
    return pd.DataFrame(rows, columns=cols)


def _describe(sub: pd.DataFrame) -> dict[str, Any]:
    groups = [g["value"].to_numpy() for _, g in sub.groupby("run_dir", sort=False)]
    v = sub["value"]
    one_value = v.nunique() == 1  # std 0, not summation round-off
    lo, hi, method = stats.run_means_ci(groups)
    return {"n_runs": len(groups), "n_values": len(v), "mean": v.mean() if len(v) else np.nan,
            "std": (0.0 if one_value else v.std(ddof=1)) if len(v) > 1 else np.nan,
            "median": v.median() if len(v) else np.nan, "ci_low": lo, "ci_high": hi, "ci_method": method,
            "run_median_mean": float(np.mean([np.median(g) for g in groups])) if groups else np.nan}


# ------------------------------------------------------------------------------------------- design


# ------------------------------------------------------------------------------------------ compare


# The primary read-outs of a comparison, fixed by the design (config key `report.primary`, conf/config.yaml)
# before the results exist: Holm runs over exactly these x the comparisons of an axis, whatever the
# report prints. Names: a pretraining metric (val_mlm_loss, ...), `blimp` (BLiMP overall), `glue` (every
# GLUE score row) or a fine-tuning task (its score). Throughput and perplexity (a monotone transform of
# the loss) are never in the family.
DEFAULT_PRIMARY = ("val_mlm_loss", "blimp")
NEVER_PRIMARY = {"tokens_per_s", "val_mlm_ppl"}


def is_primary(task: str, metric: str, primary=DEFAULT_PRIMARY) -> bool:
    names = set(primary) - NEVER_PRIMARY
    if task == PRETRAIN_TASK:
        return metric in names
    if (readout := headline_readout(task, metric)) is not None:  # a zero-shot read-out's overall row
        return readout.name in names
    if is_glue_task(task):
        return metric == "score" and "glue" in names
    return metric == "score" and task in names


def primary_metrics(primary=DEFAULT_PRIMARY) -> set[str]:
    """The tidy metrics a primary family needs (computed whatever --metric prints)."""
    names = set(primary) - NEVER_PRIMARY
    pre = names & {"val_mlm_loss", "val_mlm_acc", "val_nsp_acc"}
    shot = {r.name: r.metric for r in zero_shot() if r.name in names}
    return pre | set(shot.values()) | ({"score"} if names - pre - set(shot) else set())


def with_holm(axis_rows: list[dict[str, Any]], primary=DEFAULT_PRIMARY) -> list[dict[str, Any]]:
    """The rows of one axis with p_holm: p adjusted (Holm 1979) over the primary rows only (`family`:
    primary); every other row is exploratory, with its unadjusted p and no p_holm."""
    prim = [r for r in axis_rows if is_primary(r["task"], r["metric"], primary)]
    for r, p in zip(prim, stats.holm([r["p_value"] for r in prim])):
        r["p_holm"] = p
    for r in axis_rows:
        r["family"] = "primary" if is_primary(r["task"], r["metric"], primary) else "exploratory"
        r.setdefault("p_holm", np.nan)
    return axis_rows


def draw_verdict(row: dict[str, Any]) -> str:
    """A row's verdict once the design is known: no verdict between identical trainings or on a collapsed
    arm, a confound named in it, and overfit runs (they learned, then overfit: robablate/collapse.py)
    named after it."""
    if row.get("identical_training"):
        return "identical training (equal pretrain.fingerprint): no verdict"
    if row.get("collapsed"):
        return f"collapsed arm ({row['collapsed']}): no verdict"
    verdict = row["verdict"]
    if row.get("confounded_by"):
        verdict = f"{verdict}; confounded by {row['confounded_by']}"
    if row.get("overfit"):
        verdict = f"{verdict}; {row['overfit']} (val loss above the unigram loss after leaving it)"
    return verdict


def paired_table(tidy: pd.DataFrame, axes: list[str], baselines: dict[str, str],
                 metrics=DEFAULT_METRICS, sizes=None, design: pd.DataFrame | None = None,
                 primary=DEFAULT_PRIMARY) -> pd.DataFrame:
    """Each non-baseline arm minus the baseline arm, per task and metric.

    Runs pair when they share the pretraining seed and every design key other than the axis and the
    keys it determines (`pairing_keys`); each run enters with its median over fine-tuning seeds.
    With >= 2 pairs: paired t (CI and p); else Welch's t over the runs (over fine-tuning seeds when
    each arm has one run, which then tests fine-tuning noise only), and `pairing` says why nothing
    paired. Each row carries its power (MDE at 80%, runs needed for the observed difference) and
    what else differs between the arms (tokens, LR, other keys: `flags`, `also_differs`).
    p_holm adjusts p over the primary rows of one axis (`primary`, the design's family: the same
    whatever `metrics` prints); a collapsed arm, identical trainings or a confound set the verdict.
    """
    shown = list(metrics)
    data = _select(tidy, set(shown) | primary_metrics(primary))
    runs = run_level(data)
    if design is None:
        design = design_from_tidy(tidy)
    rows = []
    for axis in axes:
        ids = pair_ids(design, axis)
        base = baselines[axis]
        arms = ordered_arms(axis, tidy, baselines, sizes)[1:]
        context = {arm: comparison_context(design, axis, arm, base) for arm in arms}
        unpaired = {arm: why_unpaired(design, axis, arm, base) for arm in arms}
        axis_rows = []
        for task in task_order(data):
            present = set(runs.loc[runs["task"] == task, "metric"])
            for metric in [m for m in dict.fromkeys([*shown, *sorted(primary_metrics(primary))]) if m in present]:
                if metric not in shown and not is_primary(task, metric, primary):
                    continue
                rl = runs[(runs["task"] == task) & (runs["metric"] == metric)]
                raw = data[(data["task"] == task) & (data["metric"] == metric)]
                for arm in arms:
                    if not ((rl[axis] == arm).any() and (rl[axis] == base).any()):
                        continue  # a metric one arm cannot have (val_nsp_acc without NSP): no row
                    axis_rows.append({"axis": axis, "arm": arm, "baseline": base, "task": task, "metric": metric,
                                      **compare(rl, raw, axis, arm, base, ids, unpaired[arm]), **context[arm]})
        for r in with_holm(axis_rows, primary):
            r["verdict"] = draw_verdict(r)
            if r["metric"] in shown:
                rows.append(r)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


PAIRED_COLUMNS = ["axis", "arm", "baseline", "task", "metric", "n_arm", "n_base", "n_pairs", "pairing",
                  "method", "diff_mean", "diff_ci_low", "diff_ci_high", "df", "p_value", "family", "p_holm", "sd",
                  "mde", "runs_needed", "verdict", "collapsed", "identical_training", "confounded_by",
                  "tokens_arm", "tokens_base", "tokens_rel", "lr_arm", "lr_base", "lr_tuned", "lr_note",
                  "also_differs", "flags"]


def compare(rl: pd.DataFrame, raw: pd.DataFrame, col: str, arm: str, base: str, ids: pd.Series | None,
            why: str = "fewer than 2 pairs") -> dict[str, Any]:
    """arm - base on run-level values `rl` (one per run), paired by `ids` (run_dir -> identity)
    when >= 2 pairs form, else Welch; `raw` holds every fine-tuning seed for the 1-run fallback."""
    ra, rb = rl[rl[col] == arm], rl[rl[col] == base]
    pairs = pd.DataFrame()
    if ids is not None:
        a = ra.groupby(ra["run_dir"].map(ids))["value"].mean()
        b = rb.groupby(rb["run_dir"].map(ids))["value"].mean()
        pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    out = {"n_arm": ra["run_dir"].nunique(), "n_base": rb["run_dir"].nunique(), "n_pairs": len(pairs)}
    if len(pairs) >= 2:
        d = (pairs["a"] - pairs["b"]).to_numpy()
        if stats.no_spread(d):  # identical differences: no interval width, not round-off noise
            d = np.full(d.size, d.mean())
        lo, hi = stats.t_ci(d)
        sd = float(d.std(ddof=1))
        mde = stats.mde_paired(sd, len(d))
        out.update(pairing=f"paired by seed ({len(d)} pairs)", method="paired t", diff_mean=float(d.mean()),
                   diff_ci_low=float(lo), diff_ci_high=float(hi), df=len(d) - 1, p_value=stats.t_test_p(d),
                   sd=sd, mde=mde, runs_needed=stats.runs_to_detect(d.mean(), sd, paired=True))
    else:
        xa, xb = ra["value"].to_numpy(), rb["value"].to_numpy()
        method, pairing = "Welch t", f"unpaired: {why}"
        if len(xa) < 2 or len(xb) < 2:
            xa, xb = raw.loc[raw[col] == arm, "value"].to_numpy(), raw.loc[raw[col] == base, "value"].to_numpy()
            method = "Welch t over ft seeds (1 run per arm: fine-tuning noise only)"
            if len(xa) < 2 or len(xb) < 2:
                method = "none (n<2)"
        if len(xa) and len(xb) and stats.no_spread(xa) and stats.no_spread(xb):
            xa, xb = np.full(xa.size, xa.mean()), np.full(xb.size, xb.mean())
        diff = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else np.nan
        if len(xa) and len(xb) and stats.no_spread([diff]) and abs(diff) <= 1e-12:
            diff = 0.0
        lo, hi, df = stats.welch_ci(xa, xb)
        sd = stats.pooled_sd(xa, xb)
        mde = stats.mde_welch(float(xa.std(ddof=1)), float(xb.std(ddof=1)), len(xa), len(xb)) \
            if len(xa) >= 2 and len(xb) >= 2 else np.nan
        out.update(pairing=pairing, method=method, diff_mean=diff, diff_ci_low=lo, diff_ci_high=hi, df=df,
                   p_value=stats.welch_test(xa, xb), sd=sd, mde=mde,
                   runs_needed=stats.runs_to_detect(diff, sd, paired=False))
    out["verdict"] = verdict(out["diff_ci_low"], out["diff_ci_high"], out["mde"], out["sd"])
    return out


def verdict(lo: float, hi: float, mde: float, sd: float = np.nan) -> str:
    """What a row says: the CI excludes 0, or a null stated with the effect the runs could detect."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval (n<2)"
    if sd == 0 and abs(lo) <= 1e-12 and abs(hi) <= 1e-12:
        return "no variation (every run scored the same)"
    if lo > 0 or hi < 0:
        return "CI excludes 0"
    return f"not detectable below {mde:.3g}" if np.isfinite(mde) else "CI includes 0"


def gain_table(tidy: pd.DataFrame, control: pd.DataFrame, axes: list[str], baselines: dict[str, str],
               metrics=DEFAULT_METRICS, sizes=None, primary=DEFAULT_PRIMARY) -> pd.DataFrame:
    """Each arm minus the random-init control, per task and metric: paired by pretraining seed
    when >= 2 seeds are shared (the control has no pretraining, so nothing else can pair), else
    Welch over runs. Empty without control runs."""
    if control is None or control.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    shown = list(metrics)
    metrics = list(dict.fromkeys([*shown, *sorted(primary_metrics(primary))]))
    both = pd.concat([_select(tidy, metrics).assign(_arm=None), _select(control, metrics).assign(_arm=CONTROL_ARM)])
    rows = []
    for axis in axes or [None]:
        if axis is None:
            both["_arm"] = both["_arm"].fillna("all")
        else:
            both["_arm"] = np.where(both["_arm"] == CONTROL_ARM, CONTROL_ARM, both[axis])
        runs = both.groupby(["run_dir", "_arm", "seed", "task", "metric"], dropna=False)["value"].median().reset_index()
        ids = pd.Series(runs["seed"].astype(str).to_numpy(), index=runs["run_dir"].to_numpy())
        ids = ids[~ids.index.duplicated()]
        axis_rows = []
        for task in task_order(control):
            for metric in [m for m in metrics if m in set(runs.loc[(runs["task"] == task) & (runs["_arm"] == CONTROL_ARM), "metric"])]:
                rl = runs[(runs["task"] == task) & (runs["metric"] == metric)]
                raw = both[(both["task"] == task) & (both["metric"] == metric)]
                if metric not in shown and not is_primary(task, metric, primary):
                    continue
                for arm in ordered_arms(axis, tidy, baselines, sizes):
                    if not (rl["_arm"] == arm).any():
                        continue
                    shared = set(rl.loc[rl["_arm"] == arm, "seed"]) & set(rl.loc[rl["_arm"] == CONTROL_ARM, "seed"])
                    why = "no shared seeds" if not shared else "fewer than 2 shared seeds"
                    axis_rows.append({"axis": axis or NO_AXIS, "arm": arm, "task": task, "metric": metric,
                                      **compare(rl, raw, "_arm", arm, CONTROL_ARM, ids, why)})
        rows.extend(r for r in with_holm(axis_rows, primary) if r["metric"] in shown)
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


GAIN_COLUMNS = ["axis", "arm", "task", "metric", "n_arm", "n_base", "n_pairs", "pairing", "method", "diff_mean",
                "diff_ci_low", "diff_ci_high", "df", "p_value", "family", "p_holm", "sd", "mde", "runs_needed", "verdict"]


def cell_label(row, axes: list[str]) -> str:
    return ", ".join(f"{a}={row[a]}" for a in axes) or "all runs"


def variance_table(tidy: pd.DataFrame, axes: list[str], metrics=("score",)) -> pd.DataFrame:
    """Pretraining-seed vs fine-tuning-seed variance per arm (one cell of the sweep) and task.

    An arm here is one full combination of the varied axes: pooling runs that differ in another
    axis would count that axis's effect as pretraining-seed variance."""
    data = _select(tidy[tidy["ft_seed"].notna()], metrics)
    rows = []
    for cell, sub in data.groupby(axes or (lambda _: 0), sort=True):
        cell = cell if isinstance(cell, tuple) else (cell,)
        for (task, metric), tm in sub.groupby(["task", "metric"], sort=True):
            groups = [g["value"].to_numpy() for _, g in tm.groupby("run_dir", sort=False)]
            vc = stats.variance_components(groups)
            rows.append({**dict(zip(axes, cell)), "arm": cell_label(dict(zip(axes, cell)), axes),
                         "task": task, "metric": metric, **vc,
                         "sd_pretrain": np.sqrt(vc["var_pretrain"]), "sd_finetune": np.sqrt(vc["var_finetune"])})
    cols = [*axes, "arm", "task", "metric", "n_runs", "n_values", "var_pretrain", "var_finetune",
            "frac_pretrain", "sd_pretrain", "sd_finetune"]
    return pd.DataFrame(rows, columns=cols)


