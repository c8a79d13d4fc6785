"""GLUE metrics against hand-computed values, and the GLUE score in both conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robablate.errors import ConfigError
from robablate.glue.metrics import glue_score, split_metrics, summarize_seeds, task_metrics, task_score

# A 2x2 confusion written out by hand: TP=3, FN=1, FP=2, TN=4 (positive = 1).
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PREDS = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
TP, FN, FP, TN = 3, 1, 2, 4


def test_mcc_by_hand():
    expected = (TP * TN - FP * FN) / math.sqrt((TP + FP) * (TP + FN) * (TN + FP) * (TN + FN))  # 10/sqrt(600)
    assert task_metrics("CoLA", PREDS, LABELS) == {"mcc": pytest.approx(expected, abs=1e-12)}
    assert expected == pytest.approx(0.4082482905, abs=1e-9)


def test_f1_and_acc_by_hand_positive_class_is_1():
    m = task_metrics("MRPC", PREDS, LABELS)
    assert list(m) == ["f1", "acc"]
    assert m["f1"] == pytest.approx(2 * TP / (2 * TP + FP + FN))  # 6/9
    assert m["acc"] == pytest.approx((TP + TN) / 10)
    # swapping the classes changes F1 (it is not symmetric), so the positive class matters
    assert task_metrics("QQP", 1 - PREDS, 1 - LABELS)["f1"] == pytest.approx(2 * TN / (2 * TN + FP + FN))


def test_logits_are_argmaxed():
    logits = np.stack([1 - PREDS, PREDS], axis=1).astype(float)
    assert task_metrics("SST-2", logits, LABELS) == {"acc": pytest.approx(0.7)}


def test_pearson_spearman_by_hand():
    # x = [1,2,3], y = [1,3,2]: deviations [-1,0,1] and [-1,1,0] -> r = 1 / sqrt(2*2) = 0.5; ranks equal values
    m = task_metrics("STS-B", np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0]))
    assert m["pearson"] == pytest.approx(0.5) and m["spearman"] == pytest.approx(0.5)
    # y = [2,4,7]: sum dx*dy = 5, sum dy^2 = 38/3 -> r = 5/sqrt(2*38/3); monotone -> spearman 1
    m = task_metrics("STS-B", np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0]))
    assert m["pearson"] == pytest.approx(5 / math.sqrt(2 * 38 / 3)) and m["spearman"] == pytest.approx(1.0)


def test_constant_regression_predictions_score_zero_not_nan():
    m = task_metrics("STS-B", np.full(4, 2.5), np.array([0.0, 1.0, 4.0, 5.0]))
    assert m == {"pearson": 0.0, "spearman": 0.0}


def test_mnli_needs_both_dev_sets():
    preds = {"dev_matched": np.array([0, 1, 2, 2]), "dev_mismatched": np.array([1, 1, 0])}
    labels = {"dev_matched": np.array([0, 1, 2, 1]), "dev_mismatched": np.array([1, 0, 2])}
    assert task_metrics("MNLI", preds, labels) == {"acc_m": pytest.approx(0.75), "acc_mm": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="dev_matched"):
        task_metrics("MNLI", preds["dev_matched"], labels["dev_matched"])
    with pytest.raises(ValueError, match="dev_mismatched"):
        task_metrics("MNLI", {"dev_matched": preds["dev_matched"]}, {"dev_matched": labels["dev_matched"]})


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="equal length"):
        split_metrics("RTE", np.array([0, 1]), np.array([0, 1, 1]))


def test_task_score():
    assert task_score("MRPC", {"f1": 0.8, "acc": 0.7}) == pytest.approx(0.75)
    assert task_score("RTE", {"acc": 0.6}) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="acc_mm"):
        task_score("MNLI", {"acc_m": 0.7})


def test_glue_score_both_conventions_by_hand():
    per_task = {"MRPC": {"f1": 0.8, "acc": 0.7}, "STS-B": {"pearson": 0.6, "spearman": 0.5},
                "MNLI": {"acc_m": 0.7, "acc_mm": 0.6}, "WNLI": {"acc": 0.5}}
    s = glue_score(per_task)
    # GLUE: task scores 0.75, 0.55, 0.65, 0.5 -> 2.45 / 4
    assert s["glue"]["value"] == pytest.approx(2.45 / 4)
    assert s["glue"]["tasks"] == ["MRPC", "STS-B", "MNLI", "WNLI"] and s["glue"]["complete"] is False
    # BERT: MNLI-m 0.7, MNLI-mm 0.6, STS-B Spearman 0.5, MRPC F1 0.8 (no WNLI) -> 2.6 / 4
    assert s["bert"]["value"] == pytest.approx(2.6 / 4)
    assert s["bert"]["entries"] == ["MNLI-m", "MNLI-mm", "STS-B", "MRPC"] and s["bert"]["complete"] is False
    assert "WNLI" in s["glue"]["convention"] and "WNLI" in s["bert"]["convention"]
    assert "synthetic" not in s


def test_glue_score_complete_and_synthetic_kept_apart():
    full = {"CoLA": {"mcc": 0.5}, "SST-2": {"acc": 0.9}, "MRPC": {"f1": 0.9, "acc": 0.8},
            "STS-B": {"pearson": 0.8, "spearman": 0.7}, "QQP": {"f1": 0.7, "acc": 0.9},
            "MNLI": {"acc_m": 0.8, "acc_mm": 0.8}, "QNLI": {"acc": 0.9}, "RTE": {"acc": 0.6},
            "WNLI": {"acc": 0.1}, "SYN-TOPIC": {"acc": 1.0}, "SYN-SIM": {"pearson": 0.2, "spearman": 0.4}}
    s = glue_score(full)
    assert s["glue"]["complete"] and s["bert"]["complete"] and len(s["bert"]["entries"]) == 9
    glue_by_hand = (0.5 + 0.9 + 0.85 + 0.75 + 0.8 + 0.8 + 0.9 + 0.6 + 0.1) / 9
    bert_by_hand = (0.8 + 0.8 + 0.7 + 0.9 + 0.9 + 0.5 + 0.7 + 0.9 + 0.6) / 9
    assert s["glue"]["value"] == pytest.approx(glue_by_hand)
    assert s["bert"]["value"] == pytest.approx(bert_by_hand)
    assert s["synthetic"]["value"] == pytest.approx((1.0 + 0.3) / 2)
    assert s["synthetic"]["tasks"] == ["SYN-TOPIC", "SYN-SIM"]
    only_syn = glue_score({"SYN-NEXT": {"acc": 0.9}})
    assert only_syn["glue"]["value"] is None and only_syn["glue"]["tasks"] == []
    with pytest.raises(ConfigError, match="SQuAD"):
        glue_score({"SQuAD": {"f1": 0.9}})


def test_summarize_seeds():
    s = summarize_seeds([0.5, 0.9, 0.6, 0.7, 0.8])
    assert s["median"] == pytest.approx(0.7) and s["mean"] == pytest.approx(0.7) and s["n"] == 5
    assert s["std"] == pytest.approx(math.sqrt(0.1 / 4))  # sum of squared deviations 0.1, ddof=1
    assert (s["min"], s["max"]) == (0.5, 0.9)
    assert summarize_seeds([0.3]) == {"median": 0.3, "mean": 0.3, "std": 0.0, "min": 0.3, "max": 0.3, "n": 1}
    with pytest.raises(ValueError):
        summarize_seeds([])
