"""One way to read a setting from a config section, and the base of the checked settings (`Spec`).

Each config group is checked once, by the module that owns its rules, into a frozen `Spec` (its
`from_config` reads the section with `setting`); the stages then take the spec, never the config.
Sections arrive as Hydra DictConfigs from `run.py` and as plain dicts from tests and notebooks; a
mandatory value left as `???` must fail as a ConfigError that names the full key (`corpus.path`), not
as OmegaConf's MissingMandatoryValue deep inside a data loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robablate.errors import ConfigError

_UNSET = object()


class Spec:
    """Base of the checked, frozen settings of a config group that stages also accept as a plain
    section (CorpusSpec, TokenizerSpec, MaskingSpec, OptimizerSpec, ScheduleSpec): a subclass's
    `from_config(section)` checks every rule of its group once."""

    @classmethod
    def of(cls, value: Any) -> Any:
        """`value` itself when it is already one (checked when it was built), else checked from a
        config section: the pipeline passes specs; tests, notebooks and benchmarks may pass dicts."""
        return value if isinstance(value, cls) else cls.from_config(value)


def setting(cfg: Mapping[str, Any] | None, key: str, default: Any = None, *, section: str = "",
            required: bool = False, null_is_default: bool = False) -> Any:
    """cfg[key] (a dotted key walks nested sections), else `default`.

    section: the section's own name (`corpus`), so errors name the full key (`corpus.path`).
    required: a missing, null or empty value is a ConfigError. null_is_default: an explicit null
    counts as absent (for knobs whose YAML writes `null` for "the default").
    """
    name = f"{section}.{key}" if section else key
    value: Any = cfg if cfg is not None else _UNSET
    for part in key.split("."):
        if value is _UNSET or not isinstance(value, Mapping) and not hasattr(value, "get"):
            value = _UNSET
            break
        if _is_missing(value, part):
            raise ConfigError(f"{name}: required (it is `???`); set it on the command line, e.g. {name}=...")
        value = value.get(part, _UNSET)
    if value is _UNSET or (null_is_default and value is None):
        value = default
    if required and (value is None or value == "???" or value == ""):
        raise ConfigError(f"{name}: required, got {value!r}.")
    return value


def _is_missing(node: Any, key: str) -> bool:
    """A DictConfig's `???` value (reading it would raise MissingMandatoryValue)."""
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - plain dicts only
        return False
    return isinstance(node, DictConfig) and OmegaConf.is_missing(node, key)
