"""Check a composed config before any compute, and derive the run's plan (steps, batches, LR).

Everything a user can get wrong in a config is caught here with a ConfigError that names the key and
what is allowed, so a bad arm of a sweep fails in a second instead of after its tokenizer is trained.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robablate.errors import ConfigError
from robablate.settings import setting
from robablate.schema import AXES

# Groups with option names that look like numbers (`seq_len=128`): Hydra would parse the value as an
# int and refuse it as a group override, so command lines are normalised by `normalize_overrides`.
NUMERIC_OPTION_GROUPS = ("seq_len", "batch")
# batch.unit: `tokens` fills every optimizer step to the same number of tokens fed, whatever the
# format (RoBERTa §4.2 did this for DOC-SENTENCES); `sequences` takes batch.size instances (BERT).
BATCH_UNITS = ("tokens", "sequences")


def nsp_for_format(name: str) -> bool:
    """`nsp: ${nsp_for_format:${format.name}}` lets a sweep over formats keep NSP exactly for the pair
    formats (RoBERTa Table 2), since Hydra's basic sweeper cannot couple two keys."""
    from robablate.data.formats import NSP_FORMATS

    return str(name) == "auto" or str(name) in NSP_FORMATS


OmegaConf.register_new_resolver("nsp_for_format", nsp_for_format, replace=True)


def arm_dir(override_dirname: str) -> str:
    """A sweep job's folder from its arm-defining overrides; `default` when it has none (a sweep over
    seeds only: `${hydra.job.override_dirname}/seed=0` would be the absolute path /seed=0)."""
    return str(override_dirname) or "default"


OmegaConf.register_new_resolver("arm_dir", arm_dir, replace=True)


def normalize_overrides(args: list[str]) -> list[str]:
    """Quote numeric options of groups (`seq_len=128,512` -> `seq_len='128','512'`) so Hydra reads
    them as option names; everything else passes through unchanged."""
    out = []
    for arg in args:
        m = re.fullmatch(r"(\+{0,2})(%s)=([0-9][0-9,]*)" % "|".join(NUMERIC_OPTION_GROUPS), arg)
        if m:
            prefix, key, values = m.groups()
            arg = f"{prefix}{key}=" + ",".join(f"'{v}'" for v in values.split(",") if v)
        out.append(arg)
    return out


@dataclass
class Phase:
    max_len: int
    steps: int
    tokens_per_step: int       # the step's token budget: global batch x max_len (tokens fed, see Plan)


@dataclass
class Plan:
    """What the config means once resolved: the numbers a run actually uses."""

    format: str
    nsp: bool
    phases: list[Phase]
    total_steps: int
    global_batch: int          # sequences per optimizer step (batch.unit=sequences), or the nominal count
    micro_batch: int           # sequences per forward pass per device (nominal under batch.unit=tokens)
    accumulate: int            # gradient accumulation steps
    world_size: int
    # The compute budget is tokens actually fed: non-padding input tokens, [CLS]/[SEP]/document
    # separators included. Each optimizer step aims at global_batch x max_len of its phase; this is
    # the step-weighted mean over phases (= the single phase's budget). With batch.unit=tokens every
    # format reaches it on average (data/batching.plan_epoch); with sequences it is an upper bound.
    tokens_per_step_target: int
    token_batching: bool       # batch.unit=tokens: batches filled to a token budget, not a sequence count
    batch_unit: str
    lr: float                  # peak LR: batch.lr or optimizer.lr, or the one tune.lr chose (tune.py)
    warmup_steps: int
    val_every_steps: int
    precision: str
    tune_lr: list[float] | None = None   # the per-arm LR grid (tune.lr), None = no tuning
    tune_tokens: int | None = None       # tokens fed per pilot run of the grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return setting(cfg, key, default)


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"Invalid config `{key}`: {msg}")


def _positive_number(cfg: DictConfig, key: str) -> float:
    v = _get(cfg, key)
    _require(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, key,
             f"expected a positive number, got {v!r}.")
    return v


def world_size(cfg: DictConfig) -> int:
    """Processes that share the global batch: devices x nodes (devices=-1/auto = all visible GPUs)."""
    devices = _get(cfg, "trainer.devices", 1)
    nodes = int(_get(cfg, "trainer.num_nodes", 1) or 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        n = len(devices)
    elif devices in (-1, "-1", "auto"):
        accel = _get(cfg, "trainer.accelerator", "auto")
        n = 1
        if accel in ("gpu", "cuda", "auto"):
            import torch

            n = max(1, torch.cuda.device_count())
    else:
        try:
            n = int(devices)
        except (TypeError, ValueError):
            raise ConfigError(f"Invalid config `trainer.devices`: expected an int, a list or -1, got {devices!r}.")
        _require(n >= 1, "trainer.devices", f"expected >= 1 (or -1 for all GPUs), got {n}.")
    return n * nodes


def resolve_precision(cfg: DictConfig) -> str:
    p = str(_get(cfg, "train.precision", "auto"))
    if p != "auto":
        return p
    import torch

    accel = _get(cfg, "trainer.accelerator", "auto")
    on_gpu = accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def validate(cfg: DictConfig) -> Plan:
    """Check every key a run depends on and derive its Plan; raise ConfigError on the first problem."""
    from robablate.data.formats import resolve_format  # the one place format/nsp rules live

    nsp = _get(cfg, "nsp")
    _require(isinstance(nsp, bool), "nsp", f"expected true or false, got {nsp!r}.")

    # Each rule has one home, the module that applies it; these checks run before any compute.
    from robablate.data.masking import validate_masking
    from robablate.data.tokenizer import validate_tokenizer
    from robablate.models.bert import BertConfig
    from robablate.optim import validate_optimizer, validate_scheduler, warmup_steps

    validate_masking(cfg.masking)  # BERT §3.1 / RoBERTa §4.1; docs/facts.md §2

    fmt = resolve_format(str(_get(cfg, "format.name")), nsp)

    # Model (the vocabulary comes from the tokenizer later; 1 stands in for it here) and sequence length.
    BertConfig.from_cfg(cfg.model, vocab_size=1, pad_token_id=0)
    max_pos = int(_get(cfg, "model.max_position_embeddings", 512))
    phases_cfg = _get(cfg, "seq_len.phases")
    _require(phases_cfg is not None and len(phases_cfg) > 0, "seq_len.phases", "expected at least one phase.")
    fractions = [float(ph.fraction) for ph in phases_cfg]
    _require(abs(sum(fractions) - 1.0) < 1e-6 and all(f > 0 for f in fractions), "seq_len.phases",
             f"phase fractions must be positive and sum to 1, got {fractions}.")
    for ph in phases_cfg:
        L = ph.max_len
        _require(isinstance(L, int) and L >= 8, "seq_len", f"max_len must be an integer >= 8, got {L!r}.")
        _require(L <= max_pos, "seq_len",
                 f"sequence length {L} exceeds the model's position embeddings "
                 f"(model.max_position_embeddings={max_pos}); pick seq_len <= {max_pos} or a larger model.")
    val_len = int(_get(cfg, "train.val_max_len", phases_cfg[0].max_len))
    _require(8 <= val_len <= max_pos, "train.val_max_len", f"expected 8..{max_pos}, got {val_len}.")
    ssp = _get(cfg, "seq_len.short_seq_prob", 0.0)
    _require(0 <= ssp < 1, "seq_len.short_seq_prob", f"expected a probability in [0, 1), got {ssp!r}.")

    validate_tokenizer(cfg.tokenizer)

    # Batch: the global batch is realised as micro-batch x accumulation x devices (RoBERTa Table 3).
    size = _get(cfg, "batch.size")
    scale = _get(cfg, "batch.scale", 1.0) or 1.0
    _require(isinstance(size, int) and size >= 1, "batch.size", f"expected a positive integer, got {size!r}.")
    unit = _get(cfg, "batch.unit", "tokens")
    _require(unit in BATCH_UNITS, "batch.unit", f"expected one of {BATCH_UNITS}, got {unit!r}.")
    _require(isinstance(scale, (int, float)) and scale > 0, "batch.scale", f"expected a positive number, got {scale!r}.")
    global_batch = max(1, int(round(size * scale)))
    ws = world_size(cfg)
    micro = _get(cfg, "batch.micro_batch_size")
    if micro is None:
        _require(global_batch % ws == 0, "batch.size",
                 f"the global batch ({global_batch} sequences) must be divisible by the number of devices "
                 f"(trainer.devices x trainer.num_nodes = {ws}).")
        micro = global_batch // ws
    _require(isinstance(micro, int) and micro >= 1, "batch.micro_batch_size", f"expected a positive integer, got {micro!r}.")
    _require(global_batch % (micro * ws) == 0, "batch.micro_batch_size",
             f"the global batch ({global_batch} = batch.size x batch.scale) must be divisible by "
             f"micro-batch x devices ({micro} x {ws} = {micro * ws}); pick batch.micro_batch_size among "
             f"{[m for m in range(1, global_batch // ws + 1) if global_batch % (m * ws) == 0][-6:]}.")
    accumulate = global_batch // (micro * ws)

    # Learning rate and steps: steps derive from the token budget so arms compare at equal compute.
    lr_batch = _get(cfg, "batch.lr")
    lr = lr_batch if lr_batch is not None else _get(cfg, "optimizer.lr")
    _require(isinstance(lr, (int, float)) and lr > 0, "optimizer.lr" if lr_batch is None else "batch.lr",
             f"expected a positive learning rate, got {lr!r}.")
    mean_len = sum(f * ph.max_len for f, ph in zip(fractions, phases_cfg))
    max_steps = _get(cfg, "train.max_steps")
    if max_steps is not None:
        _require(isinstance(max_steps, int) and max_steps > 0, "train.max_steps", f"expected a positive integer, got {max_steps!r}.")
        total = max_steps
    else:
        tokens = _positive_number(cfg, "train.tokens")
        total = max(1, math.ceil(tokens / (global_batch * mean_len)))
    phase_steps = [int(round(f * total)) for f in fractions]
    phase_steps[-1] = total - sum(phase_steps[:-1])
    _require(all(s >= 1 for s in phase_steps), "train.tokens",
             f"the budget gives {total} steps, too few to split into phases {fractions}; raise train.tokens.")
    phases = [Phase(max_len=int(ph.max_len), steps=s, tokens_per_step=global_batch * int(ph.max_len))
              for ph, s in zip(phases_cfg, phase_steps)]
    target = int(round(sum(ph.steps * ph.tokens_per_step for ph in phases) / total))
    tune_lr, tune_tokens = _tune(cfg, budget=total * target)

    validate_optimizer(cfg.optimizer)
    validate_scheduler(cfg.scheduler)
    warmup = warmup_steps(cfg.scheduler, total)  # the schedule's own rule: a too-long warmup fails here

    every = _get(cfg, "train.val_every_steps")
    if every is None:
        every = max(1, total // 10)
    _require(isinstance(every, int) and every >= 1, "train.val_every_steps", f"expected a positive integer, got {every!r}.")

    return Plan(
        format=fmt, nsp=nsp, phases=phases, total_steps=total, global_batch=global_batch, micro_batch=micro,
        accumulate=accumulate, world_size=ws, tokens_per_step_target=target, token_batching=unit == "tokens",
        batch_unit=unit, lr=float(lr), warmup_steps=warmup, val_every_steps=every,
        precision=resolve_precision(cfg), tune_lr=tune_lr, tune_tokens=tune_tokens,
    )


def _tune(cfg: DictConfig, budget: int) -> tuple[list[float] | None, int | None]:
    """The checked per-arm LR grid and pilot budget (tune.py runs them), or (None, None) without a grid."""
    grid = _get(cfg, "tune.lr")
    if grid is None:
        return None, None
    expected = "expected a list of at least 2 distinct positive learning rates, e.g. tune.lr=[3e-4,1e-3,3e-3]"
    _require(OmegaConf.is_list(grid) or isinstance(grid, (list, tuple)), "tune.lr", f"{expected}, got {grid!r}.")
    values = list(grid)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < 1
             for v in values)
    _require(ok and len(values) >= 2 and len(set(values)) == len(values), "tune.lr",
             f"{expected} (each in (0, 1)), got {values!r}.")
    tokens = _get(cfg, "tune.tokens")
    if tokens is None:
        frac = _get(cfg, "tune.fraction", 0.25)
        _require(isinstance(frac, (int, float)) and 0 < frac <= 1, "tune.fraction",
                 f"expected a fraction in (0, 1] of the run's token budget, got {frac!r}.")
        tokens = frac * budget
    else:
        _require(isinstance(tokens, (int, float)) and not isinstance(tokens, bool) and tokens > 0, "tune.tokens",
                 f"expected a positive number of tokens (or null for tune.fraction x the budget), got {tokens!r}.")
    seed = _get(cfg, "tune.seed", 0)
    _require(isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "tune.seed",
             f"expected an integer >= 0, got {seed!r}.")
    return sorted(float(v) for v in values), int(math.ceil(tokens))


def axes_of(cfg: DictConfig, plan: Plan | None = None) -> dict[str, Any]:
    """The axis values of this arm, as the report groups them (format resolved from `auto`), in AXES order."""
    values = {
        "masking": _get(cfg, "masking.name"),
        "nsp": bool(_get(cfg, "nsp")),
        "format": plan.format if plan else _get(cfg, "format.name"),
        "batch": str(_get(cfg, "batch.name")),
        "seq_len": str(_get(cfg, "seq_len.name")),
        "scheduler": _get(cfg, "scheduler.name"),
        "model": _get(cfg, "model.name"),
        "corpus": _get(cfg, "corpus.name"),
    }
    return {a: values[a] for a in AXES}
