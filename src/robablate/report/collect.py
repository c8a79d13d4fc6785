"""Find every results.json under some folders and turn the finished runs into one tidy DataFrame.

A sweep folder can hold debris: a half-edited file, someone else's `results.json`, a run that
crashed. Each such file becomes an entry in a `problems` list that the report prints, so a missing
arm is never mistaken for a missing effect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from robablate.collapse import identical_acc, rejudge
from robablate.errors import ConfigError
from robablate.registry import READOUTS, tidy_rows
from robablate.schema import AXES, SCHEMA_VERSION, recorded_precision, with_resolved_precision
from robablate.sections import PRETRAIN_METRICS, PRETRAIN_TASK, glue_task_name, value as _num  # noqa: F401

RESULTS_NAME = "results.json"
# BLiMP's headline row (robablate/registry.py owns every read-out's rows; these names stay for callers).
BLIMP_TASK = READOUTS["blimp"].label
BLIMP_METRIC = READOUTS["blimp"].metric
RANDOM_INIT = "random"  # results["init"] of the random-initialisation control arm
MISSING = "n/a"  # axis value of a run whose results.json lacks that axis
TIDY_COLUMNS = ["run_dir", *AXES, "seed", "task", "ft_seed", "metric", "value"]  # tidy.csv
# Read-out columns of the tidy frame, as data (robablate/registry.py): which read-out, its kind
# (pretraining, zero_shot, finetune), the row's group (overall, field, term, task, score, ...) and its
# rank (the report's row order). Not written to tidy.csv.
READOUT_COLUMNS = ["readout", "kind", "group", "rank"]


@dataclass
class Run:
    """One complete run, as read from its results.json."""

    run_dir: str
    axes: dict[str, str]
    seed: int | None
    data: dict[str, Any] = field(repr=False)

    @property
    def config(self) -> dict[str, Any]:
        """The run's config, with `train.precision: auto` replaced by what it resolved to (results["plan"];
        schema.with_resolved_precision says why)."""
        return with_resolved_precision(self.data.get("config") or {}, recorded_precision(self.data))

    @property
    def is_control(self) -> bool:
        """A random-initialisation control run (no pretraining, same read-outs)."""
        return self.data.get("init") == RANDOM_INIT


def axis_str(value: Any) -> str:
    """Axis values as the command line spells them: `nsp=false`, `seq_len=128`."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_glue_task(task: str) -> bool:
    """A GLUE score pseudo-task (sections.glue_task_name); the tidy frame says so as group `score`."""
    return task.startswith("GLUE (")


def find_results(paths: Iterable[str | Path]) -> tuple[list[Path], list[dict]]:
    files, problems = [], []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob(RESULTS_NAME)))
        else:
            problems.append(_problem(p, "missing", "no such file or folder"))
    return files, problems


def load_runs(paths: Iterable[str | Path]) -> tuple[list[Run], list[dict]]:
    """Read every results.json under `paths`; return the complete runs and a list of problems
    (dicts with path, kind in corrupt/foreign/failed/unfinished/malformed/missing, message)."""
    files, problems = find_results(paths)
    runs = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(_problem(f, "corrupt", f"cannot read: {e}"))
            continue
        except json.JSONDecodeError as e:
            problems.append(_problem(f, "corrupt", f"not JSON (line {e.lineno}, column {e.colno}: {e.msg})"))
            continue
        if not isinstance(data, dict) or "schema_version" not in data:
            problems.append(_problem(f, "foreign", "no schema_version: not a robablate results.json"))
            continue
        if data["schema_version"] != SCHEMA_VERSION:
            problems.append(_problem(f, "foreign", f"schema_version {data['schema_version']!r}, "
                                                    f"this report reads {SCHEMA_VERSION}"))
            continue
        status = data.get("status")
        # A random-init control has no pretraining, so it may lack the pretrain block.
        needed = ("axes",) if data.get("init") == RANDOM_INIT else ("axes", "pretrain")
        missing = [k for k in needed if not isinstance(data.get(k), dict)]
        if status != "complete" or missing:
            kind = "failed" if status == "failed" else "unfinished"
            why = f"status {status!r}" + (f", missing {', '.join(missing)}" if missing else "")
            if data.get("error"):
                why += f": {data['error']}"
            problems.append(_problem(f, kind, why, axes=data.get("axes"), seed=data.get("seed")))
            continue
        axes = {a: axis_str(data["axes"].get(a)) for a in AXES}
        seed = data.get("seed")
        runs.append(Run(str(f.parent), axes, None if seed is None else int(seed), data))
    return runs, problems


def _problem(path: Path, kind: str, message: str, axes: Any = None, seed: Any = None) -> dict:
    d = {"path": str(path), "kind": kind, "message": message}
    if isinstance(axes, dict):
        d["axes"] = ", ".join(f"{k}={axis_str(v)}" for k, v in axes.items())
    if seed is not None:
        d["seed"] = seed
    return d


def run_rows(run: Run) -> list[dict]:
    """Tidy rows of one run: every read-out's rows (robablate/registry.py), with the run's axes."""
    base = {"run_dir": run.run_dir, **run.axes, "seed": run.seed}
    return [{**base, **row} for row in tidy_rows(run.data)]


def tidy_frame(runs: list[Run]) -> tuple[pd.DataFrame, list[dict]]:
    rows, problems = [], []
    for run in runs:
        try:
            rows.extend(run_rows(run))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            problems.append(_problem(Path(run.run_dir) / RESULTS_NAME, "malformed",
                                     f"unexpected layout ({type(e).__name__}: {e})"))
    df = pd.DataFrame(rows, columns=TIDY_COLUMNS + READOUT_COLUMNS)
    for c in ("run_dir", *AXES, "task", "metric", "readout", "kind", "group"):
        df[c] = df[c].astype(object)
    df["seed"] = df["seed"].astype("Int64")
    df["ft_seed"] = df["ft_seed"].astype("Int64")
    df["value"] = df["value"].astype(float)
    df["rank"] = df["rank"].astype("Int64")
    return df, problems


def history_frame(runs: list[Run]) -> pd.DataFrame:
    """pretrain.history of every run, one row per validation point (for the MLM curves)."""
    rows = []
    for run in runs:
        for h in (run.data.get("pretrain") or {}).get("history") or []:
            if isinstance(h, dict) and h.get("tokens") is not None:
                rows.append({"run_dir": run.run_dir, **run.axes, "seed": run.seed,
                             "step": h.get("step"), "tokens": float(h["tokens"]),
                             "val_mlm_loss": _num(h.get("val_mlm_loss")),
                             "val_mlm_ppl": _num(h.get("val_mlm_ppl"))})
    cols = ["run_dir", *AXES, "seed", "step", "tokens", "val_mlm_loss", "val_mlm_ppl"]
    return pd.DataFrame(rows, columns=cols)


def collect(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, list[dict]]:
    """The tidy frame (one row per run x task x fine-tuning seed x metric) and the problems list."""
    runs, problems = load_runs(paths)
    tidy, more = tidy_frame(runs)
    return tidy, problems + more


def _judged(r: Run) -> dict[str, Any] | None:
    """The run's pretrain.collapse record judged by the current rule (collapse.rejudge), None if absent."""
    pre = r.data.get("pretrain") or {}
    rec = pre.get("collapse")
    if not (isinstance(rec, dict) and "collapsed" in rec):
        return None
    return rejudge(rec, [h for h in pre.get("history") or [] if isinstance(h, dict)])


def overfit_runs(runs: list[Run]) -> dict[str, str]:
    """run_dir -> why, for every run that left the unigram solution and then overfit (robablate/collapse.py):
    its comparisons keep their verdict and name it."""
    return {r.run_dir: rec["overfit"] for r in runs if (rec := _judged(r)) and rec.get("overfit")}


def collapsed_runs(runs: list[Run]) -> dict[str, str]:
    """run_dir -> why, for every run that never left the one-token solution (robablate/collapse.py):
    the recorded numbers (pretrain.collapse) judged by the current rule, else the recorded-only rule over
    the runs that lack them (`identical_acc`: the same fixed-mask accuracy across seeds, unchanged at the end)."""
    out, old = {}, []
    for r in runs:
        pre = r.data.get("pretrain") or {}
        rec = _judged(r)
        if rec is not None:
            if rec["collapsed"]:
                out[r.run_dir] = f"collapsed: {rec.get('why') or rec.get('rule')}"
        else:
            hist = [h.get("val_mlm_acc") for h in pre.get("history") or [] if isinstance(h, dict)]
            old.append((r.run_dir, r.seed, [_num(a) for a in hist] or [_num(pre.get("val_mlm_acc"))]))
    old = [(d, s, [a for a in h if a is not None]) for d, s, h in old]
    out.update(identical_acc(old))
    return out


def primary_of(runs: list[Run], default: tuple[str, ...]) -> tuple[str, ...]:
    """The primary read-outs the runs' design names (config `report.primary`); runs that disagree are a
    ConfigError (the family must be one); none recorded: `default`."""
    found = {tuple(p) for r in runs if isinstance((p := (r.config.get("report") or {}).get("primary")), list)}
    if len(found) > 1:
        raise ConfigError(f"report.primary differs between runs: {sorted(found)}; one family per report "
                          f"(set report.primary the same in every run of the sweep)")
    return found.pop() if found else tuple(default)
