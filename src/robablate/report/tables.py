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
from robablate.report.collect import (AXES, BLIMP_METRIC, BLIMP_TASK, PRETRAIN_TASK, Run, is_blimp_task,
                                      is_glue_task)

CONTROL_ARM = "random init (control)"  # the arm name of random-init control runs in every table
LR_KEY = "plan.lr"  # the peak LR a run trained with (results["plan"]["lr"]), a design key like any other
TOKENS_TOL = 0.02  # arms whose tokens seen differ by more than this are not compute-matched
# The BERT-side value of each axis (docs/facts.md §1), so differences read as "RoBERTa change minus BERT".
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
DEFAULT_METRICS = ("score", "val_mlm_loss", "val_mlm_ppl", "val_mlm_acc", "val_nsp_acc", "tokens_per_s",
                   BLIMP_METRIC)


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
    """pretrain, BLiMP (overall, fields, terms), fine-tuning tasks, GLUE scores."""
    tasks = set(tasks)
    pre = [PRETRAIN_TASK] if PRETRAIN_TASK in tasks else []
    blimp = sorted((t for t in tasks if is_blimp_task(t)), key=lambda t: (t != BLIMP_TASK, "term" in t, t))
    return pre + blimp + sorted(t for t in tasks if t != PRETRAIN_TASK and not is_glue_task(t)
                                and not is_blimp_task(t)) + sorted(t for t in tasks if is_glue_task(t))


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
                  metrics=DEFAULT_METRICS, sizes=None, control: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per axis, arm, task and metric: n, mean, std, median, the 95% CI of the mean (Student t over
    the run means, `ci_method` says so) and `run_median_mean` = mean over runs of each run's median
    over fine-tuning seeds. Random-init control runs (`control`, a tidy frame) add one row per
    axis, task and metric with arm CONTROL_ARM."""
    data = _select(tidy, metrics)
    ctrl = _select(control, metrics) if control is not None and not control.empty else None
    rows = []
    for axis in axes or [None]:
        arms = _arms(axis, tidy, baselines, sizes)
        tasks = set(data["task"]) | (set(ctrl["task"]) if ctrl is not None else set())
        for task in task_order(tasks):
            present = set(data.loc[data["task"] == task, "metric"])
            if ctrl is not None:
                present |= set(ctrl.loc[ctrl["task"] == task, "metric"])
            for metric in [m for m in metrics if m in present]:
                tm = data[(data["task"] == task) & (data["metric"] == metric)]
                cells = [(arm, _arm_rows(tm, axis, arm)) for arm in arms]
                if ctrl is not None:
                    cells.append((CONTROL_ARM, ctrl[(ctrl["task"] == task) & (ctrl["metric"] == metric)]))
                for arm, sub in cells:
                    rows.append({"axis": axis or NO_AXIS, "arm": arm, "baseline": arm == baselines.get(axis),
                                 "task": task, "metric": metric, **_describe(sub)})
    cols = ["axis", "arm", "baseline", "task", "metric", "n_runs", "n_values", "mean", "std", "median",
            "ci_low", "ci_high", "ci_method", "run_median_mean"]
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


def design_frame(runs: list[Run], axes: list[str]) -> pd.DataFrame:
    """One row per run: its axes, seed, the config keys that can differ between runs (flattened,
    without the varied axes' own groups and the keys that differ by design: seeds, paths), the
    peak LR it trained with (results["plan"]["lr"]), whether that LR was tuned per arm
    (results["tune"]), and the tokens it was fed (results["pretrain"]["tokens_seen"])."""
    rows = []
    for r in runs:
        config = flatten(r.config)
        flat = {k: _show(config, k) for k in config if not _ignored(k, set(axes))}
        plan, tune, pre = (r.data.get(k) if isinstance(r.data.get(k), dict) else {}
                           for k in ("plan", "tune", "pretrain"))
        rows.append({"run_dir": r.run_dir, **r.axes, "seed": r.seed, **flat,
                     LR_KEY: _show(plan, "lr") if "lr" in plan else "<missing>",
                     "_lr": _num_or_nan(plan.get("lr")), "_tuned": bool(tune),
                     "_tune_rule": str(tune.get("rule") or ""),
                     "_tokens": _num_or_nan(pre.get("tokens_seen")),
                     "_tokens_per_step": _num_or_nan(pre.get("tokens_per_step")),
                     "_tokens_per_step_target": _num_or_nan(plan.get("tokens_per_step_target"))})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["run_dir", *AXES, "seed", LR_KEY, "_lr", "_tuned", "_tune_rule", "_tokens",
                                     "_tokens_per_step", "_tokens_per_step_target"])
    key_cols = [c for c in df.columns if c not in ("run_dir", "seed") and not c.startswith("_")]
    df[key_cols] = df[key_cols].fillna("<missing>").astype(str)
    return df


def _num_or_nan(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


def design_keys(design: pd.DataFrame, axis: str) -> list[str]:
    """The keys a run's design is made of, apart from `axis` itself and the seed."""
    return [c for c in design.columns if c not in ("run_dir", "seed", axis) and not c.startswith("_")]


def determined_keys(design: pd.DataFrame, axis: str) -> list[str]:
    """Keys that `axis` determines in these runs: each value of the axis maps to exactly one value
    of the key (functional dependence, not only one-to-one: format determines nsp although two
    formats share nsp=true). Constant keys are trivially determined."""
    if design.empty or axis not in design:
        return []
    g = design.groupby(axis)
    return [k for k in design_keys(design, axis) if (g[k].nunique(dropna=False) == 1).all()]


def varying_determined(design: pd.DataFrame, axis: str) -> list[str]:
    """Determined keys that actually differ between arms (worth naming in the report)."""
    return [k for k in determined_keys(design, axis) if design[k].nunique(dropna=False) > 1]


def pairing_keys(design: pd.DataFrame, axis: str) -> list[str]:
    """Runs of two arms pair when they agree on these keys and the seed: every key other than the
    compared axis and the keys it determines. A per-arm tuned LR is part of the arm (protocol)."""
    det = set(determined_keys(design, axis))
    keys = [k for k in design_keys(design, axis) if k not in det]
    if LR_KEY in keys and design["_tuned"].all():
        keys.remove(LR_KEY)
    return keys


def pair_ids(design: pd.DataFrame, axis: str) -> pd.Series:
    """run_dir -> the identity two runs must share to pair on `axis` (seed + pairing keys)."""
    keys = pairing_keys(design, axis)
    ident = design[["seed", *keys]].astype(str).agg("|".join, axis=1)
    return pd.Series(ident.to_numpy(), index=design["run_dir"].to_numpy())


def why_unpaired(design: pd.DataFrame, axis: str, arm: str, base: str) -> str:
    """Why fewer than 2 runs of `arm` and `base` pair: no shared seed, or the pairing keys that differ
    between the runs that share a seed but did not pair."""
    a, b = design[design[axis] == arm], design[design[axis] == base]
    shared = set(a["seed"].dropna()) & set(b["seed"].dropna())
    if not shared:
        return "no shared seeds"
    keys = pairing_keys(design, axis)
    paired, blocking = 0, set()
    for s in sorted(shared):
        diffs = [{k for k in keys if ra[k] != rb[k]} for _, ra in a[a["seed"] == s].iterrows()
                 for _, rb in b[b["seed"] == s].iterrows()]
        if any(not d for d in diffs):
            paired += 1
        else:
            blocking |= set.union(*diffs)
    head = f"{paired} pair (need 2)" if paired == 1 else ""
    if blocking:
        why = f"configs differ in {', '.join(sorted(blocking))} (not determined by {axis})"
        return f"{head}; {why}" if head else why
    return head or "fewer than 2 pairs"


def arm_differences(design: pd.DataFrame, axis: str, arm: str, base: str) -> list[tuple[str, str, str]]:
    """(key, base values, arm values) for every off-axis key whose values differ between the arms."""
    a, b = design[design[axis] == arm], design[design[axis] == base]
    out = []
    for k in design_keys(design, axis):
        va, vb = sorted(set(a[k])), sorted(set(b[k]))
        if va != vb:
            out.append((k, "/".join(vb), "/".join(va)))
    return out


def tokens_flag(tokens_arm: float, tokens_base: float, tol: float = TOKENS_TOL) -> str:
    """'' when the arm saw the baseline's tokens within `tol` (relative to the baseline), else the flag."""
    if not (np.isfinite(tokens_arm) and np.isfinite(tokens_base)) or tokens_base <= 0:
        return ""
    rel = tokens_arm / tokens_base - 1
    if abs(rel) <= tol:
        return ""
    return (f"tokens seen {100 * rel:+.1f}% ({eng(tokens_base)} -> {eng(tokens_arm)}; "
            f"> ±{100 * tol:g}%: not compute-matched)")


def eng(x: float) -> str:
    return f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x / 1e3:.4g}k" if x >= 1e3 else f"{x:g}"


def comparison_context(design: pd.DataFrame, axis: str, arm: str, base: str) -> dict[str, Any]:
    """What else differs between two compared arms: tokens seen (flagged above 2%), the LR each
    trained with (flagged when it differs and was not tuned per arm), every other off-axis key."""
    a, b = design[design[axis] == arm], design[design[axis] == base]
    ta, tb = a["_tokens"].mean(), b["_tokens"].mean()
    flags = [f] if (f := tokens_flag(ta, tb)) else []
    diffs = arm_differences(design, axis, arm, base)
    tuned = bool(len(a) and len(b) and a["_tuned"].all() and b["_tuned"].all())
    lr_note = ""
    if any(k == LR_KEY for k, _, _ in diffs):
        vb, va = next((vb, va) for k, vb, va in diffs if k == LR_KEY)
        lr_note = f"lr tuned per arm ({vb} vs {va})" if tuned else f"lr {vb} vs {va} (set by preset, not tuned)"
        if not tuned:
            flags.append(lr_note)
    det = set(determined_keys(design, axis))
    also = [f"{k}: {vb} -> {va}" + ("" if k in det else " (varies within arm)")
            for k, vb, va in diffs if k != LR_KEY]
    # Another axis set with this one (format sets nsp) is the design; a plain config key that differs
    # between the compared arms is a confound (an LR is handled above, as tuned or not).
    flags += [f"config differs: {k} {vb} -> {va}" for k, vb, va in diffs if k != LR_KEY and k not in AXES]
    return {"tokens_arm": ta, "tokens_base": tb, "tokens_rel": ta / tb - 1 if tb else np.nan,
            "lr_arm": "/".join(sorted(set(a[LR_KEY]))), "lr_base": "/".join(sorted(set(b[LR_KEY]))),
            "lr_tuned": tuned, "lr_note": lr_note, "also_differs": "; ".join(also), "flags": "; ".join(flags)}


def compute_table(design: pd.DataFrame, axes: list[str], baselines: dict[str, str], sizes=None) -> pd.DataFrame:
    """Per axis and arm: tokens seen (mean, min, max over runs; relative to the baseline arm), the
    realised tokens per optimizer step and its target when the runs record them, and the LR it
    trained with, chosen per arm (results["tune"]) or set by the preset."""
    rows = []
    for axis in axes:
        base = design[design[axis] == baselines[axis]]["_tokens"].mean()
        for arm in _arms(axis, design, baselines, sizes):
            d = design[design[axis] == arm]
            t = d["_tokens"]
            rows.append({"axis": axis, "arm": arm, "baseline": arm == baselines[axis], "n_runs": len(d),
                         "tokens_mean": t.mean(), "tokens_min": t.min(), "tokens_max": t.max(),
                         "tokens_vs_base": t.mean() / base - 1 if base else np.nan,
                         "tokens_per_step": d["_tokens_per_step"].mean(),
                         "tokens_per_step_target": d["_tokens_per_step_target"].mean(),
                         "lr": "/".join(sorted(set(d[LR_KEY]))),
                         "lr_source": "tuned per arm: " + d["_tune_rule"].iloc[0] if len(d) and d["_tuned"].all()
                         else "preset / config (not tuned)"})
    return pd.DataFrame(rows, columns=["axis", "arm", "baseline", "n_runs", "tokens_mean", "tokens_min",
                                       "tokens_max", "tokens_vs_base", "tokens_per_step", "tokens_per_step_target",
                                       "lr", "lr_source"])


def token_flags(design: pd.DataFrame, axes: list[str], sizes=None) -> pd.DataFrame:
    """Every pair of arms of an axis whose mean tokens seen differ by more than 2% (the larger
    relative to the smaller): a comparison between them is not compute-matched, whichever is the
    baseline."""
    rows = []
    for axis in axes:
        arms = arm_order(axis, design[axis].unique(), sizes)
        means = design.groupby(axis)["_tokens"].mean()
        for i, a in enumerate(arms):
            for b in arms[i + 1:]:
                hi, lo = (a, b) if means[a] >= means[b] else (b, a)
                if f := tokens_flag(means[hi], means[lo]):
                    rows.append({"axis": axis, "arm_more": hi, "arm_fewer": lo, "tokens_more": means[hi],
                                 "tokens_fewer": means[lo], "flag": f})
    return pd.DataFrame(rows, columns=["axis", "arm_more", "arm_fewer", "tokens_more", "tokens_fewer", "flag"])


# ------------------------------------------------------------------------------------------ compare


def paired_table(tidy: pd.DataFrame, axes: list[str], baselines: dict[str, str],
                 metrics=DEFAULT_METRICS, sizes=None, design: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each non-baseline arm minus the baseline arm, per task and metric.

    Runs pair when they share the pretraining seed and every design key other than the axis and the
    keys it determines (`pairing_keys`); each run enters with its median over fine-tuning seeds.
    With >= 2 pairs: paired t (CI and p); else Welch's t over the runs (over fine-tuning seeds when
    each arm has one run, which then tests fine-tuning noise only), and `pairing` says why nothing
    paired. Each row carries its power (MDE at 80%, runs needed for the observed difference) and
    what else differs between the arms (tokens, LR, other keys: `flags`, `also_differs`).
    p_holm adjusts p over all rows of one axis.
    """
    data = _select(tidy, metrics)
    runs = run_level(data)
    if design is None:
        design = _design_from_tidy(tidy)
    rows = []
    for axis in axes:
        ids = pair_ids(design, axis)
        base = baselines[axis]
        arms = _arms(axis, tidy, baselines, sizes)[1:]
        context = {arm: comparison_context(design, axis, arm, base) for arm in arms}
        unpaired = {arm: why_unpaired(design, axis, arm, base) for arm in arms}
        axis_rows = []
        for task in task_order(data["task"].unique()):
            for metric in [m for m in metrics if m in set(runs.loc[runs["task"] == task, "metric"])]:
                rl = runs[(runs["task"] == task) & (runs["metric"] == metric)]
                raw = data[(data["task"] == task) & (data["metric"] == metric)]
                for arm in arms:
                    axis_rows.append({"axis": axis, "arm": arm, "baseline": base, "task": task, "metric": metric,
                                      **compare(rl, raw, axis, arm, base, ids, unpaired[arm]), **context[arm]})
        for r, p in zip(axis_rows, stats.holm([r["p_value"] for r in axis_rows])):
            r["p_holm"] = p
        rows.extend(axis_rows)
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


PAIRED_COLUMNS = ["axis", "arm", "baseline", "task", "metric", "n_arm", "n_base", "n_pairs", "pairing",
                  "method", "diff_mean", "diff_ci_low", "diff_ci_high", "df", "p_value", "p_holm", "sd",
                  "mde", "runs_needed", "verdict", "tokens_arm", "tokens_base", "tokens_rel", "lr_arm",
                  "lr_base", "lr_tuned", "lr_note", "also_differs", "flags"]


def _design_from_tidy(tidy: pd.DataFrame) -> pd.DataFrame:
    """A design frame from axes and seeds alone (when no Run objects are at hand)."""
    d = tidy.drop_duplicates("run_dir")[["run_dir", *AXES, "seed"]].copy()
    d[LR_KEY], d["_lr"], d["_tuned"], d["_tune_rule"] = "<missing>", np.nan, False, ""
    d["_tokens"] = d["_tokens_per_step"] = d["_tokens_per_step_target"] = np.nan
    return d.reset_index(drop=True)


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
        out.update(pairing=pairing, method=method, diff_mean=diff, diff_ci_low=lo, diff_ci_high=hi, df=df,
                   p_value=stats.welch_test(xa, xb), sd=sd, mde=stats.mde_unpaired(sd, len(xa), len(xb)),
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
               metrics=DEFAULT_METRICS, sizes=None) -> pd.DataFrame:
    """Each arm minus the random-init control, per task and metric: paired by pretraining seed
    when >= 2 seeds are shared (the control has no pretraining, so nothing else can pair), else
    Welch over runs. Empty without control runs."""
    if control is None or control.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
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
        for task in task_order(control["task"].unique()):
            for metric in [m for m in metrics if m in set(runs.loc[(runs["task"] == task) & (runs["_arm"] == CONTROL_ARM), "metric"])]:
                rl = runs[(runs["task"] == task) & (runs["metric"] == metric)]
                raw = both[(both["task"] == task) & (both["metric"] == metric)]
                for arm in _arms(axis, tidy, baselines, sizes):
                    shared = set(rl.loc[rl["_arm"] == arm, "seed"]) & set(rl.loc[rl["_arm"] == CONTROL_ARM, "seed"])
                    why = "no shared seeds" if not shared else "fewer than 2 shared seeds"
                    axis_rows.append({"axis": axis or NO_AXIS, "arm": arm, "task": task, "metric": metric,
                                      **compare(rl, raw, "_arm", arm, CONTROL_ARM, ids, why)})
        for r, p in zip(axis_rows, stats.holm([r["p_value"] for r in axis_rows])):
            r["p_holm"] = p
        rows.extend(axis_rows)
    return pd.DataFrame(rows, columns=GAIN_COLUMNS)


GAIN_COLUMNS = ["axis", "arm", "task", "metric", "n_arm", "n_base", "n_pairs", "pairing", "method", "diff_mean",
                "diff_ci_low", "diff_ci_high", "df", "p_value", "p_holm", "sd", "mde", "runs_needed", "verdict"]


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
