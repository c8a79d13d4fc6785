"""Which runs compare with which: the arms of each axis and their order, the baselines, each run's
design (its off-axis config keys, LR and tokens fed), which runs pair, and what else differs between
two arms (tokens seen, LR, config keys): the flags every comparison table carries."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pandas as pd

from robablate.errors import ConfigError
from robablate.report.collect import AXES, Run
from robablate.schema import AXIS_TABLE, NOT_ARM_KEYS, axis as axis_row

LR_KEY = "plan.lr"  # the peak LR a run trained with (results["plan"]["lr"]), a design key like any other


TOKENS_TOL = 0.02  # arms whose tokens seen differ by more than this are not compute-matched


# The BERT-side value of each axis (schema.AXIS_TABLE), so differences read as "RoBERTa change minus BERT".
CANONICAL_BASELINE = {a.name: a.baseline for a in AXIS_TABLE if a.baseline is not None}
# Keys that differ between runs of one experiment by design: schema.NOT_ARM_KEYS (the list Hydra
# leaves out of folder names and the LR tuner's cache key drops).
IGNORED_CONFIG_KEYS = set(NOT_ARM_KEYS)


def own_keys(axis: str, key: str) -> bool:
    """Whether a config key belongs to a section the axis's preset sets (masking.dupe_factor for masking)."""
    row = axis_row(axis)
    return row is not None and any(key.startswith(s + ".") for s in row.sections)


IGNORED_LEAVES = {"seed", "run_dir", "output_dir", "out_dir", "save_dir", "log_dir", "dirpath"}


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
    if (row := axis_row(axis)) is not None and row.order == "size":
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


def ordered_arms(axis: str | None, frame: pd.DataFrame, baselines: dict, sizes) -> list[str]:
    if axis is None:
        return ["all"]
    order = arm_order(axis, frame[axis].unique(), sizes)
    b = baselines.get(axis)
    return [b] + [a for a in order if a != b] if b in order else order


def design_frame(runs: list[Run], axes: list[str], collapsed: dict[str, str] | None = None,
                 overfit: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run: its axes, seed, the config keys that can differ between runs (flattened,
    without the varied axes' own groups and the keys that differ by design: seeds, paths), the
    peak LR it trained with (results["plan"]["lr"]), whether that LR was tuned per arm
    (results["tune"]), the tokens it was fed (results["pretrain"]["tokens_seen"]), its training
    fingerprint (pretrain.fingerprint.digest), provenance (git commit, dirty tree), the keys its command
    line set, and whether it collapsed or overfit (`collapsed`, `overfit`: run_dir -> why)."""
    rows = []
    collapsed, overfit = collapsed or {}, overfit or {}
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
                     "_tokens_per_step_target": _num_or_nan(plan.get("tokens_per_step_target")),
                     "_fingerprint": str(((pre.get("fingerprint") or {}) if isinstance(pre.get("fingerprint"), dict)
                                          else {}).get("digest") or ""),
                     "_commit": str((r.data.get("environment") or {}).get("git_commit") or ""),
                     "_dirty": bool((r.data.get("environment") or {}).get("git_dirty")),
                     "_overrides": ",".join(sorted(override_keys(r.data))),
                     "_collapsed": collapsed.get(r.run_dir, ""), "_overfit": overfit.get(r.run_dir, "")})
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=["run_dir", *AXES, "seed", LR_KEY, *DESIGN_EXTRA])
    key_cols = [c for c in df.columns if c not in ("run_dir", "seed") and not c.startswith("_")]
    df[key_cols] = df[key_cols].fillna("<missing>").astype(str)
    return df


DESIGN_EXTRA = ["_lr", "_tuned", "_tune_rule", "_tokens", "_tokens_per_step", "_tokens_per_step_target",
                "_fingerprint", "_commit", "_dirty", "_overrides", "_collapsed", "_overfit"]


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
    # Another axis set with this one (format sets nsp) is the design; another axis that varies within an
    # arm (nsp on/off pools formats) confounds it; a key of the axis's own group is the axis's when its
    # preset sets it (masking.dupe_factor) and a confound when a command line did (masking.mask_prob=0.4);
    # any other config key that differs is a confound (an LR is handled above, as tuned or not).
    overridden = set().union(*(set(o.split(",")) - {""} for o in pd.concat([a, b])["_overrides"]))
    confounds = [k for k, _, _ in diffs if k in AXES and k not in det]
    for k, vb, va in diffs:
        if k == LR_KEY or k in AXES:
            continue
        if own_keys(axis, k) and k in det and k not in overridden:
            continue  # the axis's own preset sets it: part of the compared arm
        flags.append(f"config differs: {k} {vb} -> {va}" + (" (set on the command line)" if k in overridden else ""))
    flags = [f"confounded by {', '.join(confounds)}"] * bool(confounds) + flags
    commits = (set(a["_commit"]) - {""}, set(b["_commit"]) - {""})
    if commits[0] and commits[1] and commits[0] != commits[1]:
        flags.append(f"code differs: git commit {'/'.join(sorted(c[:7] for c in commits[1]))} -> "
                     f"{'/'.join(sorted(c[:7] for c in commits[0]))}")
    fa, fb = set(a["_fingerprint"]), set(b["_fingerprint"])
    identical = bool(len(a) and len(b) and "" not in fa | fb and fa == fb)
    ca, cb = int((a["_collapsed"] != "").sum()), int((b["_collapsed"] != "").sum())
    collapsed = "; ".join(f"{name}: {k} of {len(d)} runs collapsed" for name, k, d in
                          ((base, cb, b), (arm, ca, a)) if k)
    oa, ob = (int((d["_overfit"] != "").sum()) if "_overfit" in d else 0 for d in (a, b))
    overfit = "; ".join(f"{name}: {k} of {len(d)} runs overfit" for name, k, d in ((base, ob, b), (arm, oa, a)) if k)
    return {"tokens_arm": ta, "tokens_base": tb, "tokens_rel": ta / tb - 1 if tb else np.nan,
            "confounded_by": ", ".join(confounds), "identical_training": identical, "collapsed": collapsed, "overfit": overfit,
            "lr_arm": "/".join(sorted(set(a[LR_KEY]))), "lr_base": "/".join(sorted(set(b[LR_KEY]))),
            "lr_tuned": tuned, "lr_note": lr_note, "also_differs": "; ".join(also), "flags": "; ".join(flags)}


def compute_table(design: pd.DataFrame, axes: list[str], baselines: dict[str, str], sizes=None) -> pd.DataFrame:
    """Per axis and arm: tokens seen (mean, min, max over runs; relative to the baseline arm), the
    realised tokens per optimizer step and its target when the runs record them, and the LR it
    trained with, chosen per arm (results["tune"]) or set by the preset."""
    rows = []
    for axis in axes:
        base = design[design[axis] == baselines[axis]]["_tokens"].mean()
        for arm in ordered_arms(axis, design, baselines, sizes):
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


def design_from_tidy(tidy: pd.DataFrame) -> pd.DataFrame:
    """A design frame from axes and seeds alone (when no Run objects are at hand)."""
    d = tidy.drop_duplicates("run_dir")[["run_dir", *AXES, "seed"]].copy()
    d[LR_KEY], d["_lr"], d["_tuned"], d["_tune_rule"] = "<missing>", np.nan, False, ""
    d["_tokens"] = d["_tokens_per_step"] = d["_tokens_per_step_target"] = np.nan
    d["_fingerprint"] = d["_commit"] = d["_overrides"] = d["_collapsed"] = d["_overfit"] = ""
    d["_dirty"] = False
    return d.reset_index(drop=True)


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
    """Keys that differ by design: seeds, paths, the swept axes' own choice (`masking.name`, `nsp`; the
    axis columns carry them). Every other key of a swept group counts (`masking.mask_prob` can differ
    inside the compared axis's group: determined by the axis when its preset sets it, a confound when
    an override does: `axis_group_design`)."""
    parts = key.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return (bool(prefixes & IGNORED_CONFIG_KEYS) or key in swept or key in {row.key for a in swept if (row := axis_row(a))}
            or parts[-1] in IGNORED_LEAVES)


def override_keys(data: dict) -> set[str]:
    """The config keys a run's command line set (results["overrides"]), `+`/`~`/`++` stripped."""
    return {str(o).split("=", 1)[0].lstrip("+~") for o in data.get("overrides") or [] if "=" in str(o)}


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
    in_group = lambda k: any(own_keys(a, k) for a in axes)  # a swept axis's keys: its own sections
    keys = sorted({k for f in flat for k in f if not _ignored(k, set(axes)) and not in_group(k)})
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
