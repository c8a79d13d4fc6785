"""The results.json contract shared by its writers (config.py, results.py) and its reader (report/):
the schema version, the table of ablation axes, and the config keys that are not part of an arm.

Constants and the standard library only, so `robablate.report` reads results without torch, Lightning
or Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

SCHEMA_VERSION = 1  # results.json["schema_version"]; bump on an incompatible change, the report checks it


@dataclass(frozen=True)
class Axis:
    """One ablation axis: everything schema, config.axes_of, pairing and the report know about it."""

    name: str                 # results.json["axes"] key and the report's column
    key: str                  # the config key holding an arm's value (a group's `name`, or a plain key)
    values: tuple[str, ...]   # the values robablate ships (conf/ presets); others are allowed
    baseline: str | None      # the BERT-side value (docs/facts.md §1), first in every table; None: no side
    sections: tuple[str, ...] = ()  # config sections its preset sets (their keys belong to the arm, not confounds)
    cast: Callable[[Any], Any] | None = None  # how results.json records the value (None: as configured)
    order: str = "name"       # arm order after the baseline: "name" (numbers numerically) or "size" (batch)
    resolved: str | None = None  # the Plan attribute holding the resolved value (format=auto -> its format)


# The ablation axes (RoBERTa Tables 1-3; docs/facts.md §1) in table order. A new axis is one row here
# (docs/design.md: the touch-list).
AXIS_TABLE: tuple[Axis, ...] = (
    Axis("masking", "masking.name", ("static", "dynamic"), "static", ("masking",)),
    Axis("nsp", "nsp", ("true", "false"), "true", cast=bool),
    Axis("format", "format.name", ("segment_pair", "sentence_pair", "full_sentences", "doc_sentences"), "segment_pair",
         ("format",), resolved="format"),
    Axis("batch", "batch.name", ("default", "bs256", "2k", "8k"), None, ("batch",), cast=str, order="size"),
    Axis("seq_len", "seq_len.name", ("64", "128", "512", "two_phase"), "128", ("seq_len",), cast=str),
    Axis("scheduler", "scheduler.name", ("linear", "constant", "cosine", "inverse_sqrt", "polynomial"), "linear",
         ("scheduler",)),
    Axis("model", "model.name", ("micro", "tiny", "mini", "small", "base"), None, ("model",)),
    Axis("corpus", "corpus.name", ("synthetic", "text", "hf", "wikitext2"), None, ("corpus",)),
)
AXES = tuple(a.name for a in AXIS_TABLE)  # results.json["axes"] keys, in table order


def axis(name: str) -> Axis | None:
    return next((a for a in AXIS_TABLE if a.name == name), None)


# Keys that never change a run's numbers: where it runs, how fast, what it logs (a key covers every key
# under it). A relaunch compares configs without them (relaunch.config_diff).
RUN_ONLY_KEYS = ("run_dir", "resume", "overwrite", "cache_dir", "experiment_name", "logger", "hydra",
                 "trainer.devices", "trainer.num_nodes", "trainer.strategy", "trainer.accelerator",
                 "trainer.enable_progress_bar", "trainer.log_every_n_steps", "train.num_workers",
                 "train.compile", "train.checkpoint_every_steps", "train.stop_at_step", "report", "dry_run")
# THE keys that are not part of an arm: the run-only keys, and which seed, preset, stage and trainer
# preset ran it. The report's pairing ignores them, the LR tuner's cache key drops them (and more: tune.py),
# and Hydra leaves them out of a sweep's folder names.
NOT_ARM_KEYS = (*RUN_ONLY_KEYS, "seed", "experiment", "stage", "trainer")
# Hydra matches an override's key exactly, so its exclude_keys (conf/hydra/default.yaml) are NOT_ARM_KEYS
# plus the sub-keys of them a command line types (tests/test_axes.py checks the file against this).
FOLDER_EXCLUDED_KEYS = (*NOT_ARM_KEYS, "logger.mode", "logger.project", "logger.group", "logger.tags",
                        "hydra.launcher", "report.primary")


def not_arm(key: str, keys: tuple[str, ...] = NOT_ARM_KEYS) -> bool:
    """Whether a dotted config key is, or sits under, one of `keys`."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def recorded_precision(record: dict[str, Any]) -> str | None:
    """The precision a run resolved `train.precision` to: started.json's `precision`, or results.json's
    plan.precision; None in records written before robablate recorded it."""
    return record.get("precision") or (record.get("plan") or {}).get("precision")


def with_resolved_precision(config: dict[str, Any], resolved: str | None) -> dict[str, Any]:
    """`config` with `train.precision: auto` replaced by what it resolved to (results.json plan.precision,
    started.json precision). `auto` means bf16-mixed on a GPU or a CPU with bf16 hardware and 32-true
    elsewhere, so two runs that both say `auto` may have trained in different precisions (mixed SLURM
    nodes); comparing the resolved value names that, and an explicit 32-true equals an `auto` that ran
    in 32-true. Unchanged when the config names a precision or the resolved one is unknown."""
    train = config.get("train")
    if isinstance(train, dict) and train.get("precision") == "auto" and resolved:
        return {**config, "train": {**train, "precision": resolved}}
    return config
