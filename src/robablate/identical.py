"""Comparisons that cannot differ, named before compute.

Static masking keeps dupe_factor masked copies and data epoch e uses copy e % dupe_factor
(data/masking.py mask_epoch), so while a run enters at most dupe_factor data epochs every epoch sees a
fresh copy and static masking *is* dynamic masking: the two arms train on the same batches to the last
bit (RoBERTa §4.1 compares them at 10 copies over 40 epochs). `masking_coverage` gives the numbers,
`masking_warning` the message with the fix, `SweepCheck` names such arms of a `-m` sweep once before
any job runs, and `fingerprint` hashes what an arm trained on, so the report can name any two arms
with the same training (whatever made them so) "identical training".
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import asdict
from typing import Any

from hydra.experimental.callback import Callback

from robablate.config import Plan
from robablate.data.batching import BatchPlanSampler
from robablate.data.pretrain_data import MaskedBatches, PreparedData

FIRST_STEPS = 2      # the first global batches hashed whole (data order, masks, formats)
MAX_EPOCHS = 1000    # data epochs whose first batch is hashed (static vs dynamic differ from epoch dupe_factor)


def _samplers(plan: Plan, data: PreparedData, seed: int) -> list[BatchPlanSampler]:
    """Rank 0's sampler of each seq_len phase, from step 0 (the training order: datamodule.PhasedSampler)."""
    return [BatchPlanSampler(data.phases[p].lengths, seed=seed, batch_size=plan.global_batch,
                             tokens_per_batch=ph.tokens_per_step if plan.token_batching else None,
                             accumulate=plan.accumulate, world_size=plan.world_size, rank=0, start_step=0,
                             max_steps=ph.steps, phase=p)
            for p, ph in enumerate(plan.phases)]


def masking_coverage(plan: Plan, data: PreparedData) -> dict[str, Any]:
    """How many passes over the training instances the budget makes: `epochs` (whole passes plus the
    share of the last, per seq_len phase, the largest), `data_epochs` (data epochs the run enters) and,
    for static masking, `static_copy_views` (times each masked copy is seen, epochs / dupe_factor)
    and `same_as_dynamic` (data_epochs <= dupe_factor: every epoch a fresh copy)."""
    spec = plan.specs
    epochs, entered = [], []
    for sampler, ph in zip(_samplers(plan, data, spec.seed), plan.phases):
        starts = sampler.epoch_first_steps(sys.maxsize)
        # Whole passes, plus the share of the last epoch's batches the run takes (an epoch's tail that
        # fills no batch is dropped, so this counts batches, not tokens).
        epochs.append(len(starts) - 1 + (ph.steps - starts[-1]) / len(sampler.plan(len(starts) - 1)))
        entered.append(len(starts))
    out: dict[str, Any] = {"epochs": round(max(epochs), 3), "data_epochs": max(entered),
                           "masking": spec.masking.name}
    if spec.masking.name == "static":
        dupe = int(spec.masking.dupe_factor)
        out.update(dupe_factor=dupe, static_copy_views=round(max(epochs) / dupe, 3),
                   same_as_dynamic=max(entered) <= dupe)
    return out


def masking_warning(cov: dict[str, Any], plan: Plan) -> str | None:
    """The message for a static arm that trains exactly as dynamic at this budget (None otherwise),
    with the two ways out: more tokens (more passes) or fewer copies."""
    if not cov.get("same_as_dynamic"):
        return None
    dupe, epochs, entered = cov["dupe_factor"], cov["epochs"], cov["data_epochs"]
    budget = plan.total_steps * plan.tokens_per_step_target
    # The arms differ once the run enters data epoch dupe_factor + 1 (copy 0 again, where dynamic
    # draws a fresh mask): about (dupe_factor + 1) / epochs x the budget.
    tokens_needed = math.ceil(budget * (dupe + 1) / max(epochs, 1e-9) / 1e5) * 100_000
    fewer = f"masking.dupe_factor<={entered - 1}" if entered > 1 else \
        "a budget of more than one pass"
    return (f"static masking at this budget is the same training as dynamic: {epochs:g} epochs "
            f"({entered} data epoch{'s' if entered != 1 else ''}) <= dupe_factor {dupe}, so every epoch sees "
            f"a fresh copy. The arms differ once epochs exceed dupe_factor: train.tokens>={tokens_needed:_} "
            f"or {fewer} (or a smaller corpus, as experiment=roberta_table1 does).")


def warn_masking(cov: dict[str, Any], plan: Plan) -> None:
    msg = masking_warning(cov, plan)
    if msg:
        print(f"robablate: warning: {msg}", file=sys.stderr, flush=True)


def _lr_points(plan: Plan) -> list[float]:
    """The LR schedule at a few steps: start, end of warmup, middle, last."""
    import torch

    from robablate.optim import build_scheduler

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=plan.lr)
    sched = build_scheduler(opt, plan.specs.schedule, plan.total_steps)
    steps = sorted({0, 1, plan.warmup_steps, plan.total_steps // 2, plan.total_steps - 1})
    return [round(plan.lr * sched.lr_lambdas[0](s), 12) for s in steps]


def fingerprint(plan: Plan, data: PreparedData, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A hash of what this arm trains on, computed before training from the same pure functions the
    data loader uses (it touches no RNG, so training numbers do not change): the first FIRST_STEPS
    global batches of each phase and the first batch of every data epoch (input ids, labels, NSP
    labels: masks and order), the token budget, the LR schedule at a few steps, and the settings that
    act beside the data (model, optimizer, precision, `extra`: the read-outs' config). Two arms with
    equal `digest` run the same pretraining; results["pretrain"]["fingerprint"]["digest"]."""
    spec = plan.specs
    dataset = MaskedBatches(data, spec.masking, spec.seed, pack=False)
    h = hashlib.sha256()
    sampled = 0
    for p, sampler in enumerate(_samplers(plan, data, spec.seed)):
        steps = set(range(min(FIRST_STEPS, plan.phases[p].steps))) | set(sampler.epoch_first_steps(MAX_EPOCHS))
        for s in sorted(steps):
            e, idx = sampler.global_batch(s)
            batch = dataset[(p, e, idx)]
            for key in ("input_ids", "mlm_labels", "nsp_labels"):
                if batch.get(key) is not None:
                    h.update(key.encode())
                    h.update(batch[key].numpy().tobytes())
            sampled += 1
    batches = h.hexdigest()
    parts = {
        "batches": batches, "sampled_batches": sampled, "steps": plan.total_steps,
        "tokens": plan.total_steps * plan.tokens_per_step_target, "lr": _lr_points(plan),
        "settings": {"model": asdict(spec.model), "optimizer": asdict(spec.optimizer), "nsp": plan.nsp,
                     "precision": plan.precision, "seed": spec.seed, **(extra or {})},
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"digest": digest, "batches": batches[:16], "sampled_batches": sampled, "tokens": parts["tokens"],
            "lr": parts["lr"]}


def training_checks(plan: Plan, data: PreparedData, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Before the first step: warn when static masking is dynamic at this budget; return the fields
    results["pretrain"] records (epochs, data_epochs, static_copy_views for static masking, fingerprint)."""
    cov = masking_coverage(plan, data)
    warn_masking(cov, plan)
    out = {k: cov[k] for k in ("epochs", "data_epochs", "static_copy_views") if k in cov}
    out["fingerprint"] = fingerprint(plan, data, extra)
    return out


# --- a `-m` sweep: name the arms that would train identically, once, before any job runs ---------------

# Keys that change where and how a run is recorded, not what it trains on.
NOT_TRAINING = ("hydra", "experiment_name", "run_dir", "logger", "cache_dir")


def _training_key(cfg: Any, as_dynamic: bool = False) -> str:
    """The resolved config minus NOT_TRAINING, with static masking written as dynamic when `as_dynamic`."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for k in NOT_TRAINING:
        out.pop(k, None)
    if as_dynamic:
        out["masking"] = {**out["masking"], "name": "dynamic", "dupe_factor": None}
    return json.dumps(out, sort_keys=True, default=str)


def identical_arms(jobs: list[tuple[str, Any]], coverage: Any) -> tuple[list[list[str]], list[str]]:
    """Groups of job names (two or more) whose configs train identically, and the masking messages
    behind them. `jobs`: (name, composed config without hydra); `coverage(cfg)` -> (masking_coverage,
    Plan) of a static arm, asked only for arms whose dynamic twin is in the sweep or that share one."""
    keys = {name: _training_key(cfg) for name, cfg in jobs}
    twins = {name: _training_key(cfg, as_dynamic=True) for name, cfg in jobs if cfg.masking.name == "static"}
    counts: dict[str, int] = {}
    for name in keys:
        counts[twins.get(name, keys[name])] = counts.get(twins.get(name, keys[name]), 0) + 1
    notes: list[str] = []
    for name, cfg in jobs:
        if name in twins and counts[twins[name]] > 1:
            cov, plan = coverage(cfg)
            if cov.get("same_as_dynamic"):
                keys[name] = twins[name]
                notes.append(masking_warning(cov, plan))
    groups: dict[str, list[str]] = {}
    for name, key in keys.items():
        groups.setdefault(key, []).append(name)
    return [g for g in groups.values() if len(g) > 1], notes


def _arm_names(jobs: list[list[str]]) -> list[str]:
    """Each job named by the overrides that vary across the sweep."""
    common = set.intersection(*(set(j) for j in jobs)) if jobs else set()
    return [" ".join(o for o in job if o not in common) or "(defaults)" for job in jobs]


class SweepCheck(Callback):
    """Hydra callback (conf/hydra/default.yaml): at the start of a `-m` sweep, compose each job's config
    and warn once, naming the arms, when two of them would be the same training."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        try:
            msg = self.message(config)
        except Exception as e:  # noqa: BLE001 - a check must never stop a sweep; each job checks itself
            msg = f"could not check the sweep for identical arms ({type(e).__name__}: {e})"
        if msg:
            print(f"robablate: warning: {msg}", file=sys.stderr, flush=True)

    @staticmethod
    def message(config: Any) -> str | None:
        from robablate.config import validate
        from robablate.errors import RobablateError
        from robablate.relaunch import job_config, sweep_jobs

        if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None  # another sweeper splits jobs its own way
        jobs = sweep_jobs(config)
        if len(jobs) < 2:
            return None
        composed = []
        for name, job in zip(_arm_names(jobs), jobs):
            _, cfg = job_config(config, job)
            try:
                validate(cfg)
            except RobablateError:
                continue  # the job itself reports its error
            composed.append((name, cfg))
        prepared: dict[str, Any] = {}

        def coverage(cfg: Any) -> tuple[dict[str, Any], Plan]:
            from robablate.datamodule import prepare

            plan = validate(cfg)
            key = _training_key(cfg, as_dynamic=True)
            if key not in prepared:
                prepared[key] = prepare(plan)
            return masking_coverage(plan, prepared[key]), plan

        groups, notes = identical_arms(composed, coverage)
        if not groups:
            return None
        listed = "; ".join(" = ".join(f"[{n}]" for n in g) for g in groups)
        why = f" Why: {notes[0]}" if notes else ""
        return (f"arms of this sweep train identically, so comparing them can show nothing: {listed}.{why}")
