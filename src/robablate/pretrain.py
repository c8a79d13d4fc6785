"""Pretraining from scratch: a thin Lightning module around models.bert.BertForPretraining.

The science lives in the pure functions it calls (masking, formats, batching, the model's loss on
selected positions only); this file wires them to a Trainer, logs validation MLM loss / perplexity /
masked-token accuracy / NSP accuracy on fixed validation masks, and keeps exact resume possible.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from robablate.collapse import judge, unigram_baseline
from robablate.config import Plan
from robablate.data.pretrain_data import PreparedData
from robablate.datamodule import PretrainDataModule
from robablate.errors import RobablateError
from robablate.models.bert import BertConfig, BertForPretraining, flops_per_token, mfu
from robablate.optim import OptimizerSpec, ScheduleSpec, build_optimizer, build_scheduler
from robablate.peak import compute_dtype, peak_flops
from robablate.progress import bars_fit_output, step_progress


class TrainingDiverged(RobablateError):
    """The loss became NaN or infinite; the message names the step."""


class PretrainModule(pl.LightningModule):
    def __init__(self, config: BertConfig, nsp: bool, optimizer: OptimizerSpec, schedule: ScheduleSpec, lr: float,
                 total_steps: int, compile: bool = False):
        super().__init__()
        # Recorded in checkpoints and hparams.yaml as plain values.
        self.save_hyperparameters({"model": asdict(config), "nsp": nsp, "optimizer": asdict(optimizer),
                                   "schedule": asdict(schedule), "lr": lr, "total_steps": total_steps,
                                   "compile": compile})
        self.config, self.optimizer_spec, self.schedule_spec = config, optimizer, schedule
        self.model = BertForPretraining(self.config, nsp=nsp)
        if not nsp:
            # The pooler feeds only the NSP head (BERT §3): without NSP it never gets a gradient, which
            # DDP refuses ("parameters that were not used in producing the loss"). Frozen, it is simply
            # not trained (as before: AdamW skips parameters without gradients) and DDP ignores it.
            self.model.encoder.pooler.requires_grad_(False)
        if compile:
            self.model.encoder = torch.compile(self.model.encoder)
        self.tokens_seen = 0          # non-pad tokens fed on this rank
        self.train_time = 0.0         # seconds in training steps (validation, checkpoints excluded), this rank
        self.history: list[dict[str, float]] = []
        self.last_loss = float("nan")
        self.peak_flops: float | None = None   # per device, for MFU (set by pretrain(): robablate/peak.py)
        self._batch = (0, 0, 0)                # (tokens, MLM-selected tokens, length) of the current batch
        self._window: deque = deque(maxlen=20)  # (tokens, flops, seconds) of the last micro-batches
        self._val: dict[int, dict[str, float]] = {}
        # Validation history as written to disk after each validation (pretrain/history.json): a
        # checkpoint is saved before the validation of its own step, so a resumed run takes that
        # validation from here instead of losing it.
        self.history_path: Path | None = None
        self.val_every_steps: int | None = None  # set by pretrain(): a resumed run's missing validation
        self._outside_loop = False  # _validate_now: a validation Lightning's loop does not know of

    # -- training ---------------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Count tokens while the batch is still on the host: on a GPU a .sum() per step would sync.
        if self._trainer is not None and self.trainer.training:
            mask = batch["attention_mask"]
            self._batch = (int(mask.sum()), int((batch["mlm_labels"] != -100).sum()), int(mask.shape[1]))
        return batch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(**batch, with_accuracy=False)  # training logs no accuracy: skip the argmax
        loss = out["loss"]
        self.last_loss = float(loss.detach())  # the step's one host sync (NaN check, results.json)
        if not math.isfinite(self.last_loss):
            raise TrainingDiverged(
                f"Pretraining loss became {self.last_loss} at optimizer step {self.global_step} "
                f"(micro-batch {batch_idx}); lower the learning rate (optimizer.lr / batch.lr), enable "
                f"clipping (optimizer.grad_clip) or use precision 32-true.")
        self.tokens_seen += self._batch[0]
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/mlm_loss", out["mlm_loss"])
        if out.get("nsp_loss") is not None:
            self.log("train/nsp_loss", out["nsp_loss"])
        return loss

    def record_step(self, seconds: float) -> None:
        """Called by StepTimer after each micro-batch: training time, and tokens/s and MFU over the last
        micro-batches (logged every step; Lightning writes them every trainer.log_every_n_steps)."""
        self.train_time += seconds
        tokens, selected, length = self._batch
        if tokens == 0:
            return
        flops = tokens * flops_per_token(self.config, length, selected / tokens)
        self.log("train/batch_tokens", float(tokens))  # real tokens of this micro-batch (experiments/bench_loop.py)
        self._window.append((tokens, flops, seconds))
        secs = sum(w[2] for w in self._window)
        if secs > 0:
            world = self.trainer.world_size if self._trainer is not None else 1
            self.log("train/tokens_per_s", world * sum(w[0] for w in self._window) / secs)
            if self.peak_flops:
                self.log("train/mfu", sum(w[1] for w in self._window) / secs / self.peak_flops)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        sched = self.lr_schedulers()
        if sched is not None:
            self.log("train/lr", sched.get_last_lr()[0])

    def configure_optimizers(self) -> dict:
        # Fused AdamW on CPU and CUDA (optim.build_optimizer), except under fp16 loss scaling, where a
        # fused step unscales the gradients only after our clipping would have seen them.
        fused = self._trainer is None or self.trainer.precision != "16-mixed"
        opt = build_optimizer(self.model, self.optimizer_spec, self.hparams.lr, fused=fused)
        sched = build_scheduler(opt, self.schedule_spec, self.hparams.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # Global-norm clipping (BERT's optimization.py) done here, not through Trainer(gradient_clip_val):
        # Lightning's bf16-mixed plugin refuses to clip for a fused optimizer ("performs unscaling of
        # gradients internally"), which only matters for fp16 loss scaling. Same call as Lightning's.
        if self.optimizer_spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                           self.optimizer_spec.grad_clip)

    # -- validation: token-weighted sums, so the numbers do not depend on how batches are cut --------
    def on_train_start(self) -> None:
        # The checkpoint of a validation step is saved just before that validation; a kill -9 between
        # the two (a relaunch then resumes, issue 26) would lose it, as Lightning's restart skips it.
        step = int(self.global_step)
        if self.val_every_steps and step and step % self.val_every_steps == 0 and \
                all(h["step"] != step for h in self.history):
            self._validate_now()

    @torch.no_grad()
    def _validate_now(self) -> None:
        """The validation of the resumed step, outside Lightning's loop, RNG state left as it was, in the
        precision the loop validates in (bf16-mixed: under its autocast; without it the resumed run's
        validation ran in fp32 and differed from the uninterrupted run's)."""
        rng = torch.get_rng_state()
        self.eval()
        self.on_validation_epoch_start()
        for idx, loader in enumerate(self.trainer.datamodule.val_dataloader()):
            for i, batch in enumerate(loader):
                with self.trainer.strategy.precision_plugin.val_step_context():
                    self.validation_step(self.trainer.strategy.batch_to_device(batch), i, idx)
        self._outside_loop = True
        try:
            self.on_validation_epoch_end()
        finally:
            self._outside_loop = False
        self.train()
        torch.set_rng_state(rng)

    def _log_row_outside_loop(self, metrics: dict[str, float]) -> None:
        """The metrics.csv row Lightning's loop would have written for this validation. `self.log` in
        on_train_start is held until the epoch ends: the row would land after the last step, with the
        last step's number (seen on a SLURM requeue that struck between a checkpoint and its validation)."""
        if not self.trainer.is_global_zero:
            return
        # In-loop validation logs before the step counter of loggers moves on: optimizer step N's
        # validation is row N - 1, as in an uninterrupted run.
        # float32, as `self.log` stores a float: the same digits as the uninterrupted run's row
        row = {f"val/{k.removeprefix('val_')}": float(torch.tensor(v, dtype=torch.float32)) for k, v in metrics.items()}
        row["epoch"] = self.trainer.current_epoch
        for logger in self.trainer.loggers:
            logger.log_metrics(row, step=int(self.global_step) - 1)
            logger.save()

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        out = self.model(**batch)
        acc = self._val.setdefault(dataloader_idx, {"loss_sum": 0.0, "count": 0, "correct": 0,
                                                    "nsp_correct": 0, "nsp_count": 0})
        n = int(out["mlm_count"])
        acc["loss_sum"] += float(out["mlm_loss"]) * n
        acc["count"] += n
        acc["correct"] += int(out["mlm_correct"])
        acc["nsp_correct"] += int(out["nsp_correct"])
        acc["nsp_count"] += int(out["nsp_count"])
        if dataloader_idx == 0:  # masked-label histogram: the trivial baselines of collapse.py
            lab = batch["mlm_labels"][batch["mlm_labels"] >= 0].long().cpu()
            acc["labels"] = acc.get("labels", 0) + torch.bincount(lab, minlength=self.config.vocab_size)

    def on_validation_epoch_end(self) -> None:
        metrics = {}
        mlm = self._val.get(0)
        if mlm and mlm["count"]:
            loss = mlm["loss_sum"] / mlm["count"]
            metrics.update({"val_mlm_loss": loss, "val_mlm_ppl": math.exp(min(loss, 50.0)),
                            "val_mlm_acc": mlm["correct"] / mlm["count"]})
        nsp = self._val.get(1)
        if nsp and nsp["nsp_count"]:
            metrics["val_nsp_acc"] = nsp["nsp_correct"] / nsp["nsp_count"]
        if self._outside_loop:
            self._log_row_outside_loop(metrics)
        else:
            for k, v in metrics.items():
                self.log(f"val/{k.removeprefix('val_')}", v, prog_bar=k == "val_mlm_loss", sync_dist=False)
        if metrics and not self.trainer.sanity_checking:
            tokens = self.tokens_seen * self.trainer.world_size
            self.history.append({"step": int(self.global_step), "tokens": int(tokens), **metrics})
            if self.history_path is not None and self.trainer.is_global_zero:
                from robablate.io import atomic_write_json

                atomic_write_json(self.history_path, self.history)

    # -- exact resume: Lightning does not checkpoint RNG states or our counters --------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["robablate"] = {"tokens_seen": self.tokens_seen, "train_time": self.train_time,
                                   "history": self.history, "last_loss": self.last_loss, "torch_rng": torch.get_rng_state(),
                                   "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("robablate", {})
        self.tokens_seen = state.get("tokens_seen", 0)
        self.train_time = state.get("train_time", 0.0)
        # a run resumed from its final step trains nothing more: it reports the loss the checkpoint saw
        self.last_loss = state.get("last_loss", float("nan"))
        self.history = merge_history(state.get("history", []), self._written_history(), int(checkpoint.get("global_step", 0)))
        if state.get("torch_rng") is not None:
            torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def _written_history(self) -> list[dict[str, Any]]:
        import json

        path = self.history_path
        return json.loads(path.read_text()) if path is not None and path.is_file() else []


def merge_history(saved: list[dict[str, Any]], written: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The checkpoint's validation history plus the validations written after it was saved at `step`
    but before the run stopped, up to `step` (the model they measured is the checkpoint's; later ones
    are measured again by the resumed run)."""
    have = {h["step"] for h in saved}
    extra = [h for h in written if h["step"] <= step and h["step"] not in have]
    return sorted([*saved, *extra], key=lambda h: h["step"])


def slurm_plugins() -> list:
    """Inside a SLURM job, Lightning joins SLURM's tasks but leaves requeueing to submitit
    (`hydra.launcher.signal_delay_s` / `max_num_timeout`): its own auto-requeue (SIGUSR1 -> hpc_ckpt_*.ckpt
    + `scontrol requeue`) would be a second resume path next to `resume=true` and last.ckpt."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step a checkpoint was saved at (ModelCheckpoint names files step<N>.ckpt and
    last.ckpt links to the newest; otherwise read from the file)."""
    import re

    m = re.fullmatch(r"step(\d+)\.ckpt", Path(os.path.realpath(path)).name)
    if m:
        return int(m.group(1))
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0))


class StepTimer(pl.Callback):
    """Times each training micro-batch for PretrainModule.record_step. Lightning runs ModelCheckpoint
    callbacks after all others, so checkpoint writes fall outside the timed span (as does validation)."""

    def __init__(self) -> None:
        self._t = 0.0
        self._end: float | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        pl_module.record_step(now - self._t)
        if self._end is not None:  # the whole loop since the previous micro-batch: data, step, logging
            pl_module.log("train/loop_s", now - self._end)
        self._end = now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end = None  # loop_s leaves validation (and the checkpoint after it) out


class StopAtStep(pl.Callback):
    """Stop after `step` optimizer steps, as if the run were killed there (tests exact resume)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # A lower max_steps, not `should_stop`: Lightning validates when asked to stop early, a point
        # (and a metrics.csv row) the killed run it stands for would not have.
        loop = trainer.fit_loop.epoch_loop
        loop.max_steps = min(loop.max_steps, self.step)


def pretrain(plan: Plan, data: PreparedData, run_dir: Path) -> tuple[PretrainModule, dict[str, Any]]:
    """Train the encoder (model.init=random: the untrained control arm, validated only); return the
    module and the pretraining section of results.json."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from robablate.loggers import build_loggers

    spec, run = plan.specs, plan.specs.trainer
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    ckpt_dir = run_dir / "pretrain" / "checkpoints"
    resume_from = None
    if run.resume:
        last = ckpt_dir / "last.ckpt"
        if last.exists():
            resume_from = str(last)
        else:
            warnings.warn(f"resume=true but {last} does not exist; starting from scratch.")
    resume_step = checkpoint_step(resume_from) if resume_from else None
    module = PretrainModule(spec.model.config(data.ids.vocab_size, data.ids.pad), nsp=plan.nsp,
                            optimizer=spec.optimizer, schedule=spec.schedule, lr=plan.lr,
                            total_steps=plan.total_steps, compile=run.compile)
    module.history_path = run_dir / "pretrain" / "history.json"
    module.val_every_steps = plan.val_every_steps if resume_from else None
    dm = PretrainDataModule(data, plan, spec.masking, spec.seed, run.num_workers, pack=run.pack)

    callbacks: list[pl.Callback] = [
        StepTimer(),
        # last.ckpt as a link to the newest step file: one checkpoint write per save, not two.
        ModelCheckpoint(dirpath=ckpt_dir, filename="step{step}",
                        every_n_train_steps=run.checkpoint_every_steps or plan.val_every_steps,
                        save_last="link", save_top_k=1, auto_insert_metric_name=False),
    ]
    if run.stop_at_step is not None:
        callbacks.append(StopAtStep(run.stop_at_step))
    if run.enable_progress_bar:  # steps and tokens of the budget, not `Epoch 0/-2`; plain lines in a log file
        callbacks.append(step_progress(plan.total_steps, plan.total_steps * plan.tokens_per_step_target))
    trainer = pl.Trainer(
        accelerator=run.accelerator, devices=run.devices, num_nodes=run.num_nodes,
        strategy=run.strategy, precision=plan.precision, max_steps=plan.total_steps, max_epochs=-1,
        accumulate_grad_batches=plan.accumulate,  # clipping: PretrainModule.configure_gradient_clipping
        val_check_interval=plan.val_every_steps * plan.accumulate, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, use_distributed_sampler=False, deterministic=run.deterministic,
        enable_progress_bar=run.enable_progress_bar and bars_fit_output(), log_every_n_steps=run.log_every_n_steps,
        logger=build_loggers(spec.logger, run_dir, "pretrain", resume_step), callbacks=callbacks,
        default_root_dir=str(run_dir / "pretrain"),
        enable_model_summary=False, plugins=slurm_plugins(),
    )
    dtype = compute_dtype(plan.precision)
    module.peak_flops = peak_flops(trainer.strategy.root_device, dtype, spec.cache_dir)
    if trainer.strategy.root_device.type == "cpu" and dtype != torch.float32 and trainer.is_global_zero:
        # Say it: `auto` depends on the CPU, and fp32 runs (another CPU, an earlier version) differ.
        print(f"robablate: precision {plan.precision} on CPU (train.precision=auto picks it where the CPU has "
              f"bf16 hardware; train.precision=32-true for fp32)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # Our sampler restarts at trainer.global_step, so a mid-epoch resume is exact (docs/facts.md §6;
        # pytorch-lightning #13843, PR #19361).
        warnings.filterwarnings("ignore", message=".*dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # PretrainModule.on_before_batch_transfer (host-side token count) is meant; the DataModule has none.
        warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer`.*")
        if resume_from:  # resuming writes into its own checkpoint folder on purpose
            warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        if spec.model.init == "pretrained":  # model.init=random: the untrained control arm
            trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    wall = time.perf_counter() - t0
    # A last validation at the final step, unless the loop just did one (history is the curve). A run
    # stopped by train.stop_at_step stands for a killed one: no extra point its resumed run would not have.
    interrupted = run.stop_at_step is not None and trainer.global_step < plan.total_steps
    if not interrupted and (not module.history or module.history[-1]["step"] != trainer.global_step):
        trainer.validate(module, datamodule=dm, verbose=False)

    tokens_local = torch.tensor(float(module.tokens_seen))
    tokens = float(trainer.strategy.reduce(tokens_local, reduce_op="sum")) if trainer.world_size > 1 else float(tokens_local)
    final = module.history[-1] if module.history else {}
    tps = tokens / module.train_time if module.train_time > 0 else float("nan")
    section: dict[str, Any] = {
        "val_mlm_loss": final.get("val_mlm_loss"), "val_mlm_ppl": final.get("val_mlm_ppl"),
        "val_mlm_acc": final.get("val_mlm_acc"), "val_nsp_acc": final.get("val_nsp_acc"),
        "train_loss": module.last_loss,
        "steps": int(trainer.global_step), "planned_steps": plan.total_steps, "tokens_seen": int(tokens),
        # Realised mean tokens fed per optimizer step; plan.tokens_per_step_target is what it aims at.
        "tokens_per_step": tokens / trainer.global_step if trainer.global_step else None,
        "tokens_per_s": tps, "train_time_s": module.train_time, "wall_s": wall,
        "flops_per_token": flops_per_token(module.config, plan.phases[-1].max_len),
        "peak_flops": module.peak_flops,  # per device (peak.py): measured on CPUs, null on unknown GPUs
        "mfu": (mfu(module.config, plan.phases[-1].max_len, tps / trainer.world_size, module.peak_flops)
                if module.peak_flops and math.isfinite(tps) else None),
        "interrupted": interrupted,
        "world_size": trainer.world_size, "global_rank": trainer.global_rank, "history": module.history,
    }
    section["collapse"] = collapse_section(module, data, final)
    return module, section


def collapse_section(module: PretrainModule, data: PreparedData, final: dict[str, Any]) -> dict[str, Any] | None:
    """pretrain.collapse: the run against the unigram and one-token predictors (robablate/collapse.py),
    fitted on the training instances' token counts and scored on the final validation masks."""
    labels = (module._val.get(0) or {}).get("labels")
    if labels is None or final.get("val_mlm_loss") is None:
        return None
    counts = np.bincount(data.phases[0].input_ids.ravel(), minlength=module.config.vocab_size).astype(np.float64)
    counts[data.ids.all()] = 0  # specials are never masked, never a label
    hist = labels.numpy()
    base = unigram_baseline(counts, np.repeat(np.arange(hist.size), hist))
    return judge(final["val_mlm_loss"], final["val_mlm_acc"], base["unigram_loss"], base["unigram_acc"],
                 history=module.history)
