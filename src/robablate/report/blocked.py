"""The unconfounded readings of a confounded comparison.

When the arms of one axis also differ in another axis (study v2: NSP on = SEGMENT-/SENTENCE-PAIR, NSP off
= FULL-/DOC-SENTENCES), the pooled difference is that of both axes. The design may still hold a fairer
reading: the runs of both arms that share a value of the other axis (the matched subset, paired by seed
within it), or, when no value is shared, the arm against each single value of the baseline's (blocked by
the other axis, paired by seed). Each reading has its own n and interval; none removes a confound the
design does not break, and the table says which reading it is.
"""

from __future__ import annotations

import pandas as pd

from robablate.report.tables import (DEFAULT_PRIMARY, compare, is_primary, primary_metrics, run_level,
                                     task_order, _select)

BLOCKED_COLUMNS = ["axis", "arm", "baseline", "confounded_by", "reading", "task", "metric", "n_arm", "n_base",
                   "n_pairs", "pairing", "method", "diff_mean", "diff_ci_low", "diff_ci_high", "p_value", "mde",
                   "verdict"]


def readings(rl: pd.DataFrame, axis: str, arm: str, base: str, other: str) -> list[tuple[str, pd.DataFrame, pd.Series]]:
    """(label, run-level rows, run_dir -> pairing identity) of each reading of arm - base blocked by `other`."""
    a, b = rl[rl[axis] == arm], rl[rl[axis] == base]
    shared = sorted(set(a[other]) & set(b[other]))
    out = []
    if shared:
        sub = rl[rl[other].isin(shared) & rl[axis].isin([arm, base])]
        ids = (sub["seed"].astype(str) + "|" + sub[other]).set_axis(sub["run_dir"])
        out.append((f"matched {other} ({', '.join(shared)}), paired by seed", sub, ids))
    else:
        for v in sorted(set(b[other])):
            sub = pd.concat([a, b[b[other] == v]])
            ids = sub["seed"].astype(str).set_axis(sub["run_dir"])
            out.append((f"{axis}={arm} ({'/'.join(sorted(set(a[other])))}) vs {axis}={base} with {other}={v} only, "
                        "paired by seed", sub, ids))
    return out


def blocked_table(tidy: pd.DataFrame, paired: pd.DataFrame, primary=DEFAULT_PRIMARY) -> pd.DataFrame:
    """Every confounded comparison of `paired` (its `confounded_by`), read within the other axis, on the
    primary read-outs."""
    rows = []
    conf = paired[paired["confounded_by"].fillna("") != ""].drop_duplicates(["axis", "arm"]) \
        if not paired.empty else paired
    if conf.empty:
        return pd.DataFrame(columns=BLOCKED_COLUMNS)
    runs = run_level(_select(tidy, primary_metrics(primary)))
    for c in conf.itertuples():
        for other in c.confounded_by.split(", "):
            for task in task_order(_select(tidy, primary_metrics(primary))):
                for metric in sorted(set(runs.loc[runs["task"] == task, "metric"])):
                    if not is_primary(task, metric, primary):
                        continue
                    rl = runs[(runs["task"] == task) & (runs["metric"] == metric)]
                    for label, sub, ids in readings(rl, c.axis, c.arm, c.baseline, other):
                        ids = ids[~ids.index.duplicated()]
                        res = compare(sub, sub, c.axis, c.arm, c.baseline, ids, "fewer than 2 seeds shared")
                        rows.append({"axis": c.axis, "arm": c.arm, "baseline": c.baseline, "confounded_by": other,
                                     "reading": label, "task": task, "metric": metric, **res})
    return pd.DataFrame(rows, columns=BLOCKED_COLUMNS)
