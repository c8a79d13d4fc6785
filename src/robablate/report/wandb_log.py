"""Log a report's tables and plots to one W&B run. A W&B problem is a warning, never a crash: the
report files on disk are the result, the dashboard is a convenience."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd


def _table(wandb, df: pd.DataFrame):
    # wandb.Table wants JSON-able cells: nan -> None, numpy/pandas scalars -> Python ones.
    clean = df.astype(object).map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                                  or v is pd.NA else (v.item() if hasattr(v, "item") else v))
    return wandb.Table(columns=[str(c) for c in df.columns], data=clean.values.tolist())


def log_report(report, out_dir: str | Path, *, project: str = "robablate", group: str | None = None,
               images: list[Path] | None = None) -> bool:
    """Log summary/paired/variance/off-axis tables and the PNG plots; True when the run was logged."""
    try:
        import wandb
    except ImportError as e:
        warnings.warn(f"--wandb: wandb is not importable ({e}); nothing logged")
        return False
    run = None
    try:
        run = wandb.init(project=project, job_type="report", group=group, name=f"report-{group}" if group else None,
                         config={"axes": report.axes, "baselines": report.baselines,
                                 "n_runs": int(report.tidy["run_dir"].nunique()), "out_dir": str(out_dir)})
        data = {name: _table(wandb, getattr(report, name))
                for name in ("summary", "paired", "variance", "off_axis", "compute", "gain") if not getattr(report, name).empty}
        if report.problems:
            data["problems"] = _table(wandb, pd.DataFrame(report.problems))
        for img in images or []:
            data[f"plots/{Path(img).stem}"] = wandb.Image(str(img))
        run.log(data)
        return True
    except Exception as e:  # noqa: BLE001 - any W&B failure (network, auth, service) must not lose the report
        warnings.warn(f"--wandb: logging to W&B failed ({type(e).__name__}: {e}); the files in {out_dir} are complete")
        return False
    finally:
        if run is not None:
            try:
                wandb.finish()
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"--wandb: wandb.finish() failed ({type(e).__name__}: {e})")
