"""The read-out registry: one entry per read-out, and the only list the pipeline, the end-of-run
summary, the W&B summary and the report iterate.

An entry owns, for its read-out:
  * its config section (`config_key`) and when it runs (`kind`: pretraining, zero_shot, finetune);
  * its code, named by an import string (`impl`, loaded only when the read-out runs, so this module
    stays low in the layering): `check_config(section)` (no files, before the run folder exists),
    `check(section, stage)` (its input files, before any compute; returns what `run` needs) and
    `run(context) -> dict` (its results.json section, `results_key`); `section` is the read-out's own
    config section as a plain dict (`eval.blimp`, `glue`), `context` a `Context` below (the section, what
    `check` returned, the run's Plan and folders, the native `robablate.models.bert.BertForPretraining`
    and the run's Hugging Face tokenizer). The implementations sit with their domain: minimal_pairs/
    (`blimp`, `zorro`) and glue/ (`glue.readout`);
  * how its results.json section reads back (robablate/sections.py): the end-of-run summary lines,
    the one-line sweep summary part, the W&B summary dict and the report's tidy rows, each row with
    its read-out, kind, group and rank as data (the report orders and selects by them).

Adding a zero-shot read-out of minimal pairs (as Zorro was added) is: a conf/readouts/<name>.yaml, a
reader and an `impl` module with the three functions (side by side in minimal_pairs/), one `pairs(...)`
entry below, docs and tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Mapping

from robablate import sections

Results = Mapping[str, Any]


@dataclass(frozen=True)
class Readout:
    name: str           # readouts=[name] and report.primary's name for its headline
    kind: str           # pretraining | zero_shot | finetune: when it runs
    config_key: str     # its config section (dotted); None there = not configured
    results_key: str    # its section of results.json
    label: str          # tidy task of its headline row (and its name in summaries and plots)
    metric: str         # tidy metric of its headline row
    impl: str | None    # module with check_config / check / run (None: produced by pretraining)
    timing: str | None  # its results["timings"] key
    lines: Callable[[Results], list[str]] = field(repr=False)   # end-of-run summary lines
    part: Callable[[Results], list[str]] = field(repr=False)    # parts of the one-line summary
    wandb: Callable[[Results], dict[str, Any]] = field(repr=False)  # W&B summary entries
    rows: Callable[[Results], list[sections.Row]] = field(repr=False)  # tidy rows (task, ft_seed, metric, value, group)
    always: bool = False  # configured whatever its section holds (pretraining, GLUE with glue=none)

    def implementation(self) -> ModuleType:
        if self.impl is None:
            raise RuntimeError(f"read-out {self.name!r} has no implementation to run")
        return importlib.import_module(self.impl)


def pairs(name: str, label: str, groups: tuple[tuple[str, str], ...], impl: str, what: str,
          logged: tuple[tuple[str, str], ...] | None = None) -> Readout:
    """A zero-shot minimal-pairs read-out (BLiMP, Zorro): accuracy overall and per group (results key,
    label), one value per run; config section `eval.<name>`, results.json section `<name>`, tidy metric
    `<name>_acc`; W&B gets overall and the `logged` groups (default: the last)."""
    metric = f"{name}_acc"
    logged = groups[-1:] if logged is None else logged
    return Readout(
        name=name, kind="zero_shot", config_key=f"eval.{name}", results_key=name, label=label, metric=metric,
        impl=impl, timing=f"{name}_s",
        lines=lambda r: sections.pairs_lines(r, name, label, what), part=lambda r: sections.pairs_part(r, name, label),
        wandb=lambda r: sections.pairs_wandb(r, name, logged), rows=lambda r: sections.pairs_rows(r, name, label, metric, groups))


# Order = the order of results.json sections, summaries and report rows (rank = 10 x position + group).
READOUTS: dict[str, Readout] = {r.name: r for r in (
    Readout(name="mlm", kind="pretraining", config_key="train", results_key="pretrain", label=sections.PRETRAIN_TASK,
            metric="val_mlm_loss", impl=None, timing="pretrain_s", lines=sections.mlm_lines, part=sections.mlm_part,
            wandb=sections.mlm_wandb, rows=sections.mlm_rows, always=True),
    # BLiMP (Warstadt et al., TACL 2020): 67 paradigms; overall = mean over paradigms, per field and term.
    pairs("blimp", "BLiMP", (("by_field", "field"), ("by_term", "term")), "robablate.minimal_pairs.blimp",
          "accuracy, mean over paradigms"),
    # Zorro (Huebner et al., CoNLL 2021): 23 paradigms in a child-directed vocabulary, per phenomenon.
    pairs("zorro", "Zorro", (("by_phenomenon", "phenomenon"), ("by_paradigm", "paradigm")), "robablate.minimal_pairs.zorro",
          "accuracy, mean over paradigms", logged=(("by_phenomenon", "phenomenon"), ("by_paradigm", "paradigm"))),
    Readout(name="glue", kind="finetune", config_key="glue", results_key="glue", label="GLUE", metric="score",
            impl="robablate.glue.readout", timing="finetune_s", lines=sections.glue_lines, part=sections.glue_part,
            wandb=sections.glue_wandb, rows=sections.glue_rows, always=True),
)}
ZERO_SHOT = "zero_shot"


def select(config: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a plain config dict, None where any part is missing."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def configured(config: Mapping[str, Any]) -> list[Readout]:
    """The read-outs this run's config asks for, in registry order."""
    return [r for r in READOUTS.values() if r.always or select(config, r.config_key) is not None]


def zero_shot() -> list[Readout]:
    return [r for r in READOUTS.values() if r.kind == ZERO_SHOT]


def rank(readout: Readout, group: int) -> int:
    """Report order: read-outs in registry order, each one's groups in their order."""
    return 10 * list(READOUTS).index(readout.name) + group


def tidy_rows(results: Results) -> list[dict[str, Any]]:
    """Every read-out's tidy rows of one results.json, with readout, kind, group and rank columns."""
    out = []
    for r in READOUTS.values():
        for task, ft_seed, metric, value, group in r.rows(results):
            out.append({"task": task, "ft_seed": ft_seed, "metric": metric, "value": value, "readout": r.name,
                        "kind": r.kind, "group": group[1], "rank": rank(r, group[0])})
    return out


def headline_readout(task: str, metric: str) -> Readout | None:
    """The zero-shot read-out whose headline row this is (its name is what report.primary says)."""
    return next((r for r in zero_shot() if (r.label, r.metric) == (task, metric)), None)


@dataclass
class Context:
    """What a read-out's `run` gets: its own config section and what its `check` returned, the run's
    Plan and folders, and (after pretraining) the model and tokenizer."""

    section: dict[str, Any] | None
    prepared: Any = None
    plan: Any = None
    run_dir: Any = None
    hf_dir: Any = None
    model: Any = None
    tokenizer: Any = None
