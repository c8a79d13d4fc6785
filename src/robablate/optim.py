"""AdamW with BERT's parameter groups, and the learning-rate schedules of the `scheduler` axis.

The schedules are transformers' own (`transformers.get_scheduler`), so "linear" here is the same
function every HF fine-tuning script uses; this module only maps our config names onto them and turns
a warmup fraction into steps.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from robablate.errors import ConfigError
from robablate.settings import setting

# our name -> transformers' SchedulerType name
SCHEDULERS = {
    "linear": "linear",                     # BERT §A.2 / RoBERTa §3.1: warmup, then linear decay to 0
    "cosine": "cosine",                     # half a cosine from peak to 0 after warmup
    "constant": "constant_with_warmup",     # peak LR after warmup
    "polynomial": "polynomial",             # (1 - progress)^power from peak to lr_end (absolute LR)
    "inverse_sqrt": "inverse_sqrt",         # peak * sqrt(timescale / (step + timescale - warmup))
}


def _get(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return setting(cfg, key, default, null_is_default=True)


# --- validation (called by config.validate before any compute, and again here) ---------------------

def validate_lr(lr: Any, key: str = "optimizer.lr") -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a positive number, got {lr!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key} must be a positive number, got {lr!r}")
    return value


def validate_optimizer(cfg_optimizer: Mapping[str, Any]) -> None:
    betas = _get(cfg_optimizer, "betas", [0.9, 0.999])
    if len(betas) != 2 or not all(0.0 <= float(b) < 1.0 for b in betas):
        raise ConfigError(f"optimizer.betas must be two numbers in [0, 1), got {list(betas)!r}")
    if not float(_get(cfg_optimizer, "eps", 1e-6)) > 0:
        raise ConfigError(f"optimizer.eps must be > 0, got {cfg_optimizer.get('eps')!r}")
    if not float(_get(cfg_optimizer, "weight_decay", 0.0)) >= 0:
        raise ConfigError(f"optimizer.weight_decay must be >= 0, got {cfg_optimizer.get('weight_decay')!r}")
    if not float(_get(cfg_optimizer, "grad_clip", 0.0)) >= 0:
        raise ConfigError(f"optimizer.grad_clip must be >= 0 (0 = no clipping), "
                          f"got {cfg_optimizer.get('grad_clip')!r}")
    if cfg_optimizer.get("lr") is not None:
        validate_lr(cfg_optimizer.get("lr"))


def validate_scheduler(cfg_scheduler: Mapping[str, Any]) -> None:
    name = cfg_scheduler.get("name")
    if name not in SCHEDULERS:
        raise ConfigError(f"scheduler.name must be one of {sorted(SCHEDULERS)}, got {name!r}")
    steps = cfg_scheduler.get("warmup_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ConfigError(f"scheduler.warmup_steps must be a non-negative integer or null, got {steps!r}")
    frac = float(_get(cfg_scheduler, "warmup_fraction", 0.0))
    if not 0.0 <= frac < 1.0:
        raise ConfigError(f"scheduler.warmup_fraction must be in [0, 1), got {frac!r}")
    if not float(_get(cfg_scheduler, "power", 1.0)) > 0:
        raise ConfigError(f"scheduler.power must be > 0, got {cfg_scheduler.get('power')!r}")
    if not float(_get(cfg_scheduler, "lr_end", 0.0)) >= 0:
        raise ConfigError(f"scheduler.lr_end must be >= 0, got {cfg_scheduler.get('lr_end')!r}")


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


def build_optimizer(model: nn.Module, cfg_optimizer: Mapping[str, Any], lr: float,
                    fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay, as BERT's AdamWeightDecayOptimizer) at peak LR `lr`.

    fused: torch's single-pass AdamW kernel. None = on CUDA only; True = wherever torch has it (CPU and
    CUDA). On CPU the default for-loop runs ~10 ops per parameter tensor (and `foreach` is no faster on
    CPU: it loops over the same kernels); fused reads and writes each tensor once: 6.5 ms instead of
    33 ms per step for the 5.5M-parameter benchmark model (benchmarks.md). A fused optimizer unscales
    fp16 gradients inside step(), so callers that clip gradients under 16-mixed must pass False.
    """
    validate_optimizer(cfg_optimizer)
    lr = validate_lr(lr)
    wd = float(_get(cfg_optimizer, "weight_decay", 0.0))
    groups = param_groups(model, wd)
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = all(p.is_cuda for p in params)
    fused = bool(fused) and bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(float(b) for b in _get(cfg_optimizer, "betas", (0.9, 0.999))),
                             eps=float(_get(cfg_optimizer, "eps", 1e-6)), weight_decay=wd, fused=fused)


# --- schedules ---------------------------------------------------------------------------------

def warmup_steps(cfg_scheduler: Mapping[str, Any], total_steps: int) -> int:
    """scheduler.warmup_steps if set, else round(warmup_fraction * total_steps)."""
    steps = cfg_scheduler.get("warmup_steps")
    if steps is None:  # a fraction < 1 always leaves at least one step after warmup
        return min(round(float(_get(cfg_scheduler, "warmup_fraction", 0.0)) * total_steps), max(total_steps - 1, 0))
    if total_steps > 0 and steps >= total_steps:
        raise ConfigError(f"scheduler.warmup_steps={steps} must be smaller than the run's total "
                          f"optimizer steps ({total_steps})")
    return int(steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg_scheduler: Mapping[str, Any],
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The LR schedule as a per-optimizer-step LambdaLR (call .step() after each optimizer step)."""
    from transformers import get_scheduler

    validate_scheduler(cfg_scheduler)
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ConfigError(f"total optimizer steps must be a positive integer, got {total_steps!r}")
    name = cfg_scheduler["name"]
    warmup = warmup_steps(cfg_scheduler, total_steps)
    extra: dict[str, Any] = {}
    if name == "polynomial":
        extra = {"power": float(_get(cfg_scheduler, "power", 1.0)),
                 "lr_end": float(_get(cfg_scheduler, "lr_end", 0.0))}  # absolute LR, not a ratio
        peak = optimizer.defaults["lr"]
        if not extra["lr_end"] < peak:
            raise ConfigError(f"scheduler.lr_end={extra['lr_end']} must be below the peak LR {peak}")
    elif name == "inverse_sqrt" and cfg_scheduler.get("timescale") is not None:
        extra = {"timescale": int(cfg_scheduler["timescale"])}  # default: the warmup length
    return get_scheduler(SCHEDULERS[name], optimizer, num_warmup_steps=warmup,
                         num_training_steps=total_steps, scheduler_specific_kwargs=extra)


def lr_at(cfg_scheduler: Mapping[str, Any], total_steps: int, peak_lr: float, step: int) -> float:
    """Learning rate after `step` optimizer steps (pure: builds a throwaway optimizer). For tests/plots."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak_lr)
    return peak_lr * build_scheduler(opt, cfg_scheduler, total_steps).lr_lambdas[0](step)
