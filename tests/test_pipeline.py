"""End to end on CPU: the smoke arm runs, the switches change what the model is fed, runs repeat
exactly, and a resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import arm_cfg, run_arm, shared_data
from robablate.config import validate
from robablate.errors import DataError

# Arms: conftest.run_arm, a few seconds each (the smoke preset, made smaller still, no fine-tuning
# unless a test wants it).


def pretrain_metrics(res: dict) -> dict:
    return {k: res["pretrain"][k] for k in ("val_mlm_loss", "val_mlm_acc", "val_nsp_acc", "train_loss", "steps",
                                             "tokens_seen")}


@pytest.mark.slow
def test_smoke_writes_results_with_finite_metrics(tmp_path, cache_dir) -> None:
    _, res = run_arm(tmp_path, cache_dir, "masking=dynamic", "nsp=false")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["schema_version"] == 1 and saved["status"] == "complete"
    assert saved["axes"]["masking"] == "dynamic" and saved["axes"]["format"] == "full_sentences"
    p = saved["pretrain"]
    for k in ("val_mlm_loss", "val_mlm_ppl", "val_mlm_acc", "tokens_per_s"):
        assert math.isfinite(p[k]), k
    assert p["val_nsp_acc"] is None
    assert p["tokens_seen"] > 0 and p["steps"] == saved["plan"]["total_steps"]
    # MFU on CPU too: against the matmul peak measured once into the cache (robablate/peak.py)
    assert p["peak_flops"] > 0 and 0 < p["mfu"] and math.isfinite(p["mfu"])
    assert p["peak_flops"] in json.loads((cache_dir / "peak_flops.json").read_text()).values()
    assert p["history"] and p["history"][-1]["step"] == p["steps"]
    env = saved["environment"]
    assert env["packages"]["torch"] and env["data_fingerprint"] and "device" in env
    # The loss went down from its start: training does something.
    assert p["history"][-1]["val_mlm_loss"] < p["history"][0]["val_mlm_loss"] or len(p["history"]) == 1
    # The exported encoder loads in transformers and predicts what the native model predicts.
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from robablate.models.hf_export import load_native_from_hf

    hf_dir = tmp_path / "run" / "pretrain" / "hf"
    tok = AutoTokenizer.from_pretrained(hf_dir)
    batch = tok(["the first sentence of a test", "and a second one"], return_tensors="pt", padding=True)
    hf = AutoModelForMaskedLM.from_pretrained(hf_dir).eval()
    native = load_native_from_hf(hf_dir).eval()
    with torch.no_grad():
        ours = native.mlm_logits(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"].bool())
        theirs = hf(**batch).logits
    keep = batch["attention_mask"].bool()
    assert (ours[keep] - theirs[keep]).abs().max() < 1e-4  # same math, different kernels (fp32)


@pytest.mark.slow
def test_bert_arm_runs_with_nsp(tmp_path, cache_dir) -> None:
    _, res = run_arm(tmp_path, cache_dir, "masking=static", "nsp=true", "format=segment_pair")
    assert res["axes"]["nsp"] is True and 0.0 <= res["pretrain"]["val_nsp_acc"] <= 1.0


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path, cache_dir) -> None:
    _, a = run_arm(tmp_path, cache_dir, "seed=3", name="a")
    _, b = run_arm(tmp_path, cache_dir, "seed=3", name="b")
    _, c = run_arm(tmp_path, cache_dir, "seed=4", name="c")
    assert pretrain_metrics(a) == pretrain_metrics(b)
    assert pretrain_metrics(a)["val_mlm_loss"] != pretrain_metrics(c)["val_mlm_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_resumed_run_equals_uninterrupted(tmp_path, cache_dir, precision) -> None:
    # Validations at 4, 8, 12; CSV rows every 2 steps; the stop at step 9 falls between two validations
    # (8, 12) and between two log points (rows of steps 8 and 10). Issue 12: before the fix, metrics.csv
    # lost every row before the checkpoint and the history lost the validation at step 8. Both
    # precisions `auto` can pick on CPU: the resumed validation once ran outside bf16's autocast.
    common = ["seed=1", "train.max_steps=12", "train.val_every_steps=4", "masking=dynamic",
              "trainer.log_every_n_steps=2", f"train.precision={precision}"]
    _, full = run_arm(tmp_path, cache_dir, *common, name="full", logger="csv")
    _, part = run_arm(tmp_path, cache_dir, *common, "train.stop_at_step=9", name="resumed", logger="csv")
    assert part["status"] == "interrupted" and part["pretrain"]["steps"] == 9
    assert not (tmp_path / "resumed" / "results.json").exists()
    _, resumed = run_arm(tmp_path, cache_dir, *common, "resume=true", name="resumed", logger="csv")
    assert pretrain_metrics(resumed) == pretrain_metrics(full)

    steps = lambda res: [h["step"] for h in res["pretrain"]["history"]]  # noqa: E731
    assert steps(full) == [4, 8, 12]
    assert resumed["pretrain"]["history"] == full["pretrain"]["history"]
    saved = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert [h["step"] for h in saved["pretrain"]["history"]] == [4, 8, 12]

    keep = ("step", "train/loss", "train/lr", "val/mlm_loss")  # tokens_per_s is a timing
    rows = lambda name: [{k: r.get(k, "") for k in keep} for r in csv_rows(tmp_path / name / "pretrain" / "metrics.csv")]  # noqa: E731
    assert rows("resumed") == rows("full")
    assert min(int(r["step"]) for r in rows("resumed")) < 4

    # A checkpoint between two validations (every 3 steps: step 9 of 8 and 12): the resumed run trains
    # with the same dropout masks (the loaders' iterators draw from their own generator, not torch's
    # global RNG) and has no extra validation point at the stop.
    extra = ["train.checkpoint_every_steps=3"]
    run_arm(tmp_path, cache_dir, *common, *extra, "train.stop_at_step=9", name="off_grid", logger="csv")
    _, off_grid = run_arm(tmp_path, cache_dir, *common, *extra, "resume=true", name="off_grid", logger="csv")
    assert pretrain_metrics(off_grid) == pretrain_metrics(full)
    assert off_grid["pretrain"]["history"] == full["pretrain"]["history"]

    # Killed after step 8's checkpoint, before its validation (a SLURM requeue struck there once): on
    # disk, the checkpoint and the logs up to the training row of step 8. The resumed run validates step
    # 8 itself, and its metrics.csv row sits where the uninterrupted run has it (not after the last step).
    run_arm(tmp_path, cache_dir, *common, "train.stop_at_step=8", name="between", logger="csv")
    arm = tmp_path / "between" / "pretrain"
    assert Path(os.path.realpath(arm / "checkpoints" / "last.ckpt")).name == "step8.ckpt"
    history = json.loads((arm / "history.json").read_text())
    (arm / "history.json").write_text(json.dumps([h for h in history if h["step"] < 8]))
    with open(arm / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, logged = reader.fieldnames, list(reader)
    with open(arm / "metrics.csv", "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=header)
        out.writeheader()
        out.writerows(r for r in logged if int(r["step"]) < 7 or (int(r["step"]) == 7 and not r["val/mlm_loss"]))
    _, between = run_arm(tmp_path, cache_dir, *common, "resume=true", name="between", logger="csv")
    assert between["pretrain"]["history"] == full["pretrain"]["history"]
    assert rows("between") == rows("full")

    # Killed after the final step's checkpoint, before results.json (a SLURM requeue landing there):
    # the relaunch resumes with nothing left to train and still reports the run's last training loss.
    (tmp_path / "full" / "results.json").unlink()
    _, again = run_arm(tmp_path, cache_dir, *common, name="full", logger="csv")
    assert again["pretrain"]["steps"] == 12 and pretrain_metrics(again) == pretrain_metrics(full)


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fed_batches(cfg, n_steps: int):
    """The masked batches the trainer would be fed for the first n_steps (no training)."""
    from robablate.data.pretrain_data import MaskedBatches
    from robablate.datamodule import PhasedSampler, prepare

    plan = validate(cfg)
    data = prepare(plan)
    ds = MaskedBatches(data, cfg.masking, int(cfg.seed))
    it = iter(PhasedSampler(data, plan, int(cfg.seed), 0, lambda: 0))
    return data, plan, [(key, ds[key]) for key, _ in zip(it, range(n_steps * plan.accumulate))]


@pytest.mark.slow
def test_masking_switch_changes_what_is_fed(cache_dir, tmp_path) -> None:
    # Enough steps for several epochs over a small corpus: static repeats masks every dupe_factor
    # epochs, dynamic never repeats them.
    base = ["corpus.num_docs=150", "nsp=false", "train.max_steps=200"]
    out = {}
    for strategy in ("static", "dynamic"):
        extra = ["masking.dupe_factor=2"] if strategy == "static" else []
        cfg = arm_cfg(tmp_path, cache_dir, *base, f"masking={strategy}", *extra, name="")
        data, plan, batches = _fed_batches(cfg, 200)
        seen: dict[tuple[int, int], list[bytes]] = {}
        for (phase, epoch, idx), b in batches:
            lengths = b["attention_mask"].sum(1)
            for row, i in enumerate(idx):  # compare the real tokens only: padding depends on the batch
                seen.setdefault((int(i), epoch), []).append(b["input_ids"][row, : lengths[row]].numpy().tobytes())
        epochs = sorted({e for (_, e) in seen})
        assert len(epochs) >= 4, "corpus too large for this test: need several epochs"
        masks_per_instance = {}
        for (i, e), v in seen.items():
            masks_per_instance.setdefault(i, set()).update(v)
        out[strategy] = np.mean([len(s) for s in masks_per_instance.values()])
    assert out["static"] <= 2.0 + 1e-9          # dupe_factor=2 distinct masked copies
    assert out["dynamic"] > 3.0                 # a fresh mask each epoch


@pytest.mark.slow
def test_nsp_switch_changes_what_is_fed(cache_dir, tmp_path) -> None:
    _, _, with_nsp = _fed_batches(arm_cfg(tmp_path, cache_dir, "nsp=true", name=""), 3)
    _, _, without = _fed_batches(arm_cfg(tmp_path, cache_dir, "nsp=false", name=""), 3)
    labels = torch.cat([b["nsp_labels"] for _, b in with_nsp])
    assert set(labels.tolist()) == {0, 1}
    assert (torch.cat([b["token_type_ids"] for _, b in with_nsp]) == 1).any()  # a B segment exists
    assert (torch.cat([b["nsp_labels"] for _, b in without]) == -100).all()
    assert (torch.cat([b["token_type_ids"] for _, b in without]) == 0).all()


@pytest.mark.slow
def test_corpus_too_small_for_one_batch(tmp_path, cache_dir) -> None:
    docs = tmp_path / "tiny_corpus"
    docs.mkdir()
    (docs / "a.txt").write_text("one short sentence .\n\nanother document here .\n", encoding="utf-8")
    too_small = ["corpus=text", f"corpus.path={docs}", "corpus.val_fraction=0.5", "tokenizer.vocab_size=64",
                 "tokenizer.min_frequency=1"]
    with pytest.raises(DataError, match="fewer than one global batch"):
        run_arm(tmp_path, cache_dir, *too_small, "nsp=false")
    with pytest.raises(DataError, match="corpus `text`.*2 non-empty documents"):
        run_arm(tmp_path, cache_dir, *too_small, "nsp=true", name="nsp")


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_the_step(tmp_path, cache_dir, monkeypatch) -> None:
    from robablate.models.bert import BertForPretraining
    from robablate.pretrain import TrainingDiverged

    forward = BertForPretraining.forward
    calls = {"n": 0}

    def poisoned(self, *a, **kw):  # the guard is under test, not the model: poison step 3's loss
        out = forward(self, *a, **kw)
        calls["n"] += 1
        if self.training and calls["n"] >= 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(BertForPretraining, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="step 2"):
        run_arm(tmp_path, cache_dir, "masking=dynamic")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["status"] == "failed" and "step 2" in saved["error"]


@pytest.mark.slow
@pytest.mark.shared_data
def test_pretrains_on_wikitext2(tmp_path, cache_dir) -> None:
    wt2 = shared_data("corpus", "wikitext-2")
    _, res = run_arm(tmp_path, cache_dir, "corpus=text", f"corpus.path={wt2}", "corpus.train_glob=train.txt",
                 "corpus.val_glob=valid.txt", "corpus.document_boundary=heading", "corpus.max_docs=60",
                 "nsp=false")
    p = res["pretrain"]
    assert res["axes"]["corpus"] == "text" and math.isfinite(p["val_mlm_loss"]) and p["steps"] == 8
