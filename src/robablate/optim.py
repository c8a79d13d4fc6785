"""AdamW with BERT's parameter groups, and the learning-rate schedules of the `scheduler` axis.

The schedules are transformers' own (`transformers.get_scheduler`), so "linear" here is the same
function every HF fine-tuning script uses; this module only maps our config names onto them and turns
a warmup fraction into steps. `OptimizerSpec` and `ScheduleSpec` hold the `optimizer` and `scheduler`
groups once checked (config.validate builds them before any compute); the builders take them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from robablate.errors import ConfigError, int_at_least
from robablate.settings import Spec, setting

# our name -> transformers' SchedulerType name
SCHEDULERS = {
    "linear": "linear",                     # BERT §A.2 / RoBERTa §3.1: warmup, then linear decay to 0
    "cosine": "cosine",                     # half a cosine from peak to 0 after warmup
    "constant": "constant_with_warmup",     # peak LR after warmup
    "polynomial": "polynomial",             # (1 - progress)^power from peak to lr_end (absolute LR)
    "inverse_sqrt": "inverse_sqrt",         # peak * sqrt(timescale / (step + timescale - warmup))
}


def validate_lr(lr: Any, key: str = "optimizer.lr") -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a positive number, got {lr!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key} must be a positive number, got {lr!r}")
    return value


@dataclass(frozen=True)
class OptimizerSpec(Spec):
    """AdamW's settings, checked once by `from_config` (the `optimizer` group; fine-tuning builds one
    from its glue.* keys). The peak LR is not here: it is the Plan's (batch.lr, optimizer.lr or the
    tuned one) or the fine-tuning grid point's."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.0
    grad_clip: float = 0.0   # max global gradient norm; 0 = no clipping

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], section: str = "optimizer") -> "OptimizerSpec":
        """Every `optimizer` rule (null = the default); `section` names the keys in the messages."""
        betas = setting(cfg, "betas", [0.9, 0.999], null_is_default=True)
        if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
            raise ConfigError(f"{section}.betas must be two numbers in [0, 1), got {list(betas)!r}")
        values = {key: float(setting(cfg, key, default, null_is_default=True)) for key, default in
                  (("eps", 1e-6), ("weight_decay", 0.0), ("grad_clip", 0.0))}
        if not values["eps"] > 0:
            raise ConfigError(f"{section}.eps must be > 0, got {cfg.get('eps')!r}")
        if not values["weight_decay"] >= 0:
            raise ConfigError(f"{section}.weight_decay must be >= 0, got {cfg.get('weight_decay')!r}")
        if not values["grad_clip"] >= 0:
            raise ConfigError(f"{section}.grad_clip must be >= 0 (0 = no clipping), got {cfg.get('grad_clip')!r}")
        if cfg.get("lr") is not None:
            validate_lr(cfg.get("lr"), f"{section}.lr")
        return cls(betas=(float(betas[0]), float(betas[1])), **values)


@dataclass(frozen=True)
class ScheduleSpec(Spec):
    """The LR schedule (the `scheduler` group), checked once by `from_config`; `warmup` turns it into
    warmup steps for a run of a given length."""

    name: str
    warmup_steps: int | None = None   # a fixed warmup; None = warmup_fraction of the run
    warmup_fraction: float = 0.0
    power: float = 1.0                # polynomial
    lr_end: float = 0.0               # polynomial: absolute LR at the end
    timescale: int | None = None      # inverse_sqrt; None = the warmup length

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], section: str = "scheduler") -> "ScheduleSpec":
        """Every `scheduler` rule (null = the default); `section` names the keys in the messages."""
        name = cfg.get("name")
        if name not in SCHEDULERS:
            raise ConfigError(f"{section}.name must be one of {sorted(SCHEDULERS)}, got {name!r}")
        steps = int_at_least(cfg.get("warmup_steps"), f"{section}.warmup_steps", 0, null=True)
        frac = float(setting(cfg, "warmup_fraction", 0.0, null_is_default=True))
        if not 0.0 <= frac < 1.0:
            raise ConfigError(f"{section}.warmup_fraction must be in [0, 1), got {frac!r}")
        power = float(setting(cfg, "power", 1.0, null_is_default=True))
        lr_end = float(setting(cfg, "lr_end", 0.0, null_is_default=True))
        if not power > 0:
            raise ConfigError(f"{section}.power must be > 0, got {cfg.get('power')!r}")
        if not lr_end >= 0:
            raise ConfigError(f"{section}.lr_end must be >= 0, got {cfg.get('lr_end')!r}")
        timescale = cfg.get("timescale")
        return cls(name=name, warmup_steps=steps, warmup_fraction=frac, power=power, lr_end=lr_end,
                   timescale=int(timescale) if timescale is not None else None)

    def check_peak(self, peak: float, key: str = "optimizer.lr") -> None:
        """polynomial decays from the peak to lr_end (an absolute LR): lr_end must be below the peak.
        config.validate calls it with the run's peak (and the smallest tune.lr), before any compute."""
        if self.name == "polynomial" and not self.lr_end < peak:
            raise ConfigError(f"scheduler.lr_end={self.lr_end} must be below the peak LR {peak} ({key})")

    def warmup(self, total_steps: int) -> int:
        """warmup_steps if set (it must leave steps after it: a ConfigError otherwise), else
        round(warmup_fraction x total_steps), capped so that at least one step follows."""
        if self.warmup_steps is None:
            return min(round(self.warmup_fraction * total_steps), max(total_steps - 1, 0))
        if total_steps > 0 and self.warmup_steps >= total_steps:
            raise ConfigError(f"scheduler.warmup_steps={self.warmup_steps} must be smaller than the run's total "
                              f"optimizer steps ({total_steps})")
        return int(self.warmup_steps)


# --- optimizer ---------------------------------------------------------------------------------

def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decay on weight matrices and embeddings; none on biases and LayerNorm.

    As BERT's optimization.py (exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]): decaying
    a LayerNorm gain pulls it towards 0, not towards the identity. Tied weights appear once.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            is_norm = isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "norm" in type(module).__name__.lower()
            (no_decay if is_norm or name == "bias" else decay).append(p)
    return [{"params": decay, "weight_decay": float(weight_decay)},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optimizer: "OptimizerSpec | Mapping[str, Any]", lr: float,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, as BERT's AdamWeightDecayOptimizer) at peak LR `lr`. `optimizer`
    is an OptimizerSpec (a mapping is checked into one: benchmarks and tests pass plain dicts).

    fused: torch's single-pass AdamW kernel. None = on CUDA only; True = wherever torch has it (CPU and
    CUDA). On CPU the default for-loop runs ~10 ops per parameter tensor (and `foreach` is no faster on
    CPU: it loops over the same kernels); fused reads and writes each tensor once: 6.5 ms instead of
    33 ms per step for the 5.5M-parameter benchmark model (benchmarks.md). A fused optimizer unscales
    fp16 gradients inside step(), so callers that clip gradients under 16-mixed must pass False.
    """
    spec = OptimizerSpec.of(optimizer)
    lr = validate_lr(lr)
    groups = param_groups(model, spec.weight_decay)
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = all(p.is_cuda for p in params)
    fused = bool(fused) and bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay,
                             fused=fused)


# --- schedules ---------------------------------------------------------------------------------

def build_scheduler(optimizer: torch.optim.Optimizer, schedule: "ScheduleSpec | Mapping[str, Any]",
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule as a per-optimizer-step LambdaLR (call .step() after each optimizer step)."""
    from transformers import get_scheduler

    spec = ScheduleSpec.of(schedule)
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total optimizer steps must be a positive integer, got {total_steps!r}")
    extra: dict[str, Any] = {}
    if spec.name == "polynomial":
        extra = {"power": spec.power, "lr_end": spec.lr_end}  # absolute LR, not a ratio
        spec.check_peak(optimizer.defaults["lr"])
    elif spec.name == "inverse_sqrt" and spec.timescale is not None:
        extra = {"timescale": spec.timescale}  # default: the warmup length
    return get_scheduler(SCHEDULERS[spec.name], optimizer, num_warmup_steps=spec.warmup(total_steps),
                         num_training_steps=total_steps, scheduler_specific_kwargs=extra)


def lr_at(schedule: "ScheduleSpec | Mapping[str, Any]", total_steps: int, peak_lr: float, step: int) -> float:
    """Learning rate after `step` optimizer steps (pure: builds a throwaway optimizer). For tests/plots."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak_lr)
    return peak_lr * build_scheduler(opt, schedule, total_steps).lr_lambdas[0](step)
