"""From the tidy frame to the report's tables: per-arm summaries, paired differences against a
baseline arm, variance components, and the config keys that differ although no axis was swept."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

from robablate.errors import ConfigError
from robablate.report import stats
from robablate.report.collect import AXES, PRETRAIN_TASK, Run, is_glue_task

# The BERT-side value of each axis (SPEC §2), so differences read as "RoBERTa change minus BERT".
CANONICAL_BASELINE = {"masking": "static", "nsp": "true", "format": "segment_pair",
                      "seq_len": "128", "scheduler": "linear"}
# Keys that differ between runs of one experiment by design (the same list Hydra leaves out of
# folder names, plus output/cache paths and the loader's worker count, which masking and batching
# are independent of by construction).
IGNORED_CONFIG_KEYS = {"seed", "experiment", "experiment_name", "run_dir", "resume", "stage", "logger",
                       "hydra", "cache_dir", "trainer.devices", "trainer.strategy",
                       "trainer.accelerator", "trainer.num_nodes", "train.num_workers"}
IGNORED_LEAVES = {"seed", "run_dir", "output_dir", "out_dir", "save_dir", "log_dir", "dirpath"}
# Which tidy metrics the summary covers unless --metric says otherwise.
NO_AXIS = "(none)"  # the axis column when every run has the same axis values (one pooled arm)
DEFAULT_METRICS = ("score", "val_mlm_loss", "val_mlm_ppl", "val_mlm_acc", "val_nsp_acc", "tokens_per_s")


def _size(v: str) -> float:
    """'bs256' -> 256, '2k' -> 2000, '8K' -> 8000; nan when the name holds no number."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*([kKmM]?)", v)
    if not m:
        return np.nan
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2).lower()]


def arm_order(axis: str, values, sizes: dict[str, float] | None = None) -> list[str]:
    """Arms in display order; the first is the default baseline. Batch presets sort by size
    (config batch.size when known, else the number in the name); numbers sort numerically."""
    values = sorted(set(values))
    if axis == "batch":
        sizes = sizes or {}
        key = lambda v: (np.nan_to_num(sizes.get(v, _size(v)), nan=np.inf), v)
        return sorted(values, key=key)
    canon = CANONICAL_BASELINE.get(axis)
    num = lambda v: (0, float(v), v) if re.fullmatch(r"-?\d+(\.\d+)?", v) else (1, 0.0, v)
    values = sorted(values, key=num)
    if canon in values:
        values.remove(canon)
        values.insert(0, canon)
    return values


def batch_sizes(runs: list[Run]) -> dict[str, float]:
    out = {}
    for r in runs:
        b = r.config.get("batch")
        if isinstance(b, dict) and isinstance(b.get("size"), (int, float)):
            out[r.axes["batch"]] = float(b["size"]) * float(b.get("scale") or 1.0)
    return out


def varied_axes(tidy: pd.DataFrame) -> list[str]:
    runs = tidy.drop_duplicates("run_dir")
    return [a for a in AXES if runs[a].nunique() > 1]


def resolve_baselines(tidy: pd.DataFrame, axes: list[str], requested: dict[str, str] | None,
                      sizes: dict[str, float] | None = None) -> dict[str, str]:
    """Baseline arm per varied axis; an unknown key or value raises ConfigError naming the choices."""
    base = {a: arm_order(a, tidy[a].unique(), sizes)[0] for a in axes}
    for key, value in (requested or {}).items():
        if key not in axes:
            raise ConfigError(f"--baseline {key}={value}: '{key}' is not a varied axis of these runs; "
                              f"available keys: {', '.join(axes) or '(none: every run has the same axes)'}")
        values = arm_order(key, tidy[key].unique(), sizes)
        if str(value) not in values:
            raise ConfigError(f"--baseline {key}={value}: no run has {key}={value}; "
                              f"available values of {key}: {', '.join(values)}")
        base[key] = str(value)
    return base


def parse_baselines(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--baseline {item!r}: expected key=value, e.g. masking=static")
        out[key.strip()] = value.strip()
    return out


def task_order(tasks) -> list[str]:
    tasks = set(tasks)
    pre = [PRETRAIN_TASK] if PRETRAIN_TASK in tasks else []
    return pre + sorted(t for t in tasks if t != PRETRAIN_TASK and not is_glue_task(t)) \
        + sorted(t for t in tasks if is_glue_task(t))


def _select(tidy: pd.DataFrame, metrics) -> pd.DataFrame:
    return tidy[tidy["metric"].isin(list(metrics))]


def run_level(tidy: pd.DataFrame) -> pd.DataFrame:
    """One value per run x task x metric: the median over fine-tuning seeds (RoBERTa §3.1)."""
    keys = ["run_dir", *AXES, "seed", "task", "metric"]
    return tidy.groupby(keys, sort=False, dropna=False)["value"].median().reset_index()


def _arms(axis: str | None, frame: pd.DataFrame, baselines: dict, sizes) -> list[str]:
    if axis is None:
        return ["all"]
    order = arm_order(axis, frame[axis].unique(), sizes)
    b = baselines.get(axis)
    return [b] + [a for a in order if a != b] if b in order else order


def _arm_rows(frame: pd.DataFrame, axis: str | None, arm: str) -> pd.DataFrame:
    return frame if axis is None else frame[frame[axis] == arm]


def summary_table(tidy: pd.DataFrame, axes: list[str], baselines: dict[str, str],
                  metrics=DEFAULT_METRICS, sizes=None, **boot) -> pd.DataFrame:
    """Per axis, arm, task and metric: n, mean, std, median, the 95% CI of the mean (whole runs
    resampled) and `run_median_mean` = mean over runs of each run's median over fine-tuning seeds."""
    data = _select(tidy, metrics)
    rows = []
    for axis in axes or [None]:
        arms = _arms(axis, tidy, baselines, sizes)
        for task in task_order(data["task"].unique()):
            for metric in [m for m in metrics if m in set(data.loc[data["task"] == task, "metric"])]:
                tm = data[(data["task"] == task) & (data["metric"] == metric)]
                for arm in arms:
                    sub = _arm_rows(tm, axis, arm)
                    groups = [g["value"].to_numpy() for _, g in sub.groupby("run_dir", sort=False)]
                    v = sub["value"]
                    one_value = v.nunique() == 1  # std 0, not summation round-off
                    lo, hi, over = stats.cluster_bootstrap_ci(groups, **boot)
                    rows.append({
                        "axis": axis or NO_AXIS, "arm": arm, "baseline": arm == baselines.get(axis),
                        "task": task, "metric": metric, "n_runs": len(groups), "n_values": len(v),
                        "mean": v.mean() if len(v) else np.nan,
                        "std": (0.0 if one_value else v.std(ddof=1)) if len(v) > 1 else np.nan,
                        "median": v.median() if len(v) else np.nan,
                        "ci_low": lo, "ci_high": hi, "ci_over": over,
                        "run_median_mean": float(np.mean([np.median(g) for g in groups])) if groups else np.nan,
                    })
    return pd.DataFrame(rows)


def aliased_axes(tidy: pd.DataFrame, axes: list[str]) -> dict[str, list[str]]:
    """Varied axes that move together one-to-one (`nsp=true,false` with `format=auto` varies format
    with nsp): pairing on one must ignore the other, or nothing pairs. The contrast is then shared."""
    runs = tidy.drop_duplicates("run_dir")
    out = {a: [] for a in axes}
    for a in axes:
        for b in axes:
            if a != b and (runs.groupby(a)[b].nunique() == 1).all() and (runs.groupby(b)[a].nunique() == 1).all():
                out[a].append(b)
    return out


def paired_table(tidy: pd.DataFrame, axes: list[str], baselines: dict[str, str],
                 metrics=DEFAULT_METRICS, sizes=None, **boot) -> pd.DataFrame:
    """Each non-baseline arm minus the baseline arm, per task and metric.

    Runs pair when they share every other axis value and the pretraining seed; each run enters with
    its median over fine-tuning seeds. With < 2 pairs the comparison falls back to Welch's t-test
    (over runs, or over fine-tuning seeds when each arm has one run, which then tests fine-tuning
    noise only) and the `test` column says so. p_holm adjusts p over all rows of one axis.
    """
    data = _select(tidy, metrics)
    runs = run_level(data)
    aliases = aliased_axes(tidy, axes)
    rows = []
    for axis in axes:
        others = [a for a in AXES if a != axis and a not in aliases[axis]]
        base = baselines[axis]
        axis_rows = []
        for task in task_order(data["task"].unique()):
            for metric in [m for m in metrics if m in set(runs.loc[runs["task"] == task, "metric"])]:
                rl = runs[(runs["task"] == task) & (runs["metric"] == metric)]
                raw = data[(data["task"] == task) & (data["metric"] == metric)]
                for arm in _arms(axis, tidy, baselines, sizes)[1:]:
                    axis_rows.append({"axis": axis, "arm": arm, "baseline": base, "task": task,
                                      "metric": metric, **_compare(rl, raw, axis, arm, base, others, boot)})
        for r, p in zip(axis_rows, stats.holm([r["p_value"] for r in axis_rows])):
            r["p_holm"] = p
        rows.extend(axis_rows)
    cols = ["axis", "arm", "baseline", "task", "metric", "n_pairs", "diff_mean", "diff_ci_low",
            "diff_ci_high", "test", "p_value", "p_holm"]
    return pd.DataFrame(rows, columns=cols)


def _compare(rl, raw, axis, arm, base, others, boot) -> dict[str, Any]:
    key = [*others, "seed"]
    a = rl[rl[axis] == arm].groupby(key, dropna=False)["value"].mean()
    b = rl[rl[axis] == base].groupby(key, dropna=False)["value"].mean()
    pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    if len(pairs) >= 2:
        d = (pairs["a"] - pairs["b"]).to_numpy()
        test, p = stats.paired_test(d)
        lo, hi = stats.bootstrap_ci(d, **boot)
        return dict(n_pairs=len(d), diff_mean=d.mean(), diff_ci_low=lo, diff_ci_high=hi, test=test, p_value=p)
    xa, xb = rl.loc[rl[axis] == arm, "value"].to_numpy(), rl.loc[rl[axis] == base, "value"].to_numpy()
    test = "welch t-test (unpaired runs)"
    if (len(xa) < 2 or len(xb) < 2):
        xa, xb = raw.loc[raw[axis] == arm, "value"].to_numpy(), raw.loc[raw[axis] == base, "value"].to_numpy()
        test = "welch t-test over ft seeds (1 run per arm: fine-tuning noise only)"
        if len(xa) < 2 or len(xb) < 2:
            test = "none (n<2)"
    diff = xa.mean() - xb.mean() if len(xa) and len(xb) else np.nan
    lo, hi = stats.diff_ci(xa, xb, **boot)
    return dict(n_pairs=len(pairs), diff_mean=diff, diff_ci_low=lo, diff_ci_high=hi, test=test,
                p_value=stats.welch_test(xa, xb))


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


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v
    return out


def _ignored(key: str, swept: set[str]) -> bool:
    parts = key.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return bool(prefixes & (IGNORED_CONFIG_KEYS | swept)) or parts[-1] in IGNORED_LEAVES


def _show(flat: dict, key: str) -> str:
    if key not in flat:
        return "<missing>"
    v = flat[key]
    return v if isinstance(v, str) else json.dumps(v)


def off_axis_table(runs: list[Run], axes: list[str]) -> pd.DataFrame:
    """Config keys whose value differs between runs although they are not a swept axis.

    `confounded_with` names swept axes whose arms each hold one value of the key (the difference
    travels with that axis: a derived setting or a confound); `within_arm` is True when runs with
    identical axis values differ (an unplanned difference inside one arm)."""
    flat = [flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f if not _ignored(k, set(axes))})
    rows = []
    for key in keys:
        vals = [_show(f, key) for f in flat]
        if len(set(vals)) < 2:
            continue
        frame = pd.DataFrame([r.axes for r in runs]).assign(v=vals)
        conf = [a for a in axes if (frame.groupby(a)["v"].nunique() == 1).all()]
        within = bool((frame.groupby(list(axes))["v"].nunique() > 1).any()) if axes else True
        counts = pd.Series(vals).value_counts(sort=False)
        rows.append({"key": key, "values": "; ".join(f"{v} (x{n})" for v, n in counts.items()),
                     "confounded_with": ", ".join(conf), "within_arm": within})
    return pd.DataFrame(rows, columns=["key", "values", "confounded_with", "within_arm"])
