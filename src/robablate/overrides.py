"""Refuse arguments that cannot take effect, before any compute.

Hydra already refuses a misspelt key given without `+` (the config is in struct mode). Two kinds of
argument still ran silently as if they were not there:

* a key added with `+key=value` (or `++key=value`) that nothing reads: a typo (`+train.tokns=1e6`),
  or a key of another option of a group (`+corpus.path=DIR` with corpus=synthetic). The keys robablate
  reads are the keys its YAML files declare (code reads no undeclared key), so the known keys are
  derived from the conf/ tree itself: other helpers' new groups and keys are known as soon as their
  YAML exists, with no list to keep in sync.
* a value the user typed that the rest of the config overrides or makes moot (`glue.seeds=0` with
  tasks, `glue.data_dir` when no task reads files, `optimizer.lr` under a batch preset's `batch.lr`).
  These rules are in `ineffective_settings`, one line each, with the hint that does what was meant.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robablate.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _flatten(node: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "defaults" and not prefix:
                continue
            path = f"{prefix}{k}"
            keys.add(path)
            keys |= _flatten(v, path + ".")
    return keys


@lru_cache(maxsize=4)
def declared_keys(conf_dir: str = str(CONF_DIR)) -> dict[str, set[str]]:
    """Every dotted key a YAML under conf/ declares -> the options declaring it ("config" for the
    primary file, "corpus=text", "experiment=smoke", ...). A file in conf/<group>/ declares its keys
    under <group>. unless it is `# @package _global_` (experiments). Hydra's own group is left out."""
    root = Path(conf_dir)
    out: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if rel.parts[0] == "hydra":
            continue
        text = path.read_text(encoding="utf-8")
        data = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}
        group = "/".join(rel.parts[:-1])
        source = f"{group}={path.stem}" if group else "config"
        prefix = "" if (not group or "@package _global_" in text.split("\n", 1)[0]) else group.replace("/", ".") + "."
        for key in _flatten(data):
            out.setdefault(prefix + key, set()).add(source)
        if group and prefix:
            out.setdefault(group.replace("/", "."), set()).add(source)
    return out


def is_group(key: str, conf_dir: str = str(CONF_DIR)) -> bool:
    return (Path(conf_dir) / key.replace(".", "/")).is_dir()


def parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def check_added_keys(overrides: list[str], cfg: DictConfig | None = None, conf_dir: str = str(CONF_DIR)) -> None:
    """ConfigError for a `+key=value` / `++key=value` whose key no YAML of the chosen options declares:
    nothing would read it. A `+group=option` (a config group) is fine."""
    from hydra.core.override_parser.types import OverrideType

    known = declared_keys(conf_dir)
    for ov in parse(overrides):
        key = ov.key_or_group
        if ov.type not in (OverrideType.ADD, OverrideType.FORCE_ADD) or key.startswith("hydra.") or ov.package:
            continue
        if is_group(key, conf_dir):
            continue
        where = sorted(known.get(key, ()))
        if ov.type == OverrideType.FORCE_ADD and where and cfg is not None and OmegaConf.select(cfg, key) is not None \
                and any(_chosen(cfg, w) for w in where):
            continue  # `++key=v` on a key the chosen options declare: a plain override
        text = ov.input_line or key
        if where:
            raise ConfigError(f"Invalid config `{text}`: `{key}` is read only with {', '.join(where)}, which this run "
                              f"does not use, so it would have no effect. Choose that option (e.g. "
                              f"`{where[0]}`) or drop the argument.")
        siblings = sorted(k for k in known if k.rsplit(".", 1)[0] == key.rsplit(".", 1)[0] and "." in k) \
            if "." in key else sorted(k for k in known if "." not in k)
        close = difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"Invalid config `{text}`: no part of robablate reads `{key}` (no file under conf/ "
                          f"declares it), so it would have no effect.{hint} Without `+`, Hydra lists the keys "
                          f"that exist.")


def _chosen(cfg: DictConfig, source: str) -> bool:
    """Whether the option `group=name` (or the primary config) is part of this composed config."""
    if source == "config" or "=" not in source:
        return True
    group, name = source.split("=", 1)
    if group == "experiment":
        return str(cfg.get("experiment_name")) == name
    return str(OmegaConf.select(cfg, f"{group.replace('/', '.')}.name")) == name


def typed_keys(overrides: list[str]) -> dict[str, Any]:
    """key -> value of every plain `key=value` the user typed (not groups, not Hydra's own keys)."""
    from hydra.core.override_parser.types import OverrideType

    out = {}
    for ov in parse(overrides):
        key = ov.key_or_group
        if ov.type == OverrideType.DEL or key.startswith("hydra.") or is_group(key):
            continue
        out[key] = ov.input_line
    return out


def ineffective_settings(cfg: DictConfig, typed: dict[str, Any]) -> list[str]:
    """Messages for settings that cannot take effect in this config (empty when all can)."""
    sel = lambda k, d=None: OmegaConf.select(cfg, k, default=d)  # noqa: E731
    out: list[str] = []
    glue_name = sel("glue.name")
    tasks = list(sel("glue.tasks") or []) if glue_name != "none" else []
    if not tasks:
        moot = [k for k in typed if k.startswith("glue.") and k != "glue.tasks"]
        if moot:
            out.append(f"{', '.join(f'`{k}`' for k in moot)}: there are no fine-tuning tasks "
                       f"({'glue=none' if glue_name == 'none' else 'glue.tasks=[]'}), so this has no effect; set "
                       f"glue.tasks=[...] (e.g. glue=default) or drop it.")
    elif "glue.data_dir" in typed and sel("glue.data_dir") is not None:
        from robablate.glue.tasks import get_task

        reads = sel("glue.source", "local") == "local" and any(not get_task(t).synthetic for t in tasks)
        if not reads:
            why = "glue.source=hf reads the hub" if sel("glue.source") == "hf" else \
                f"the tasks {tasks} are robablate's synthetic tasks"
            out.append(f"`glue.data_dir` is not read: {why}. Add real GLUE tasks (e.g. glue.tasks=[RTE,MRPC]) "
                       f"or drop glue.data_dir.")
    grid = sel("glue.grid") or {}
    clash = [k for k in grid if f"glue.{k}" in typed]
    if tasks and clash:
        out.append(f"{', '.join(f'`glue.{k}`' for k in clash)}: glue.grid sets {', '.join(clash)} for every grid "
                   f"point, so the typed value has no effect; change glue.grid or set glue.grid=null.")
    if "optimizer.lr" in typed and sel("batch.lr") is not None:
        out.append(f"`optimizer.lr` has no effect: the batch preset's batch.lr={sel('batch.lr')} wins (the peak LR "
                   f"belongs to the batch size); set batch.lr=... instead, or batch.lr=null to use optimizer.lr.")
    if "train.tokens" in typed and sel("train.max_steps") is not None:
        out.append(f"`train.tokens` has no effect: train.max_steps={sel('train.max_steps')} fixes the steps; set "
                   f"train.max_steps=null to derive them from the token budget.")
    if "scheduler.warmup_fraction" in typed and sel("scheduler.warmup_steps") is not None:
        out.append(f"`scheduler.warmup_fraction` has no effect: scheduler.warmup_steps="
                   f"{sel('scheduler.warmup_steps')} wins; set scheduler.warmup_steps=null.")
    if "masking.dupe_factor" in typed and sel("masking.name") == "dynamic":
        out.append("`masking.dupe_factor` has no effect with masking=dynamic (a fresh mask every epoch); it is "
                   "the number of static copies (masking=static).")
    if "corpus.val_fraction" in typed and (sel("corpus.val_glob") or sel("corpus.val_split")):
        out.append("`corpus.val_fraction` has no effect: the validation documents come from "
                   f"{'corpus.val_glob' if sel('corpus.val_glob') else 'corpus.val_split'}; set it to null to hold "
                   "out a fraction of the training documents.")
    if sel("stage", "all") == "pretrain" and tasks and any(k.startswith("glue.") for k in typed):
        out.append("glue.* settings have no effect with stage=pretrain (no fine-tuning); drop them, or run "
                   "stage=all / stage=finetune.")
    if sel("resume") and sel("stage", "all") == "finetune":
        out.append("`resume=true` has no effect with stage=finetune (it resumes pretraining).")
    if "tokenizer.vocab_size" in typed and sel("tokenizer.path") not in (None, "???"):
        out.append("`tokenizer.vocab_size` has no effect: tokenizer.path loads a trained tokenizer.")
    return out


def check_arguments(cfg: DictConfig, overrides: list[str], total_steps: int | None = None,
                    sweep: bool = False) -> None:
    """Refuse, in one ConfigError, every argument of `overrides` that cannot take effect. In a sweep
    (`sweep=True`) a typed value may matter for some arms only (`masking=static,dynamic
    masking.dupe_factor=20`), so ineffective_settings only warns there."""
    check_added_keys(overrides, cfg)
    tasks = list(OmegaConf.select(cfg, "glue.tasks") or []) if OmegaConf.select(cfg, "glue.name") != "none" else []
    seeds = OmegaConf.select(cfg, "glue.seeds", default=0)
    if tasks and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):  # moot in every arm
        raise ConfigError(f"Invalid config `glue.seeds={seeds}`: with glue.tasks={tasks} it would fine-tune "
                          f"nothing; give glue.seeds >= 1, or `glue=none` to skip fine-tuning.")
    msgs = ineffective_settings(cfg, typed_keys(overrides))
    if sweep and msgs:
        import warnings

        for m in msgs:
            warnings.warn(f"in this arm of the sweep: {m}", stacklevel=2)
        msgs = []
    stop = OmegaConf.select(cfg, "train.stop_at_step")
    if stop is not None and total_steps is not None and stop >= total_steps:
        msgs.append(f"`train.stop_at_step={stop}` has no effect: the run has {total_steps} steps; pick a step "
                    f"below {total_steps}.")
    if msgs:
        raise ConfigError("Invalid config: " + (msgs[0] if len(msgs) == 1 else "\n  " + "\n  ".join(msgs)))
