"""experiments/bench_sweep.compare: the "results identical" check that bench_sweep.py and bench_table1.py print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from bench_sweep import compare  # noqa: E402


def _run(tmp_path: Path, name: str, pretrain: dict, timings: dict | None = None) -> Path:
    path = tmp_path / name / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"plan": {"steps": 10}, "pretrain": pretrain, "timings": timings or {}}))
    return path


def test_identical_runs_ignore_timings(tmp_path) -> None:
    a = {"r": _run(tmp_path, "a", {"val_mlm_loss": 6.5, "train_time_s": 10.0}, {"total_s": 30.0})}
    b = {"r": _run(tmp_path, "b", {"val_mlm_loss": 6.5, "train_time_s": 12.0}, {"total_s": 40.0})}
    same, account = compare(a, b)
    assert same, account


def test_a_new_field_does_not_hide_the_largest_numeric_difference(tmp_path) -> None:
    a = {"r": _run(tmp_path, "a", {"val_mlm_loss": 6.5, "collapse": {}})}
    b = {"r": _run(tmp_path, "b", {"val_mlm_loss": 6.4, "collapse": {"overfit": ""}})}
    same, account = compare(a, b)
    assert not same
    assert "1 numbers differ" in account and "6.5 vs 6.4" in account
    assert "1 fields on one side only (pretrain.collapse.overfit)" in account


def test_different_runs_are_named(tmp_path) -> None:
    same, account = compare({"x": _run(tmp_path, "a", {})}, {"y": _run(tmp_path, "b", {})})
    assert not same and "'x'" in account and "'y'" in account
