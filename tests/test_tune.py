"""Per-arm LR tuning (tune.py): grid checks, the selection rule, the held-out split, the per-arm cache,
and an end-to-end run where an absurd LR in the grid is not chosen and the choice is reused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import compose_cfg
from robablate.config import validate
from robablate.data.pretrain_data import split_tail
from robablate.errors import ConfigError
from robablate.tune import arm_key, select_lr
from test_formats import random_corpus


@pytest.mark.parametrize("grid", ["[1e-3]", "[1e-3,1e-3]", "[0,1e-3]", "[-1e-3,1e-3]", "[1e-3,abc]", "3e-4",
                                  "[]", "[1e-3,2.0]", "[1e-3,true]"])
def test_bad_grids_are_refused_naming_tune_lr(grid):
    with pytest.raises(ConfigError, match=r"`tune\.lr`"):
        validate(compose_cfg([f"tune.lr={grid}"]))


def test_grid_and_pilot_budget_in_the_plan():
    plan = validate(compose_cfg(["tune.lr=[3e-3,3e-4,1e-3]", "train.tokens=1_000_000"]))
    assert plan.tune_lr == [3e-4, 1e-3, 3e-3]
    # Default: a quarter of the run's budget, which batch.unit=tokens feeds exactly (train.tokens).
    assert plan.tune_tokens == math.ceil(0.25 * 1_000_000)
    seqs = validate(compose_cfg(["tune.lr=[1e-4,1e-3]", "train.tokens=1_000_000", "batch.unit=sequences"]))
    assert seqs.tune_tokens == math.ceil(0.25 * seqs.total_steps * seqs.tokens_per_step_target)  # nominal budget
    assert validate(compose_cfg(["tune.lr=[1e-4,1e-3]", "tune.tokens=5000"])).tune_tokens == 5000
    assert validate(compose_cfg([])).tune_lr is None
    with pytest.raises(ConfigError, match=r"`tune\.fraction`"):
        validate(compose_cfg(["tune.lr=[1e-4,1e-3]", "tune.fraction=1.5"]))
    with pytest.raises(ConfigError, match=r"`tune\.seed`"):
        validate(compose_cfg(["tune.lr=[1e-4,1e-3]", "tune.seed=-1"]))


def test_selection_rule():
    assert select_lr({1e-4: 7.0, 1e-3: 6.1, 3e-3: 6.4}) == 1e-3
    assert select_lr({1e-4: 6.1, 1e-3: 6.1}) == 1e-4  # ties: the smaller LR
    assert select_lr({1e-3: 6.5, 1e-2: math.inf, 3e-2: math.nan}) == 1e-3  # diverged pilots never win
    with pytest.raises(ConfigError, match=r"`tune\.lr`"):
        select_lr({1e-2: math.inf, 3e-2: math.nan})


def test_arm_key_ignores_seed_lr_and_run_settings_only():
    base = ["tune.lr=[1e-4,1e-3]"]
    key = arm_key(compose_cfg(base))
    same = ["seed=7", "batch.lr=5e-4", "optimizer.lr=2e-4", "run_dir=/tmp/x", "glue=none", "logger=none",
            "trainer.devices=2", "train.stop_at_step=3"]
    for o in same:
        assert arm_key(compose_cfg([*base, o])) == key, o
    for o in ["batch=bs256", "format=sentence_pair", "masking=dynamic", "train.tokens=1000", "tune.lr=[1e-4,3e-3]",
              "tune.seed=1", "model=mini", "optimizer=roberta"]:
        assert arm_key(compose_cfg([*base, o])) != key, o


def test_tune_split_holds_out_the_last_documents():
    cache, _ = random_corpus(0, 40, (1, 8), (2, 20))  # token id = 5 + position: provenance is visible
    head, tail, k = split_tail(cache, 500)
    assert 1 <= k <= 20 and head.n_docs + tail.n_docs == cache.n_docs == 40
    assert len(tail.tokens) >= 500 or k == 20
    # The fewest documents: without the first of them the tail would hold fewer than 500 tokens.
    assert k == 20 or len(tail.tokens) - (tail.sent_offsets[tail.doc_offsets[1]]) < 500
    both = np.concatenate([np.asarray(head.tokens), np.asarray(tail.tokens)])
    assert (both == np.asarray(cache.tokens)).all()  # a partition, in order: disjoint and complete
    for part in (head, tail):  # valid caches: offsets start at 0 and end at the counts
        assert part.sent_offsets[0] == 0 and part.sent_offsets[-1] == len(part.tokens)
        assert part.doc_offsets[0] == 0 and part.doc_offsets[-1] == part.n_sentences
    assert split_tail(cache, 10**9)[2] == 20  # never more than half the documents


@pytest.mark.slow
def test_tune_split_is_disjoint_from_the_reported_validation(tmp_path, cache_dir):
    from robablate.datamodule import prepare

    cfg = compose_cfg(["experiment=smoke", "glue=none", f"cache_dir={cache_dir}", "nsp=false",
                       "train.val_instances=32"])
    plan = validate(cfg)
    reported, pilot = prepare(plan), prepare(plan, tune_split=True)
    rows = lambda inst: {inst.input_ids[i, :n].tobytes() for i, n in enumerate(inst.lengths)}  # noqa: E731
    tune_val, report_val = rows(pilot.val_mlm), rows(reported.val_mlm)
    assert tune_val and not tune_val & report_val
    # The pilots train without the held-out documents: fewer tokens, none of the tune split's rows.
    assert pilot.stats["train_tokens"] < reported.stats["train_tokens"]
    assert not tune_val & rows(pilot.phases[0])
    assert "held out" in pilot.stats["split"]["val"]


@pytest.mark.slow
def test_absurd_lr_is_not_chosen_and_the_choice_is_cached(tmp_path, cache_dir, monkeypatch):
    import robablate.tune as tune
    from robablate.pipeline import run

    def arm(seed: int, *extra: str):
        return compose_cfg(["experiment=smoke", "glue=none", "logger=none", "trainer.enable_progress_bar=false",
                            "nsp=false", "train.max_steps=12", "train.val_every_steps=12", "train.val_instances=32",
                            "tune.lr=[1e-7,1e-3]", "tune.tokens=40000", f"seed={seed}", f"cache_dir={cache_dir}",
                            f"run_dir={tmp_path / f'seed{seed}{len(extra)}'}", *extra])

    pilots = []
    real = tune._pilot
    monkeypatch.setattr(tune, "_pilot", lambda *a: pilots.append(a[0].lr) or real(*a))
    monkeypatch.setattr(tune, "TUNE_VERSION", f"test-{tmp_path.name}")  # a fresh key in the shared cache
    first = run(arm(0))
    t = first["tune"]
    assert pilots == [1e-7, 1e-3] and t["cached"] is False
    assert t["chosen_lr"] == 1e-3 and first["plan"]["lr"] == 1e-3
    assert t["val_loss_by_lr"]["0.001"] < t["val_loss_by_lr"]["1e-07"] - 0.5  # the absurd LR barely learns
    assert t["lr_grid"] == [1e-7, 1e-3] and t["tokens"] == 40000 and "held out" in t["split"]
    assert "smaller LR" in t["rule"]
    second = run(arm(1))  # another seed of the same arm: the cached choice, no pilot
    assert pilots == [1e-7, 1e-3] and second["tune"]["cached"] is True
    assert second["plan"]["lr"] == 1e-3 and second["tune"]["val_loss_by_lr"] == t["val_loss_by_lr"]
    # The compared run is a plain run at the chosen LR: the pilots before it leave no trace in it.
    plain = run(arm(0, "tune.lr=null", "batch.lr=1e-3"))
    assert "tune" not in plain and plain["pretrain"]["val_mlm_loss"] == first["pretrain"]["val_mlm_loss"]
