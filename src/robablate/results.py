"""results.json: one schema-versioned file per run, written atomically (the report reads only these)."""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path
from typing import Any

from robablate.io import atomic_write_json
from robablate.relaunch import git_state
from robablate.schema import SCHEMA_VERSION

PACKAGES = ("robablate", "torch", "lightning", "hydra-core", "omegaconf", "transformers", "tokenizers", "numpy",
            "scikit-learn", "scipy", "pandas", "wandb")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"cpu:{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def environment(data_fingerprint: str = "") -> dict[str, Any]:
    """Where the numbers came from: code version, packages, device, data."""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_name(),
        "data_fingerprint": data_fingerprint,
    }


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write results.json atomically (temp file + rename): a reader sees the old file or the new one."""
    path = Path(path)
    atomic_write_json(path, {"schema_version": SCHEMA_VERSION, **results})
    return path
