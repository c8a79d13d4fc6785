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
