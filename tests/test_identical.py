"""Comparisons that cannot differ (issue 25): static masking within dupe_factor epochs is dynamic
masking, named before compute, and the training fingerprint shows it (and shows when it stops)."""

from __future__ import annotations

import pytest

from conftest import compose_cfg

from robablate.config import validate
from robablate.identical import fingerprint, masking_coverage, masking_warning

# A tiny corpus so a small budget makes many passes: 200 documents, a few thousand tokens.
SMALL = ["experiment=smoke", "corpus.num_docs=200", "train.val_instances=16", "glue=none"]


def _arm(cache_dir, *overrides: str):
    from robablate.datamodule import prepare

    cfg = compose_cfg([*SMALL, f"cache_dir={cache_dir}", *overrides])
    plan = validate(cfg)
    return plan, prepare(plan)


def _digest(cache_dir, *overrides: str) -> tuple[str, dict]:
    plan, data = _arm(cache_dir, *overrides)
    return fingerprint(plan, data)["digest"], masking_coverage(plan, data)


def test_static_within_dupe_factor_epochs_is_dynamic_and_warns(cache_dir):
    plan, data = _arm(cache_dir, "masking=static", "train.tokens=150000")
    cov = masking_coverage(plan, data)
    assert cov["data_epochs"] <= cov["dupe_factor"] and cov["same_as_dynamic"]
    assert cov["static_copy_views"] == pytest.approx(cov["epochs"] / 10, abs=1e-3)
    msg = masking_warning(cov, plan)
    assert f"dupe_factor {cov['dupe_factor']}" in msg and "train.tokens>=" in msg
    assert f"masking.dupe_factor<={cov['data_epochs'] - 1}" in msg
    static, _ = _digest(cache_dir, "masking=static", "train.tokens=150000")
    dynamic, cov_d = _digest(cache_dir, "masking=dynamic", "train.tokens=150000")
    assert static == dynamic
    assert "static_copy_views" not in cov_d and masking_warning(cov_d, plan) is None


def test_the_fix_the_warning_names_makes_the_arms_differ(cache_dir):
    plan, data = _arm(cache_dir, "masking=static", "train.tokens=150000")
    cov = masking_coverage(plan, data)
    assert cov["data_epochs"] >= 2  # else dupe_factor cannot go low enough
    fewer = f"masking.dupe_factor={cov['data_epochs'] - 1}"
    static, cov_s = _digest(cache_dir, "masking=static", fewer, "train.tokens=150000")
    dynamic, _ = _digest(cache_dir, "masking=dynamic", "train.tokens=150000")
    assert not cov_s["same_as_dynamic"] and masking_warning(cov_s, plan) is None
    assert static != dynamic
    # ... and so does a budget past dupe_factor epochs, at the default dupe_factor.
    tokens = int(masking_warning(cov, plan).split("train.tokens>=")[1].split()[0].replace("_", ""))
    static, cov_s = _digest(cache_dir, "masking=static", f"train.tokens={tokens}")
    dynamic, _ = _digest(cache_dir, "masking=dynamic", f"train.tokens={tokens}")
    assert cov_s["data_epochs"] > cov_s["dupe_factor"] and static != dynamic


def test_fingerprint_sees_seed_lr_and_budget(cache_dir):
    base, _ = _digest(cache_dir, "train.tokens=150000")
    assert base == _digest(cache_dir, "train.tokens=150000")[0]  # deterministic
    for other in (["seed=1"], ["batch.lr=3e-4"], ["train.tokens=160000"], ["masking.mask_prob=0.2"]):
        assert _digest(cache_dir, "train.tokens=150000", *other)[0] != base, other


def test_sweep_log_in_a_file_names_identical_arms_and_holds_no_bars(tmp_path, cache_dir):
    """The README's first sweep at a budget below dupe_factor epochs, output redirected to a file (not a
    terminal): one warning naming the identical arms before the first job, no per-batch bar lines, one
    plain progress line per validation, and equal fingerprints in results.json."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    log = tmp_path / "log"
    env = {**os.environ, "ROBABLATE_CACHE": str(cache_dir), "HYDRA_FULL_ERROR": "1"}
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "run.py", "-m", "experiment=smoke", "glue=none", "masking=static,dynamic",
                               "train.tokens=8000", "train.val_every_steps=1", "train.val_instances=32",
                               f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    warnings = [line for line in text.splitlines() if "arms of this sweep train identically" in line]
    assert len(warnings) == 1 and "[masking=static] = [masking=dynamic]" in warnings[0] and "dupe_factor 10" in warnings[0]
    assert text.index("arms of this sweep train identically") < text.index("Launching 2 jobs")
    assert "DataLoader" not in text and "\r" not in text and "%|" not in text and "it/s" not in text
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("results.json"))]
    assert len(results) == 2
    steps = sum(r["pretrain"]["steps"] for r in results)
    assert len([line for line in text.splitlines() if line.startswith("[robablate] step ")]) == steps
    assert results[0]["pretrain"]["fingerprint"]["digest"] == results[1]["pretrain"]["fingerprint"]["digest"]
    assert [r["pretrain"]["val_mlm_loss"] for r in results][0] == results[1]["pretrain"]["val_mlm_loss"]


def test_identical_arms_groups_only_what_trains_the_same():
    from robablate.identical import identical_arms

    base = compose_cfg(["experiment=smoke"])
    dyn = compose_cfg(["experiment=smoke", "masking=dynamic"])
    other = compose_cfg(["experiment=smoke", "masking=dynamic", "seed=1"])
    same = lambda cfg: ({"same_as_dynamic": True, "dupe_factor": 10, "epochs": 0.5, "data_epochs": 1}, validate(cfg))  # noqa: E731
    differ = lambda cfg: ({"same_as_dynamic": False}, validate(cfg))  # noqa: E731
    groups, notes = identical_arms([("s", base), ("d", dyn), ("d1", other)], same)
    assert groups == [["s", "d"]] and len(notes) == 1
    assert identical_arms([("s", base), ("d", dyn)], differ) == ([], [])
    # the same config twice is identical training whatever the masking
    assert identical_arms([("a", dyn), ("b", dyn.copy())], differ)[0] == [["a", "b"]]


def test_bars_at_a_terminal_plain_lines_in_a_file(monkeypatch):
    import io

    from robablate import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    assert type(progress.step_progress(10, 40960)).__name__ == "StepProgressBar"
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert type(progress.step_progress(10, 40960)).__name__ == "StepProgressLog"
    line = progress.progress_line(4, 10, 16384, 40960, {"train/loss": 8.5, "val/mlm_loss": 7.25,
                                                         "train/tokens_per_s": 12345.6, "train/lr": 1e-3})
    assert line == ("[robablate] step 4/10 · tokens 16.4k/41.0k · train loss 8.5000 · val MLM loss 7.2500 · "
                    "tokens/s 12,346")
