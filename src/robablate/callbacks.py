"""Experiment loggers (CSV, W&B) for the Lightning trainers. A W&B failure never costs a run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robablate.config import axes_of


def wandb_settings(cfg: DictConfig, run_dir: Path, job_type: str) -> dict[str, Any]:
    """Arguments for wandb.init: group = the sweep, job_type = stage, tags = axis values, config =
    the resolved Hydra config (PITFALLS: unresolved interpolations must not reach the dashboard)."""
    lg = cfg.logger
    sweep = run_dir.parent.name if "multirun" in run_dir.parts else run_dir.name
    axes = axes_of(cfg)
    return {
        "project": lg.project,
        "entity": lg.get("entity"),
        "group": lg.get("group") or f"{cfg.experiment_name}/{sweep}",
        "job_type": job_type,
        "name": f"{run_dir.name}-{job_type}",
        "tags": [f"{k}={v}" for k, v in axes.items()] + list(lg.get("tags") or []),
        "config": OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False),
        "dir": str(run_dir),
        "mode": lg.get("mode") or os.environ.get("WANDB_MODE") or None,
    }


def build_loggers(cfg: DictConfig, run_dir: Path, job_type: str) -> list:
    """CSV always (results never depend on W&B); plus W&B when logger=wandb and it starts."""
    from lightning.pytorch.loggers import CSVLogger

    loggers: list = [CSVLogger(save_dir=str(run_dir), name=job_type, version="")]
    if cfg.logger.name == "wandb":
        try:
            import wandb
            from lightning.pytorch.loggers import WandbLogger

            kw = wandb_settings(cfg, run_dir, job_type)
            # A fresh run per stage (and per multirun job): finish whatever a previous stage left open.
            if wandb.run is not None:
                wandb.finish()
            os.environ.setdefault("WANDB_START_METHOD", "thread")  # Hydra hang workaround (W&B docs)
            loggers.append(WandbLogger(**{k: v for k, v in kw.items() if v is not None}))
        except Exception as e:  # noqa: BLE001 - any W&B problem must only warn
            warnings.warn(f"W&B logger disabled ({type(e).__name__}: {e}); CSV logs are still written.")
    return loggers


def finish_wandb() -> None:
    """Close the W&B run, if any; called from a `finally:` so every multirun job finishes its run."""
    try:
        import sys

        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish()
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"wandb.finish failed: {e}")
