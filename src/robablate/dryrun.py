"""`python run.py -m experiment=<ladder> dry_run=true`: what a sweep would cost, before anything runs.

A Hydra callback (conf/hydra/default.yaml, first in the list) that, when `dry_run=true`, composes every
job as the launcher would (relaunch.sweep_jobs / job_config), derives its Plan (config.validate: steps,
tokens, LR tuning grid) and decides each run folder by the relaunch rule (relaunch.decide: a complete
run of the same config and commit is skipped, a partial one resumed, another config's refused), then
prints, per rung (train.tokens, model.name): runs, new / skipped / resumed, tokens to train, steps per
run and a CPU-time estimate, and exits 0 before any job starts. `--cfg job` shows one config; this shows
the whole sweep's cost.

The estimate comes from measured throughput: the faster quartile of tokens/s, BLiMP seconds and other
per-run seconds (data preparation, tokenizer, validation) recorded in committed results.json files
(experiments/*/results) of the same model (and format, where any exist), times the torch threads those
runs used (their environment.device): CPU seconds = threads x wall seconds. Process start-up between
jobs and LR-tuning pilots found in the cache are not counted; pilots not cached are (grid x tune.tokens
each, once per arm). Without a recorded run of the model it says so and gives tokens only.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency
    Callback = object  # type: ignore[misc,assignment]

ROOT = Path(__file__).resolve().parents[2]
RECORDED = "experiments/*/results/**/results.json"  # committed runs whose throughput the estimate uses


@dataclass
class Speed:
    """Measured per-run costs of one model (and format): the faster quartile over `n` committed runs."""
    tokens_per_s: float
    blimp_s: float
    other_s: float   # total_s - pretrain_s - blimp_s: corpus, tokenizer, caches, end-of-run validation
    threads: int
    n: int           # committed runs the quartiles are over
    where: str


@dataclass
class Job:
    overrides: list[str]
    run_dir: Path
    tokens: float        # train.tokens (the rung)
    fed: float           # tokens this run trains on (0 for a random-init control)
    per_step: float      # tokens per optimizer step (plan.tokens_per_step_target)
    model: str
    fmt: str
    steps: int
    action: str          # run | resume | skip | refuse
    blimp: bool
    tune_tokens: float   # pilot tokens still to run for this job's arm (0: none, cached, or counted already)
    reason: str = ""


@dataclass
class Rung:
    tokens: float
    model: str
    jobs: list[Job] = field(default_factory=list)


def _threads(device: str) -> int:
    m = re.search(r"(\d+) torch threads", device or "")
    return int(m.group(1)) if m else 1


def recorded_speeds(files: Iterable[Path]) -> dict[tuple[str, str], list[dict]]:
    """(model, format) -> per-run cost records of the complete, pretrained, CPU runs in `files`."""
    import json

    out: dict[tuple[str, str], list[dict]] = {}
    for f in files:
        try:
            d = json.loads(Path(f).read_text())
        except (OSError, ValueError):
            continue
        pre, env, tim = (d.get(k) or {} for k in ("pretrain", "environment", "timings"))
        if d.get("status") != "complete" or d.get("init") == "random" or not pre.get("tokens_per_s"):
            continue
        if not str(env.get("device", "")).startswith("cpu"):
            continue
        cfg, plan = d.get("config") or {}, d.get("plan") or {}
        fmt = plan.get("format") or (cfg.get("format") or {}).get("name")  # the resolved format (not "auto")
        key = (str((cfg.get("model") or {}).get("name")), str(fmt))
        blimp = float(tim.get("blimp_s") or 0.0)
        other = float(tim.get("total_s") or 0.0) - float(tim.get("pretrain_s") or pre.get("wall_s") or 0.0) - blimp
        step = float(plan.get("tokens_per_step_target") or pre.get("tokens_per_step") or 0.0)
        out.setdefault(key, []).append({"tps": float(pre["tokens_per_s"]), "blimp_s": blimp, "per_step": step,
                                        "other_s": max(other, 0.0), "threads": _threads(env.get("device", ""))})
    return out


def _quartile(values: list[float], upper: bool) -> float:
    """The faster quartile of recorded speeds (upper for tokens/s, lower for seconds): runs recorded on a
    machine shared with other jobs are slower in wall time by up to 5x (study v2: 4,749-29,081 tokens/s)
    while their CPU time is not, so the fast end is the machine's own speed."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[2] if upper else q[0]


def speed_for(records: dict[tuple[str, str], list[dict]], model: str, fmt: str, per_step: float = 0.0) -> Speed | None:
    """Medians over the records of (model, fmt) with the tokens per step nearest `per_step` (a CPU's
    tokens/s depends on the batch), else over every format of the model; None if none."""
    rows, where = records.get((model, fmt)), f"model {model}, format {fmt}"
    if not rows:
        rows = [r for (m, _), rs in records.items() if m == model for r in rs]
        where = f"model {model}, any format"
    if not rows:
        return None
    if per_step > 0 and any(r.get("per_step", 0) > 0 for r in rows):
        # the recorded batch nearest in tokens per step, and every record within x1.5 of it (exact budgets
        # trim each step a little: 4090 and 4096 tokens per step are one batch size)
        dist = {r["per_step"]: abs(math.log(r["per_step"] / per_step)) for r in rows if r.get("per_step", 0) > 0}
        near = min(dist, key=dist.get)
        rows = [r for r in rows if r.get("per_step", 0) > 0 and abs(math.log(r["per_step"] / near)) <= math.log(1.5)]
        where += f", ~{near:.3g} tokens/step"
    blimp = [r["blimp_s"] for r in rows if r["blimp_s"] > 0]
    return Speed(tokens_per_s=_quartile([r["tps"] for r in rows], upper=True),
                 blimp_s=_quartile(blimp, upper=False) if blimp else 0.0,
                 other_s=_quartile([r["other_s"] for r in rows], upper=False),
                 threads=max(r["threads"] for r in rows), n=len(rows), where=where)


def cpu_seconds(job: Job, speed: Speed | None) -> float:
    """CPU seconds the job still needs (0 when skipped; nan without a measured speed)."""
    if job.action in ("skip", "refuse"):
        return 0.0
    if speed is None:
        return math.nan
    wall = job.fed / speed.tokens_per_s + speed.other_s + (speed.blimp_s if job.blimp else 0.0)
    wall += job.tune_tokens / speed.tokens_per_s
    return wall * speed.threads


def _hours(s: float) -> str:
    return "n/a" if math.isnan(s) else f"{s / 3600:.2f}"


def _mtok(t: float) -> str:
    return f"{t / 1e6:.3g}M"


def summary(rungs: list[Rung], records: dict[tuple[str, str], list[dict]], name: str) -> str:
    """The dry run's printout: one line per rung, then the totals and where the speed comes from."""
    lines = [f"[robablate] dry run of {name}: nothing is run",
             f"{'rung':>8} {'model':>8} {'runs':>5} {'new':>4} {'skip':>5} {'resume':>6} {'tokens to train':>16} "
             f"{'steps/run':>10} {'CPU-h est.':>10}"]
    tot = {"runs": 0, "new": 0, "skip": 0, "resume": 0, "tokens": 0.0, "cpu": 0.0}
    speeds: dict[str, Speed | None] = {}
    refused = []
    for r in rungs:
        count = {a: sum(j.action == a for j in r.jobs) for a in ("run", "skip", "resume", "refuse")}
        todo = [j for j in r.jobs if j.action in ("run", "resume")]
        tokens = sum(j.fed + j.tune_tokens for j in todo)
        cpu = 0.0
        for j in r.jobs:
            sp = speed_for(records, j.model, j.fmt, j.per_step)
            speeds[sp.where if sp else f"model {j.model}"] = sp
            cpu += cpu_seconds(j, sp)
        steps = sorted({j.steps for j in r.jobs})
        steps_s = str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
        lines.append(f"{_mtok(r.tokens):>8} {r.model:>8} {len(r.jobs):>5} {count['run']:>4} {count['skip']:>5} "
                     f"{count['resume']:>6} {_mtok(tokens):>16} {steps_s:>10} {_hours(cpu):>10}")
        refused += [j.reason for j in r.jobs if j.action == "refuse"]
        for k, v in (("runs", len(r.jobs)), ("new", count["run"]), ("skip", count["skip"]),
                     ("resume", count["resume"]), ("tokens", tokens), ("cpu", cpu)):
            tot[k] += v
    lines.append(f"{'total':>8} {'':>8} {tot['runs']:>5} {tot['new']:>4} {tot['skip']:>5} {tot['resume']:>6} "
                 f"{_mtok(tot['tokens']):>16} {'':>10} {_hours(tot['cpu']):>10}")
    lines.append("tokens to train include LR-tuning pilots not in the cache; a resumed run is counted in full.")
    for key, sp in sorted(speeds.items()):
        lines.append(f"speed, {key}: " + (f"{sp.tokens_per_s:,.0f} tokens/s, BLiMP {sp.blimp_s:.0f} s, other "
                                           f"{sp.other_s:.0f} s per run, x {sp.threads} threads (faster quartile "
                                           f"of {sp.n} committed runs)" if sp else
                                           "no committed run of this model: no time estimate (tokens only)"))
    lines += [f"refused: {why}" for why in refused]
    return "\n".join(lines)


def plan_jobs(config: Any) -> list[Rung]:
    """Every job of the sweep (or the single run), composed and decided as the launcher would."""
    from omegaconf import OmegaConf, open_dict

    from robablate.config import validate
    from robablate.relaunch import current_code, decide, inspect, job_config, sweep_jobs
    from robablate.tune import arm_key

    code, rungs, tuned = current_code(), {}, set()
    jobs = sweep_jobs(config) if config.hydra.mode.name == "MULTIRUN" else [list(config.hydra.overrides.task)]
    for job in jobs:
        if config.hydra.mode.name == "MULTIRUN":
            run_dir, cfg = job_config(config, job)
        else:
            run_dir, cfg = Path(str(config.get("run_dir") or config.hydra.run.dir)), config.copy()
            with open_dict(cfg):
                del cfg["hydra"]
        plan = validate(cfg)
        d = decide(inspect(run_dir), OmegaConf.to_container(cfg, resolve=True), code, resume=bool(cfg.get("resume")),
                   overwrite=bool(cfg.get("overwrite")), where=str(run_dir))
        pilots = 0.0
        if plan.tune_lr and d.action in ("run", "resume") and str(OmegaConf.select(cfg, "model.init")) != "random":
            key = arm_key(cfg)
            if key not in tuned and not (plan.specs.cache_dir / "tune" / key).exists():
                pilots = float(len(plan.tune_lr) * plan.tune_tokens)
            tuned.add(key)
        tokens = float(OmegaConf.select(cfg, "train.tokens") or plan.total_steps * plan.tokens_per_step_target)
        control = str(OmegaConf.select(cfg, "model.init")) == "random"  # trains nothing: read-outs only
        j = Job(list(job), run_dir, tokens, 0.0 if control else tokens, float(plan.tokens_per_step_target),
                str(cfg.model.name), plan.format, 0 if control else plan.total_steps, d.action,
                str(OmegaConf.select(cfg, "eval.name")) == "blimp", pilots, d.reason)
        rungs.setdefault((j.model, j.tokens), Rung(j.tokens, j.model)).jobs.append(j)
    return [rungs[k] for k in sorted(rungs)]


class DryRun(Callback):
    """dry_run=true: print what the run or sweep would cost, then exit 0 before any job starts."""

    @staticmethod
    def _report(config: Any) -> None:
        if not config.get("dry_run"):
            return
        from robablate.errors import RobablateError

        try:
            rungs = plan_jobs(config)
        except RobablateError as e:
            print(f"robablate: error: {e}", file=sys.stderr)
            sys.exit(2)
        records = recorded_speeds(sorted(ROOT.glob(RECORDED)))
        print(summary(rungs, records, str(config.get("experiment_name"))), flush=True)
        sys.exit(0)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._report(config)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._report(config)
