"""GLUE metrics (scikit-learn / scipy, never hand-written) and the GLUE score in both conventions.

All values are fractions in [0, 1] (correlations in [-1, 1]); tables may multiply by 100.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from robablate.glue.tasks import GLUE_TASK_NAMES, TaskSpec, dev_splits, get_task

# Metric-name suffix per dev split: MNLI's matched / mismatched accuracies are acc_m / acc_mm.
_SPLIT_SUFFIX = {"dev": "", "dev_matched": "_m", "dev_mismatched": "_mm"}

# The BERT paper's GLUE table (Devlin et al. 2019, Table 1): one number per column, in its order,
# MNLI-m and MNLI-mm as two columns, no WNLI. (entry name, task, metric)
BERT_TABLE: tuple[tuple[str, str, str], ...] = (
    ("MNLI-m", "MNLI", "acc_m"), ("MNLI-mm", "MNLI", "acc_mm"), ("QQP", "QQP", "f1"),
    ("QNLI", "QNLI", "acc"), ("SST-2", "SST-2", "acc"), ("CoLA", "CoLA", "mcc"),
    ("STS-B", "STS-B", "spearman"), ("MRPC", "MRPC", "f1"), ("RTE", "RTE", "acc"),
)

GLUE_CONVENTION = ("GLUE benchmark: macro-average of task scores over the tasks listed; a task with two "
                   "metrics (MRPC/QQP F1+acc, STS-B Pearson+Spearman) scores their mean, MNLI scores the "
                   "mean of matched and mismatched accuracy; WNLI included when present")
BERT_CONVENTION = ("BERT paper table: mean of the entries listed, one metric per task (CoLA MCC, SST-2 acc, "
                   "MRPC F1, STS-B Spearman, QQP F1, QNLI acc, RTE acc) with MNLI-m and MNLI-mm as two "
                   "entries; no WNLI")
SYNTHETIC_CONVENTION = "robablate synthetic tasks: mean of task scores (not part of any GLUE score)"


def _correlation(fn, preds: np.ndarray, labels: np.ndarray) -> float:
    # A constant prediction vector (a collapsed regressor, common early in fine-tuning or on a random
    # encoder) has no defined correlation: scipy returns NaN and warns. It carries no information
    # about the ordering, so it scores 0.0; a NaN would poison the GLUE average and the seed median.
    if np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = float(fn(preds, labels)[0])
    return 0.0 if np.isnan(r) else r


def split_metrics(task: str | TaskSpec, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of one dev split (unsuffixed names: mcc / acc / f1+acc / pearson+spearman).
    `preds` are class indices (or logits [N, C], argmaxed) or, for regression, scores."""
    spec = get_task(task)
    preds, labels = np.asarray(preds), np.asarray(labels)
    if spec.is_regression:
        preds, labels = preds.astype(np.float64).reshape(-1), labels.astype(np.float64).reshape(-1)
    elif preds.ndim == 2:
        preds = preds.argmax(axis=1)
    if preds.shape != labels.shape or preds.size == 0:
        raise ValueError(f"{spec.name}: predictions {preds.shape} and labels {labels.shape} must be "
                         f"non-empty and of equal length")
    if spec.is_regression:
        return {"pearson": _correlation(stats.pearsonr, preds, labels),
                "spearman": _correlation(stats.spearmanr, preds, labels)}
    out: dict[str, float] = {}
    for m in spec.metrics:
        m = m.removesuffix("_mm").removesuffix("_m")
        if m == "mcc":  # sklearn returns 0.0 when a row or column of the confusion matrix is empty
            out["mcc"] = float(matthews_corrcoef(labels, preds))
        elif m == "f1":  # positive class = paraphrase / duplicate = label "1" (index 1)
            out["f1"] = float(f1_score(labels, preds, pos_label=1, average="binary", zero_division=0.0))
        elif m == "acc":
            out["acc"] = float(accuracy_score(labels, preds))
    return out


def task_metrics(task: str | TaskSpec, preds, labels) -> dict[str, float]:
    """The task's metrics (names as spec.metrics). Tasks with one dev set take arrays; MNLI takes
    dicts keyed by dev split ({"dev_matched": ..., "dev_mismatched": ...}) and gets acc_m / acc_mm."""
    spec = get_task(task)
    names = dev_splits(spec)
    if not isinstance(preds, Mapping):
        if len(names) != 1:
            raise ValueError(f"{spec.name} has dev splits {names}: pass dicts keyed by split")
        preds, labels = {names[0]: preds}, {names[0]: labels}
    if set(preds) != set(names) or set(labels) != set(names):
        raise ValueError(f"{spec.name}: need predictions and labels for dev splits {names}, "
                         f"got {sorted(preds)} / {sorted(labels)}")
    out: dict[str, float] = {}
    for split in names:
        for k, v in split_metrics(spec, preds[split], labels[split]).items():
            out[k + _SPLIT_SUFFIX[split]] = v
    return {m: out[m] for m in spec.metrics}


def task_score(task: str | TaskSpec, metrics: Mapping[str, float]) -> float:
    """Mean of the task's metrics (MRPC/QQP F1+acc, STS-B Pearson+Spearman, MNLI m+mm)."""
    spec = get_task(task)
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise ValueError(f"{spec.name}: metrics {missing} missing from {sorted(metrics)}")
    return float(np.mean([metrics[m] for m in spec.metrics]))


def glue_score(per_task: Mapping[str, Mapping[str, float]]) -> dict:
    """The GLUE score in both conventions (each says what it averages), plus a separate score of the
    synthetic tasks. A subset of tasks gives complete=False and lists what was averaged."""
    specs = {get_task(name).name: (get_task(name), m) for name, m in per_task.items()}
    glue_names = [n for n in GLUE_TASK_NAMES if n in specs]
    scores = {n: task_score(*specs[n]) for n in glue_names}
    bert_values = {entry: float(specs[task][1][metric]) for entry, task, metric in BERT_TABLE if task in specs}
    out: dict = {
        "glue": {"value": float(np.mean(list(scores.values()))) if scores else None,
                 "tasks": glue_names, "scores": scores, "convention": GLUE_CONVENTION,
                 "complete": len(glue_names) == len(GLUE_TASK_NAMES)},
        "bert": {"value": float(np.mean(list(bert_values.values()))) if bert_values else None,
                 "entries": list(bert_values), "values": bert_values, "convention": BERT_CONVENTION,
                 "complete": len(bert_values) == len(BERT_TABLE)},
    }
    synthetic = {n: task_score(spec, m) for n, (spec, m) in specs.items() if spec.synthetic}
    if synthetic:
        out["synthetic"] = {"value": float(np.mean(list(synthetic.values()))), "tasks": list(synthetic),
                            "scores": synthetic, "convention": SYNTHETIC_CONVENTION}
    return out


def summarize_seeds(values: Sequence[float]) -> dict[str, float]:
    """Median (RoBERTa reports the median of 5 fine-tuning seeds), mean, std (ddof=1), min, max, n."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize_seeds: no values")
    return {"median": float(np.median(x)), "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max()), "n": int(x.size)}
