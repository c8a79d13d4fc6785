"""Relaunching a run or a sweep finishes what is missing and destroys nothing.

What users expect from a retyped command after a crash, a preemption or a closed laptop lid:
transformers' run_mlm/run_glue resume from the last checkpoint and refuse a non-empty output folder
unless `--overwrite_output_dir`; fairseq restores `checkpoint_last.pt`; submitit requeues a preempted
job into the same folder (so the SLURM requeue path is this same code). Each run folder is, before any
compute:

- done: a complete results.json whose config and code match -> skipped, results.json untouched;
- partial: a checkpoint (no complete results.json) whose recorded config and code match -> resumed
  exactly (as resume=true); a failed run counts as not done;
- another config's or another commit's folder -> refused, naming the differing keys;
- `overwrite=true`: the old contents move to `<run_dir>/replaced/<UTC time>/` (results.json renamed
  results.replaced.json, so reports never read it) and the run starts over.

"Config matches" is `config_diff(old, new) == []`: the resolved configs compared key by key, except
RUN_ONLY_KEYS (where, how fast and what is logged; they never change the numbers), and for a partial run
with `train.precision` as it resolved on each machine (decide). "Code matches" is
`code_id` equal: the git commit of the source tree, or `robablate <version>` outside git. Uncommitted
changes are not compared (results.json records only the commit and a dirty flag): a dirty tree
relaunches on its commit's records, and the skip/resume line says the tree is dirty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robablate.errors import ConfigError
from robablate.io import atomic_write_json
from robablate.schema import RUN_ONLY_KEYS, not_arm, recorded_precision, with_resolved_precision

STARTED = "started.json"  # the config and code a run started with (what a partial run is checked against)
CHECKPOINT = Path("pretrain") / "checkpoints" / "last.ckpt"


def _git(*args: str) -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the source tree; (None, None) outside git."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD"), (bool(status) if status is not None else None)


def code_id(environment: dict[str, Any]) -> str | None:
    """The code identity a relaunch compares: the git commit, else the robablate package version."""
    if environment.get("git_commit"):
        return environment["git_commit"]
    version = (environment.get("packages") or {}).get("robablate")
    return f"robablate {version}" if version else None


def current_code() -> dict[str, Any]:
    import importlib.metadata

    commit, dirty = git_state()
    try:
        version = importlib.metadata.version("robablate")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"git_commit": commit, "git_dirty": dirty, "packages": {"robablate": version}}


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _ignored(key: str) -> bool:
    return not_arm(key, RUN_ONLY_KEYS)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """THE rule of "config matches" (empty list): `key: old -> new` for every leaf of the two resolved
    configs that differs, RUN_ONLY_KEYS excepted. A key present on one side only differs too."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if not _ignored(k) and a.get(k, "<absent>") != b.get(k, "<absent>")]


@dataclass(frozen=True)
class Folder:
    """What a run folder holds, read before any compute."""
    state: str                      # new | done | partial | failed | started | unrecorded
    record: dict[str, Any] | None   # {"config": ..., "environment": ...} the folder's run started with
    results: dict[str, Any] | None  # its results.json, when complete


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def inspect(run_dir: str | Path) -> Folder:
    run_dir = Path(run_dir)
    results, started = _read(run_dir / "results.json"), _read(run_dir / STARTED)
    has_ckpt = (run_dir / CHECKPOINT).exists()
    if results and results.get("status") == "complete" and "config" in results:
        return Folder("done", results, results)
    record = started or (results if results and "config" in results else None)
    if has_ckpt:
        return Folder("partial" if record else "unrecorded", record, None)
    if results is not None:
        return Folder("failed", record, None)
    return Folder("started" if started else "new", record, None)


@dataclass(frozen=True)
class Decision:
    action: str   # run | resume | skip | refuse
    reason: str   # why, for the line the run prints (refuse: the whole refusal)


def decide(folder: Folder, config: dict[str, Any], code: dict[str, Any], *, resume: bool = False,
           overwrite: bool = False, where: str = "", precision: str | None = None) -> Decision:
    """What a (re)launch does with a folder (pure: tests call it without a trainer). `precision`: what
    this launch resolved `train.precision` to, where it is known (in the job itself, on its machine): a
    partial run continues only in the precision its checkpoint trained in, and `auto` resolves per
    machine (a sweep resumed on other SLURM nodes), so the two are compared as resolved values. A done
    run is skipped on the config as written: its numbers are final, whatever machine relaunches it."""
    if overwrite:
        return Decision("run", "overwrite=true" if folder.state != "new" else "")
    if folder.state == "new":
        return Decision("run", "")
    if folder.state == "unrecorded":  # a checkpoint from before robablate recorded the config
        if resume:
            return Decision("resume", "resume=true (the checkpoint's config was not recorded)")
        return Decision("refuse", f"{where} holds a checkpoint but no record of the config it was trained with; "
                                  "resume=true continues it anyway, overwrite=true starts over (the old files "
                                  "move to <run_dir>/replaced/).")
    old_config, old_precision = folder.record["config"], recorded_precision(folder.record)
    if folder.state == "partial" and old_precision and precision:
        old_config, config = (with_resolved_precision(old_config, old_precision),
                              with_resolved_precision(config, precision))
    diff = config_diff(old_config, config)
    if old_precision and folder.state == "partial" and any(d.startswith("train.precision:") for d in diff):
        diff.append(f"train.precision=auto resolves per machine: train.precision={old_precision} continues "
                    "the checkpoint in the precision it trained in")
    old_code, new_code = code_id(folder.record.get("environment") or {}), code_id(code)
    if old_code and new_code and old_code != new_code:
        diff.append(f"code: git {old_code[:12]} -> {new_code[:12]}")
    if diff:
        lost = {"done": "its complete results.json", "partial": "its checkpoints (a partial run)",
                "failed": "a failed run's record", "started": "a started run's logs"}[folder.state]
        return Decision("refuse", f"{where} holds a run of another config or code ({'; '.join(diff)}). "
                                  f"Refusing before any compute. overwrite=true redoes it (moving {lost} to "
                                  f"<run_dir>/replaced/<time>/), or choose another run_dir / hydra.sweep.dir.")
    dirty = " · source tree dirty: uncommitted changes not compared" if code.get("git_dirty") else ""
    if folder.state == "done":
        return Decision("skip", dirty)
    if folder.state == "partial":
        return Decision("resume", dirty)
    return Decision("run", dirty)  # failed or started without a checkpoint: same config, start over


def set_aside(run_dir: str | Path) -> Path | None:
    """overwrite=true: move everything the folder holds (but Hydra's .hydra/ and older replaced/) to
    <run_dir>/replaced/<UTC time>/, results.json renamed so no report reads it. None when empty."""
    run_dir = Path(run_dir)
    items = [p for p in run_dir.iterdir() if p.name not in (".hydra", "replaced")] if run_dir.is_dir() else []
    if not items:
        return None
    dest = run_dir / "replaced" / time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    dest.mkdir(parents=True, exist_ok=False)
    for p in items:
        shutil.move(str(p), str(dest / ("results.replaced.json" if p.name == "results.json" else p.name)))
    return dest


def record_start(run_dir: str | Path, config: dict[str, Any], code: dict[str, Any], precision: str) -> None:
    """Write started.json once (kept on resume): what a later relaunch checks a partial run against,
    with the precision `train.precision` resolved to on the machine that started it."""
    path = Path(run_dir) / STARTED
    if not path.exists():
        atomic_write_json(path, {"config": config, "environment": code, "precision": precision})


def is_rank_zero() -> bool:
    """DDP ranks > 0 (started by Lightning or SLURM) read the folder but never move or write records."""
    import os

    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def prepare_run(run_dir: Path, config: dict[str, Any], *, resume: bool, overwrite: bool,
                precision: str) -> Decision:
    """The run's relaunch decision, before compute; a refusal is a ConfigError and changes nothing."""
    decision = decide(inspect(run_dir), config, current_code(), resume=resume, overwrite=overwrite,
                      where=str(run_dir), precision=precision)
    if decision.action == "refuse":
        raise ConfigError(decision.reason)
    return decision


def start_run(run_dir: Path, config: dict[str, Any], *, overwrite: bool, precision: str) -> None:
    """After the input checks, before training: overwrite=true sets the old contents aside; record what
    this run starts with (rank 0 only)."""
    if not is_rank_zero():
        return
    if overwrite and (moved := set_aside(run_dir)) is not None:
        print(f"[robablate] overwrite=true: the previous contents of {run_dir} are in {moved}", file=sys.stderr)
    record_start(run_dir, config, current_code(), precision)


# --- sweeps: one line at the start (Hydra callback, conf/hydra/default.yaml) ----------------------

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency; the report's reader does not need it
    Callback = object  # type: ignore[misc,assignment]


class SweepStart(Callback):
    """Before a multirun launches any job: count its arms done, partial and new, and refuse the whole
    sweep when one folder holds another config (before any job trains). Every launcher (sequential,
    joblib, submitit) then runs the same job function, which decides per folder again (prepare_run)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        """A single run refuses another config's folder before Hydra writes its .hydra/ there."""
        from omegaconf import OmegaConf, open_dict

        if config.get("stage") == "finetune":
            return
        run_dir = Path(str(config.get("run_dir") or config.hydra.run.dir))
        if not run_dir.exists():
            return
        cfg = config.copy()
        with open_dict(cfg):
            del cfg["hydra"]
        d = decide(inspect(run_dir), OmegaConf.to_container(cfg, resolve=True), current_code(),
                   resume=bool(cfg.get("resume")), overwrite=bool(cfg.get("overwrite")), where=str(run_dir))
        if d.action == "refuse":
            print(f"robablate: error: {d.reason}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        counts, refused = sweep_states(config)
        total = sum(counts.values())
        print(f"[robablate] sweep of {total} arm(s): {counts['done']} done, {counts['partial']} partial "
              f"(resumed), {counts['new']} new", flush=True)
        if refused:
            print("robablate: error: " + "\n".join(refused), file=sys.stderr)
            sys.exit(2)


def sweep_jobs(config: Any) -> list[list[str]]:
    """Each job's overrides of a `-m` sweep as Hydra's basic sweeper splits them (hydra.sweeper.params
    first, then the command line, as BasicSweeper.sweep does). Shared by every sweep-start check."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def job_config(config: Any, job: list[str]) -> tuple[Path, Any]:
    """One sweep job's config composed as the launcher composes it: (its run folder, config without hydra)."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    cfg = GlobalHydra.instance().config_loader().load_sweep_config(config, list(job))
    run_dir = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
    with open_dict(cfg):
        del cfg["hydra"]
    return run_dir, cfg


def sweep_states(config: Any) -> tuple[dict[str, int], list[str]]:
    """Each job of the sweep composed as the launcher composes it, its folder inspected."""
    from omegaconf import OmegaConf

    jobs = sweep_jobs(config)
    code, counts, refused = current_code(), {"done": 0, "partial": 0, "new": 0}, []
    if not Path(str(config.hydra.sweep.dir)).exists():  # a fresh sweep: nothing to inspect
        return {**counts, "new": len(jobs)}, []
    for job in jobs:
        run_dir, cfg = job_config(config, job)
        folder = inspect(run_dir)
        d = decide(folder, OmegaConf.to_container(cfg, resolve=True), code,
                   resume=bool(cfg.get("resume")), overwrite=bool(cfg.get("overwrite")), where=str(run_dir))
        if d.action == "refuse":
            refused.append(d.reason)
        counts[{"skip": "done", "resume": "partial"}.get(d.action, "new")] += 1
    return counts, refused
