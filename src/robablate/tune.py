"""Per-arm peak-LR tuning, RoBERTa's protocol for comparing batch sizes (§4.3, Table 3: the peak LR
was tuned for each batch size, 256 -> 1e-4, 2K -> 7e-4, 8K -> 1e-3).

Comparing arms at fixed LRs compares learning rates as much as the axis: an LR tuned at one scale is
not the best at another. With `tune.lr=[...]` an arm first runs one short pilot pretraining per LR
(`tune.tokens` tokens fed, default tune.fraction x the run's budget; seed tune.seed, the same for every
seed of the arm) and keeps the LR whose pilot reaches the lowest validation MLM loss on documents held
out of the training split (data/pretrain_data.split_tail, via datamodule.prepare): never the corpus'
validation split, which the reported numbers use. The choice is cached in <cache_dir>/tune/<key>,
keyed by everything that defines the arm except seed and LR, and built under a file lock
(io.atomic_dir), so the seeds of a sweep tune once and concurrent jobs wait for the first. The
compared run then uses the chosen LR.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from robablate.config import Plan, validate
from robablate.errors import ConfigError
from robablate.io import atomic_dir, atomic_write_json, cache_key
from robablate.schema import NOT_ARM_KEYS

TUNE_VERSION = 1  # bump when pilots or the rule change: old choices are then not reused
# Keys a pilot's choice does not depend on: the keys that are not part of an arm (schema.NOT_ARM_KEYS:
# every seed of an arm uses one LR), the LR under tuning, and what runs after pretraining (read-outs,
# the control switch, the validation schedule). The tuning cache key is the arm without them.
PILOT_IGNORED_KEYS = (*NOT_ARM_KEYS, "batch.lr", "optimizer.lr", "glue", "eval", "model.init",
                      "train.val_every_steps")


def selection_rule(tokens: int, seed: int) -> str:
    return (f"argmin over tune.lr of the final validation MLM loss (fixed masks) on documents held out of "
            f"the training split, after one pilot pretraining per LR of {tokens} tokens fed at seed {seed} "
            f"with the arm's config otherwise; ties go to the smaller LR; a diverged pilot counts as +inf")


def arm_key(cfg: DictConfig) -> str:
    """Hash of the arm's definition without seed and LR (PILOT_IGNORED_KEYS): the tuning cache key."""
    arm = OmegaConf.to_container(cfg, resolve=True)
    for key in PILOT_IGNORED_KEYS:
        *parents, last = key.split(".")
        node = arm
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return cache_key("tune", TUNE_VERSION, arm)


def select_lr(val_loss_by_lr: dict[float, float]) -> float:
    """The LR with the lowest loss; ties go to the smaller LR; non-finite losses (diverged) never win."""
    finite = {lr: loss for lr, loss in val_loss_by_lr.items() if loss is not None and math.isfinite(loss)}
    if not finite:
        raise ConfigError(f"Invalid config `tune.lr`: every learning rate of the grid {sorted(val_loss_by_lr)} "
                          "diverged in its pilot run; use smaller learning rates.")
    return min(finite, key=lambda lr: (finite[lr], lr))


def pilot_config(cfg: DictConfig, plan: Plan) -> DictConfig:
    """The arm's config for the pilots: seed tune.seed, budget tune.tokens, one device, no logger,
    validation only at the end; the micro-batch is the arm's, so a pilot fits where the run fits."""
    pcfg = copy.deepcopy(cfg)
    with open_dict(pcfg):
        pcfg.seed = int(OmegaConf.select(cfg, "tune.seed", default=0))
        pcfg.tune.lr = None
        pcfg.train.tokens = plan.tune_tokens
        pcfg.train.max_steps = None
        pcfg.train.stop_at_step = None
        pcfg.train.val_every_steps = None
        pcfg.train.checkpoint_every_steps = None
        pcfg.resume = False
        pcfg.batch.micro_batch_size = plan.micro_batch
        pcfg.trainer.devices, pcfg.trainer.num_nodes, pcfg.trainer.strategy = 1, 1, "auto"
        pcfg.trainer.enable_progress_bar = False
        pcfg.logger = {"name": "none"}
    pilot = validate(pcfg)
    with open_dict(pcfg):
        pcfg.train.val_every_steps = pilot.total_steps  # the selection reads the final validation only
        warmup = OmegaConf.select(cfg, "scheduler.warmup_steps")
        if warmup is not None:  # a fixed warmup shrinks with the run, as warmup_fraction does
            pcfg.scheduler.warmup_steps = int(round(warmup * pilot.total_steps / plan.total_steps))
    return pcfg


def _pilot(plan: Plan, data: Any, run_dir: Path) -> dict[str, Any]:
    """One pilot pretraining; its final validation MLM loss (inf when it diverged) and size."""
    from robablate.pretrain import TrainingDiverged, pretrain

    try:
        _, section = pretrain(plan, data, run_dir)
    except TrainingDiverged as e:
        return {"val_mlm_loss": math.inf, "error": str(e)}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # checkpoints: only the number is kept
    loss = section["val_mlm_loss"]
    return {"val_mlm_loss": loss if loss is not None and math.isfinite(loss) else math.inf,
            "steps": section["steps"], "tokens_seen": section["tokens_seen"]}


def run_pilots(cfg: DictConfig, plan: Plan, work: Path) -> dict[str, Any]:
    """Pilot every LR of plan.tune_lr on the held-out split and apply the selection rule."""
    from robablate.datamodule import prepare

    t0 = time.perf_counter()
    pcfg = pilot_config(cfg, plan)
    pplan = validate(pcfg)
    data = prepare(pplan, tune_split=True)
    pilots = {}
    for lr in plan.tune_lr:
        print(f"[robablate] tune: pilot at lr={lr:g} ({pplan.total_steps} steps, {plan.tune_tokens} tokens)",
              file=sys.stderr)
        pilots[lr] = _pilot(replace(pplan, lr=lr), data, work / f"lr={lr:g}")
    losses = {lr: p["val_mlm_loss"] for lr, p in pilots.items()}
    chosen = select_lr(losses)
    seed = pplan.specs.seed
    return {
        "lr_grid": list(plan.tune_lr), "chosen_lr": chosen, "rule": selection_rule(plan.tune_tokens, seed),
        # JSON has no infinity: a diverged pilot's loss is null (and listed under "diverged").
        "val_loss_by_lr": {f"{lr:g}": (v if math.isfinite(v) else None) for lr, v in losses.items()},
        "diverged": [lr for lr, v in losses.items() if not math.isfinite(v)],
        "at_edge": chosen in (plan.tune_lr[0], plan.tune_lr[-1]),
        "tokens": plan.tune_tokens, "steps": pplan.total_steps, "seed": seed,
        "split": data.stats["split"]["val"], "wall_s": time.perf_counter() - t0,
    }


def tune_lr(cfg: DictConfig, plan: Plan) -> dict[str, Any] | None:
    """results["tune"] for this arm (running the pilots unless its choice is cached), or None when
    the config has no LR grid. The caller trains at result["chosen_lr"]."""
    if plan.tune_lr is None:
        return None
    key = arm_key(cfg)
    ran = []

    def build(tmp: Path) -> None:
        result = run_pilots(cfg, plan, tmp)
        atomic_write_json(tmp / "choice.json", result)
        ran.append(True)

    folder = atomic_dir(plan.specs.cache_dir / "tune" / key, build)
    result = json.loads((folder / "choice.json").read_text())
    result.update(cached=not ran, cache_key=key)
    if result["at_edge"]:
        warnings.warn(f"tune: the chosen LR {result['chosen_lr']:g} is at the edge of tune.lr={result['lr_grid']}: "
                      "the best LR may lie outside the grid; extend it past that end.", stacklevel=2)
    return result
