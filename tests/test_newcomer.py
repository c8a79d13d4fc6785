"""Issue 12 ("a newcomer's first hour"): inputs checked before compute, resume keeps what a run wrote,
arguments that cannot take effect are refused, the end-of-run summary, quiet output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import compose_cfg
from robablate.pipeline import run

FAST = ["experiment=smoke", "train.max_steps=8", "train.val_every_steps=4", "train.val_instances=64", "glue=none",
        "trainer.enable_progress_bar=false", "logger=csv"]


def arm(tmp_path: Path, cache_dir: Path, *overrides: str, name: str = "run"):
    cfg = compose_cfg([*FAST, f"cache_dir={cache_dir}", f"run_dir={tmp_path / name}", *overrides])
    return cfg, run(cfg)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- 6. resume keeps the curve before the interruption -------------------------------------------------

@pytest.mark.slow
def test_resume_keeps_metrics_csv_rows_and_validation_history(tmp_path, cache_dir) -> None:
    # Validations at 4, 8, 12; CSV rows every 2 steps; the stop at step 9 falls between two validations
    # (8, 12) and between two log points (rows of steps 8 and 10). Before the fix, metrics.csv lost every
    # row before the checkpoint and the history lost the validation at step 8.
    common = ["seed=1", "train.max_steps=12", "train.val_every_steps=4", "trainer.log_every_n_steps=2"]
    _, full = arm(tmp_path, cache_dir, *common, name="full")
    _, part = arm(tmp_path, cache_dir, *common, "train.stop_at_step=9", name="resumed")
    assert part["status"] == "interrupted"
    _, resumed = arm(tmp_path, cache_dir, *common, "resume=true", name="resumed")

    steps = lambda res: [h["step"] for h in res["pretrain"]["history"]]  # noqa: E731
    assert steps(full) == [4, 8, 12]
    assert resumed["pretrain"]["history"] == full["pretrain"]["history"]
    saved = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert [h["step"] for h in saved["pretrain"]["history"]] == [4, 8, 12]

    keep = ("step", "train/loss", "train/lr", "val/mlm_loss")  # tokens_per_s is a timing
    rows = lambda name: [{k: r.get(k, "") for k in keep} for r in csv_rows(tmp_path / name / "pretrain" / "metrics.csv")]  # noqa: E731
    assert rows("resumed") == rows("full")
    assert min(int(r["step"]) for r in rows("resumed")) < 4
