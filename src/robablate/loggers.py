"""Experiment loggers (CSV, W&B) for the Lightning trainers. A W&B failure never costs a run.

W&B layout (logger=wandb): every arm of a sweep gives two W&B runs, `job_type` pretrain and
finetune, in one `group` per sweep (`<experiment>/<sweep folder>`), tagged with the arm's axis
values and carrying the resolved Hydra config. All fine-tuning trainers of an arm (tasks x seeds)
log into the arm's one finetune run under a `<task>/seed=<n>/` prefix. The CSV logs and
results.json never depend on W&B: wandb.init is called here, inside a try, not lazily inside
trainer.fit where its failure would end the run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The W&B run this process has open and what it belongs to: (arm folder, job_type). Fine-tuning
# trainers of the same arm re-use the run instead of each starting one.
_ACTIVE: dict[str, Any] = {"key": None, "run": None, "arm": None}


@dataclass(frozen=True)
class LoggerSpec:
    """The `logger` group and what a W&B run is named, tagged and configured with, fixed when the
    config is checked (config.validate builds it): the loggers never read the config."""

    name: str = "csv"                  # csv | wandb | none
    project: str | None = None
    entity: str | None = None
    group: str | None = None           # None = <experiment>/<sweep folder>
    mode: str | None = None            # None = WANDB_MODE (offline, disabled, online)
    tags: tuple[str, ...] = ()         # extra tags, after the axis values
    experiment: str = "default"
    run_dir: str | None = None         # run_dir as configured (None = Hydra's job folder)
    axes: Mapping[str, Any] = field(default_factory=dict)    # the arm's axis values (format resolved)
    config: Mapping[str, Any] = field(default_factory=dict)  # the resolved config: the W&B run's config

    @classmethod
    def from_config(cls, cfg_logger: Mapping[str, Any], *, experiment: str, run_dir: str | None,
                    axes: Mapping[str, Any], config: Mapping[str, Any]) -> "LoggerSpec":
        get = cfg_logger.get
        return cls(name=str(get("name") or "csv"), project=get("project"), entity=get("entity"), group=get("group"),
                   mode=get("mode"), tags=tuple(str(t) for t in (get("tags") or [])), experiment=experiment,
                   run_dir=run_dir, axes=dict(axes), config=config)


def arm_dir(spec: LoggerSpec, fallback: Path) -> Path:
    """The arm's output folder (run_dir or Hydra's job folder); `fallback` outside both."""
    if spec.run_dir:
        return Path(spec.run_dir).resolve()
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir).resolve()
    except Exception:  # noqa: BLE001 - naming only
        pass
    return Path(fallback).resolve()


def sweep_dir(arm: Path) -> Path | None:
    """The sweep folder holding this arm: Hydra's sweep.dir inside a multirun job, else the folder
    right under `multirun/` (outputs/<experiment>/multirun/<time>/<overrides>/seed=<n>); None for a
    single run."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return Path(HydraConfig.get().sweep.dir).resolve()
    except Exception:  # noqa: BLE001
        pass
    parts = arm.parts
    if "multirun" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("multirun")
        if i + 1 < len(parts):
            return Path(*parts[: i + 2])
    return None


def wandb_settings(spec: LoggerSpec, run_dir: Path, job_type: str) -> dict[str, Any]:
    """Arguments for wandb.init: group = the sweep, job_type = stage, tags = axis values, config =
    the resolved Hydra config (unresolved interpolations must not reach the dashboard:
    lightning-hydra-template #615)."""
    arm = arm_dir(spec, Path(run_dir))
    sweep = sweep_dir(arm)
    try:
        name = str(arm.relative_to(sweep)) if sweep is not None and arm != sweep else arm.name
    except ValueError:
        name = arm.name
    tags = [f"{k}={v}" for k, v in spec.axes.items()] + list(spec.tags)
    return {
        "project": spec.project or "robablate",
        "entity": spec.entity,
        "group": spec.group or (f"{spec.experiment}/{sweep.name}" if sweep else spec.experiment),
        "job_type": job_type,
        "name": f"{name} {job_type}",
        "tags": [t[:64] for t in tags],  # W&B rejects tags over 64 characters
        "config": dict(spec.config),
        # The run's files go inside the arm folder unless WANDB_DIR says otherwise.
        "dir": None if os.environ.get("WANDB_DIR") else str(arm),
        "mode": spec.mode,  # None: wandb reads WANDB_MODE (offline, disabled, online)
    }


def _warn(msg: str) -> None:
    warnings.warn(f"W&B: {msg}; the run goes on without it (CSV logs and results.json are unaffected).",
                  stacklevel=3)


def _start_run(kw: dict[str, Any]):
    import wandb

    if wandb.run is not None:  # a previous stage or job left one open: one W&B run per stage and arm
        wandb.finish()
    run = wandb.init(**{k: v for k, v in kw.items() if v is not None})
    # Lightning's x-axis, as WandbLogger would define it for a run it created itself.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return run


def _make_safe_wandb_logger():
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    class SafeWandbLogger(WandbLogger):
        """WandbLogger whose logging calls warn once and go quiet on error instead of raising."""

        LOGGER_JOIN_CHAR = "/"  # prefix "SYN-TOPIC/seed=0" + "dev/score" -> "SYN-TOPIC/seed=0/dev/score"

        def _guard(self, fn, *args: Any, **kwargs: Any) -> None:
            if getattr(self, "_broken", False):
                return
            try:
                fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a dashboard problem must not end training
                self._broken = True
                _warn(f"logging failed ({type(e).__name__}: {e})")

        @rank_zero_only
        def log_hyperparams(self, params: Any) -> None:
            # A prefixed (fine-tuning) logger shares its run with the other tasks and seeds: their
            # module hparams would overwrite each other, and the resolved config already has them.
            if not self._prefix:
                self._guard(super().log_hyperparams, params)

        @rank_zero_only
        def log_metrics(self, metrics: Any, step: int | None = None) -> None:
            self._guard(super().log_metrics, metrics, step)

        def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
            self._guard(super().after_save_checkpoint, checkpoint_callback)

        def finalize(self, status: str) -> None:
            self._guard(super().finalize, status)

    # Picklable as robablate.loggers.SafeWandbLogger (trainer=ddp_spawn pickles the loggers; the
    # spawned rank 0 re-attaches to this process's W&B run through WandbLogger.__getstate__).
    SafeWandbLogger.__module__, SafeWandbLogger.__qualname__ = __name__, "SafeWandbLogger"
    return SafeWandbLogger


def __getattr__(name: str) -> Any:
    """`SafeWandbLogger` is built on first use: importing this module must not import Lightning."""
    if name == "SafeWandbLogger":
        globals()[name] = cls = _make_safe_wandb_logger()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _global_rank() -> int:
    """This process's rank as Lightning reads it from the environment (RANK, LOCAL_RANK, SLURM_PROCID);
    0 in a single process and in the parent of ddp_spawn."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def rows_before(path: Path, step: int) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a Lightning metrics.csv whose `step` is below `step`: what a run logged
    before the checkpoint it resumes from (rows at or after it are logged again by the resumed run)."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("step") not in (None, "") and int(float(r["step"])) < step]
        return list(reader.fieldnames or []), rows


def _csv_logger(run_dir: Path, job_type: str, resume_step: int | None):
    """Lightning's CSVLogger deletes an existing metrics.csv when it starts ("Previous log files in
    this directory will be deleted"): on resume, the rows logged before the checkpoint are read first
    and written back as the new file's first rows, so the curve before the interruption survives."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(run_dir), name=job_type, version="")
    if resume_step is None or _global_rank() != 0:
        return logger
    path = Path(logger.log_dir) / "metrics.csv"
    header, rows = rows_before(path, resume_step)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
        writer = logger.experiment  # created now: it removes metrics.csv
    if rows:
        from robablate.io import atomic_write_text

        buf = io.StringIO()
        out = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
        out.writeheader()
        out.writerows(rows)
        atomic_write_text(path, buf.getvalue())
        writer.metrics_keys = sorted(header)  # later saves append (or rewrite with a wider header)
    return logger


def wants_csv(spec: LoggerSpec) -> bool:
    """logger=csv and logger=wandb write metrics.csv; logger=none writes no log at all."""
    return spec.name != "none"


def build_loggers(spec: LoggerSpec, run_dir: Path, job_type: str, resume_step: int | None = None,
                  csv_log: bool = True) -> list:
    """CSV unless logger=none (results never depend on W&B); plus W&B when logger=wandb and it starts.

    `run_dir` is where this trainer writes (the arm folder for pretraining, glue/<task>/seed=<n>
    for a fine-tuning run); the W&B run is per arm and stage. `resume_step`: the optimizer step of
    the checkpoint a resumed run starts from (the CSV log keeps the rows before it). csv_log=False:
    no CSV logger here (GLUE fine-tuning writes its own, in the task folder)."""
    loggers: list = [_csv_logger(Path(run_dir), job_type, resume_step)] if csv_log and wants_csv(spec) else []
    if spec.name != "wandb" or _global_rank() != 0:
        return loggers  # DDP ranks > 0 (ddp, SLURM tasks) log nothing: rank 0 owns the W&B run
    try:
        import wandb

        arm = arm_dir(spec, Path(run_dir))
        key = (str(arm), job_type)
        if _ACTIVE["key"] == key and _ACTIVE["run"] is not None and wandb.run is _ACTIVE["run"]:
            run = _ACTIVE["run"]
        else:
            run = _start_run(wandb_settings(spec, Path(run_dir), job_type))
            _ACTIVE.update(key=key, run=run, arm=arm)
        prefix = ""
        try:
            prefix = Path(run_dir).resolve().relative_to(arm / "glue").as_posix()
        except ValueError:
            pass
        loggers.append(__getattr__("SafeWandbLogger")(experiment=run, prefix=prefix))
    except Exception as e:  # noqa: BLE001 - any W&B problem (bad mode, no login, no network) must only warn
        _ACTIVE.update(key=None, run=None, arm=None)
        _warn(f"logger disabled ({type(e).__name__}: {e})")
    return loggers


def results_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers a dashboard compares arms by, flattened from results.json."""
    from robablate.registry import READOUTS

    out: dict[str, Any] = {"status": results.get("status")}
    for readout in READOUTS.values():  # pretrain/*, each zero-shot read-out's overall and groups, glue/*
        out.update(readout.wandb(results))
    return out


def finish_wandb() -> None:
    """Close the W&B run, if any, after copying the arm's results.json numbers into its summary.
    Called from pipeline.run's `finally:` so every multirun job finishes its own run (wandb #1314)."""
    import sys

    if "wandb" not in sys.modules:
        return
    arm = _ACTIVE.get("arm")
    _ACTIVE.update(key=None, run=None, arm=None)
    try:
        import wandb

        if wandb.run is None:
            return
        exit_code = 0
        path = Path(arm) / "results.json" if arm else None
        if path is not None and path.is_file():
            try:
                summary = results_summary(json.loads(path.read_text()))
                wandb.run.summary.update(summary)
                exit_code = 1 if summary["status"] == "failed" else 0  # the dashboard marks it crashed
            except Exception as e:  # noqa: BLE001
                _warn(f"could not copy results.json into the summary ({type(e).__name__}: {e})")
        wandb.finish(exit_code=exit_code)
    except Exception as e:  # noqa: BLE001
        _warn(f"wandb.finish failed ({type(e).__name__}: {e})")
