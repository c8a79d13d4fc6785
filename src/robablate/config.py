"""Check a composed config before any compute, and derive the run's plan (steps, batches, LR).

Everything a user can get wrong in a config is caught here with a ConfigError that names the key and
what is allowed, so a bad arm of a sweep fails in a second instead of after its tokenizer is trained.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from robablate.errors import ConfigError, int_at_least, positive_int_or_none
from robablate.settings import setting
from robablate.schema import AXIS_TABLE

if TYPE_CHECKING:  # imported inside validate: run.py imports this module before torch may load
    from robablate.data.corpus import CorpusSpec
    from robablate.data.formats import FormatSpec
    from robablate.data.masking import MaskingSpec
    from robablate.data.tokenizer import TokenizerSpec
    from robablate.loggers import LoggerSpec
    from robablate.models.bert import ModelSpec
    from robablate.optim import OptimizerSpec, ScheduleSpec

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
    tokens_per_step: int       # the step's token budget: global batch x max_len, trimmed under batch.unit=tokens (Plan)


@dataclass(frozen=True)
class TrainerSpec:
    """The Lightning Trainer's settings (the `trainer` group) and train.*'s run knobs: where and how a
    run trains, saves and resumes. config.py owns them (the devices also set the Plan's accumulation)."""

    accelerator: str = "auto"
    devices: Any = 1                  # an int, a list of device ids, -1 or "auto" (Lightning's forms)
    num_nodes: int = 1
    strategy: str = "auto"
    deterministic: bool | str = True  # Lightning's values (true, false, "warn")
    enable_progress_bar: bool = True
    log_every_n_steps: int = 10
    num_workers: int = 0              # DataLoader workers
    compile: bool = False             # torch.compile the encoder
    pack: bool = True                 # the encoder runs on real tokens only (data/packing.py)
    checkpoint_every_steps: int | None = None   # None = at each validation
    stop_at_step: int | None = None   # stop after this optimizer step as if killed (tests resume)
    resume: bool = False              # continue from <run_dir>/pretrain/checkpoints/last.ckpt


@dataclass(frozen=True)
class Specs:
    """Every config group a stage reads, checked once by `validate` (each by the module that owns its
    rules) and carried on the Plan, so nothing below the pipeline reads the config itself."""

    seed: int
    cache_dir: Path
    corpus: CorpusSpec
    tokenizer: TokenizerSpec
    format: FormatSpec
    masking: MaskingSpec
    model: ModelSpec
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    trainer: TrainerSpec
    logger: LoggerSpec
    val_instances: int                # fixed validation instances (fixed masks: the same for every arm)
    val_max_len: int                  # validation MLM is measured at this length for every arm


@dataclass(frozen=True)
class Plan:
    """What the config means once resolved: the numbers a run actually uses (results["plan"]), and
    the checked settings of every stage (`specs`, not part of results.json)."""

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
    # the step-weighted mean over phases (= the single phase's budget). With batch.unit=tokens and
    # train.tokens, steps round up and every phase's target shrinks by one factor so the run feeds
    # train.tokens exactly (exact_step_tokens); every format reaches it on average
    # (data/batching.plan_epoch). With sequences (BERT's fixed count) steps still round up, each step
    # takes global_batch instances, and this is an upper bound (shorter instances feed less).
    tokens_per_step_target: int
    token_batching: bool       # batch.unit=tokens: batches filled to a token budget, not a sequence count
    batch_unit: str
    lr: float                  # peak LR: batch.lr or optimizer.lr, or the one tune.lr chose (tune.py)
    warmup_steps: int
    val_every_steps: int
    precision: str
    tune_lr: list[float] | None = None   # the per-arm LR grid (tune.lr), None = no tuning
    tune_tokens: int | None = None       # tokens fed per pilot run of the grid
    specs: Specs | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, specs=None))
        del out["specs"]
        return out


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"Invalid config `{key}`: {msg}")


def _positive_number(cfg: DictConfig, key: str) -> float:
    v = setting(cfg, key)
    _require(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, key,
             f"expected a positive number, got {v!r}.")
    return v


def world_size(cfg: DictConfig) -> int:
    """Processes that share the global batch: devices x nodes (devices=-1/auto = all visible GPUs)."""
    devices = setting(cfg, "trainer.devices", 1)
    nodes = int(setting(cfg, "trainer.num_nodes", 1) or 1)
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        n = len(devices)
    elif devices in (-1, "-1", "auto"):
        accel = setting(cfg, "trainer.accelerator", "auto")
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


# Lightning's precision settings (Trainer(precision=...)) a run may name, and `auto`.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def resolve_precision(cfg: DictConfig) -> str:
    """`train.precision`, with `auto` resolved: bf16 autocast (bf16-mixed) where the hardware multiplies
    bf16 natively (a GPU; a CPU with AVX512-BF16 or AMX), else 32-true. On CPU bf16-mixed trained the
    study pilot's 3 seeds to within 5e-4 nats of fp32 (seed SD 5e-3) at 1.26x the speed (BERT-Tiny,
    AVX512-BF16) and BERT-Mini at 1.54x (benchmarks.md); results.json records what it resolved to
    (plan.precision) and the report compares that, not the word `auto`."""
    p = str(setting(cfg, "train.precision", "auto"))
    if p not in PRECISIONS:  # else Lightning refuses it only after the run folder is written
        raise ConfigError(f"Invalid config `train.precision`: expected one of {', '.join(PRECISIONS)}, got {p!r}.")
    if p != "auto":
        return p
    import torch

    from robablate.peak import cpu_bf16_native

    accel = setting(cfg, "trainer.accelerator", "auto")
    on_gpu = accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu or cpu_bf16_native() else "32-true"


def validate(cfg: DictConfig) -> Plan:
    """Check every key a run depends on and derive its Plan (with the checked settings of every stage,
    `Plan.specs`); raise ConfigError on the first problem. Each rule has one home, the module that
    applies it: this calls their checks, all before any compute."""
    from robablate.data.corpus import CorpusSpec
    from robablate.data.formats import FormatSpec
    from robablate.data.masking import MaskingSpec
    from robablate.data.tokenizer import TokenizerSpec
    from robablate.loggers import LoggerSpec
    from robablate.models.bert import ModelSpec
    from robablate.optim import OptimizerSpec, ScheduleSpec
    from robablate.peak import env_peak

    env_peak()  # a bad ROBABLATE_PEAK_FLOPS stops the run here, not after data preparation
    fmt = FormatSpec.from_config(setting(cfg, "format.name"), setting(cfg, "nsp"),
                                 setting(cfg, "seq_len.short_seq_prob", 0.0))
    masking = MaskingSpec.from_config(cfg.masking)  # BERT §3.1 / RoBERTa §4.1; docs/facts.md §2

    # Model (the vocabulary comes from the tokenizer later) and sequence length.
    model = ModelSpec.from_config(cfg.model)
    max_pos = model.arch.max_position_embeddings
    phases_cfg = setting(cfg, "seq_len.phases")
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
    val_len = int(setting(cfg, "train.val_max_len", phases_cfg[0].max_len))
    _require(8 <= val_len <= max_pos, "train.val_max_len", f"expected 8..{max_pos}, got {val_len}.")
    val_instances = int_at_least(setting(cfg, "train.val_instances", 512), "train.val_instances")

    tokenizer = TokenizerSpec.from_config(cfg.tokenizer)
    corpus = CorpusSpec.from_config(cfg.corpus)  # the keys only: check_corpus reads the files

    # Batch: the global batch is realised as micro-batch x accumulation x devices (RoBERTa Table 3).
    size = setting(cfg, "batch.size")
    scale = setting(cfg, "batch.scale", 1.0) or 1.0
    int_at_least(size, "batch.size")
    unit = setting(cfg, "batch.unit", "tokens")
    _require(unit in BATCH_UNITS, "batch.unit", f"expected one of {BATCH_UNITS}, got {unit!r}.")
    _require(isinstance(scale, (int, float)) and scale > 0, "batch.scale", f"expected a positive number, got {scale!r}.")
    global_batch = max(1, int(round(size * scale)))
    ws = world_size(cfg)
    micro = setting(cfg, "batch.micro_batch_size")
    if micro is None:
        _require(global_batch % ws == 0, "batch.size",
                 f"the global batch ({global_batch} sequences) must be divisible by the number of devices "
                 f"(trainer.devices x trainer.num_nodes = {ws}).")
        micro = global_batch // ws
    int_at_least(micro, "batch.micro_batch_size")
    _require(global_batch % (micro * ws) == 0, "batch.micro_batch_size",
             f"the global batch ({global_batch} = batch.size x batch.scale) must be divisible by "
             f"micro-batch x devices ({micro} x {ws} = {micro * ws}); pick batch.micro_batch_size among "
             f"{[m for m in range(1, global_batch // ws + 1) if global_batch % (m * ws) == 0][-6:]}.")
    accumulate = global_batch // (micro * ws)

    # Learning rate and steps: steps derive from the token budget so arms compare at equal compute.
    lr, lr_key = peak_lr(cfg)
    mean_len = sum(f * ph.max_len for f, ph in zip(fractions, phases_cfg))
    max_steps, tokens = setting(cfg, "train.max_steps"), None
    if max_steps is not None:
        total = int_at_least(max_steps, "train.max_steps")
    else:
        tokens = _positive_number(cfg, "train.tokens")
        total = max(1, math.ceil(tokens / (global_batch * mean_len)))
    phase_steps = [int(round(f * total)) for f in fractions]
    phase_steps[-1] = total - sum(phase_steps[:-1])
    _require(all(s >= 1 for s in phase_steps), "train.tokens",
             f"the budget gives {total} steps, too few to split into phases {fractions}; raise train.tokens.")
    per_step = [global_batch * int(ph.max_len) for ph in phases_cfg]
    exact = unit == "tokens" and tokens is not None
    if exact:
        per_step = exact_step_tokens(per_step, phase_steps, tokens)
    phases = [Phase(max_len=int(ph.max_len), steps=s, tokens_per_step=t)
              for ph, s, t in zip(phases_cfg, phase_steps, per_step)]
    target = int(round(sum(ph.steps * ph.tokens_per_step for ph in phases) / total))
    # The pilots' default budget is tune.fraction of the run's: train.tokens when it is fed exactly.
    tune_lr, tune_tokens = _tune(cfg, budget=tokens if exact else total * target)

    optimizer = OptimizerSpec.from_config(cfg.optimizer)
    schedule = ScheduleSpec.from_config(cfg.scheduler)
    warmup = schedule.warmup(total)  # the schedule's own rule: a too-long warmup fails here
    schedule.check_peak(lr, lr_key)  # polynomial's lr_end below every peak the run may train with
    if tune_lr:
        schedule.check_peak(min(tune_lr), "tune.lr")

    every = setting(cfg, "train.val_every_steps")
    every = int_at_least(max(1, total // 10) if every is None else every, "train.val_every_steps")

    logger = LoggerSpec.from_config(cfg.logger, experiment=str(setting(cfg, "experiment_name", "default")),
                                    run_dir=setting(cfg, "run_dir"), axes=axes_of(cfg, resolved={"format": fmt.name}),
                                    config=OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    specs = Specs(
        seed=int_at_least(setting(cfg, "seed", 0), "seed", minimum=0),
        cache_dir=Path(setting(cfg, "cache_dir") or ".cache").resolve(), corpus=corpus, tokenizer=tokenizer,
        format=fmt, masking=masking, model=model, optimizer=optimizer, schedule=schedule, trainer=trainer_spec(cfg),
        logger=logger, val_instances=val_instances, val_max_len=val_len)
    return Plan(  # built once, frozen: a stage that needs another (resume, the tuned LR) takes a replace()
        format=fmt.name, nsp=fmt.nsp, phases=phases, total_steps=total, global_batch=global_batch, micro_batch=micro,
        accumulate=accumulate, world_size=ws, tokens_per_step_target=target, token_batching=unit == "tokens",
        batch_unit=unit, lr=float(lr), warmup_steps=warmup, val_every_steps=every,
        precision=resolve_precision(cfg), tune_lr=tune_lr, tune_tokens=tune_tokens, specs=specs,
    )


def peak_lr(cfg: DictConfig) -> tuple[float, str]:
    """The peak LR and the key it came from, resolved in one place: a batch preset's `batch.lr` (RoBERTa
    Table 3 pairs each batch size with its LR) wins over `optimizer.lr`; with `tune.lr`, the pilots
    replace it per arm later (tune.py), from the grid `_tune` checks here."""
    key = "batch.lr" if setting(cfg, "batch.lr") is not None else "optimizer.lr"
    lr = setting(cfg, key)
    _require(isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0, key,
             f"expected a positive learning rate, got {lr!r}.")
    return float(lr), key


def exact_step_tokens(nominal: list[int], steps: list[int], budget: float) -> list[int]:
    """Tokens per step of each phase, so that the run feeds `budget` tokens: the nominal targets
    (global batch x max_len) scaled by one factor, budget / sum(steps x nominal). Steps were rounded up
    (ceil(budget / nominal)), so this shrinks each step by less than one step's worth over the run; a
    single phase gets budget / ceil(budget / nominal). The plan is exact to rounding (half a token per
    step); what the sampler feeds adds at most half an instance per data epoch (data/batching.plan_epoch).
    Without it an 8K-sequence arm fed 2.032M tokens for a 2M budget (+1.5%, one step of 32K tokens)."""
    planned = sum(s * n for s, n in zip(steps, nominal))
    return [max(1, int(round(n * budget / planned))) for n in nominal]


def trainer_spec(cfg: DictConfig) -> TrainerSpec:
    """The `trainer` group and train.*'s run knobs, checked."""
    devices = setting(cfg, "trainer.devices", 1)
    return TrainerSpec(
        accelerator=str(setting(cfg, "trainer.accelerator", "auto")),
        devices=list(devices) if OmegaConf.is_list(devices) else devices,
        num_nodes=int(setting(cfg, "trainer.num_nodes", 1) or 1),
        strategy=str(setting(cfg, "trainer.strategy", "auto")),
        deterministic=setting(cfg, "trainer.deterministic", True),
        enable_progress_bar=bool(setting(cfg, "trainer.enable_progress_bar", True)),
        log_every_n_steps=int_at_least(setting(cfg, "trainer.log_every_n_steps", 10), "trainer.log_every_n_steps"),
        num_workers=int_at_least(setting(cfg, "train.num_workers", 0), "train.num_workers", minimum=0),
        compile=bool(setting(cfg, "train.compile", False)), pack=bool(setting(cfg, "train.pack", True)),
        checkpoint_every_steps=positive_int_or_none(setting(cfg, "train.checkpoint_every_steps"),
                                                    "train.checkpoint_every_steps"),
        stop_at_step=positive_int_or_none(setting(cfg, "train.stop_at_step"), "train.stop_at_step"),
        resume=bool(setting(cfg, "resume", False)))


def _tune(cfg: DictConfig, budget: int) -> tuple[list[float] | None, int | None]:
    """The checked per-arm LR grid and pilot budget (tune.py runs them), or (None, None) without a grid."""
    grid = setting(cfg, "tune.lr")
    if grid is None:
        return None, None
    expected = "expected a list of at least 2 distinct positive learning rates, e.g. tune.lr=[3e-4,1e-3,3e-3]"
    _require(OmegaConf.is_list(grid) or isinstance(grid, (list, tuple)), "tune.lr", f"{expected}, got {grid!r}.")
    values = list(grid)
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < 1
             for v in values)
    _require(ok and len(values) >= 2 and len(set(values)) == len(values), "tune.lr",
             f"{expected} (each in (0, 1)), got {values!r}.")
    tokens = setting(cfg, "tune.tokens")
    if tokens is None:
        frac = setting(cfg, "tune.fraction", 0.25)
        _require(isinstance(frac, (int, float)) and 0 < frac <= 1, "tune.fraction",
                 f"expected a fraction in (0, 1] of the run's token budget, got {frac!r}.")
        tokens = frac * budget
    else:
        _require(isinstance(tokens, (int, float)) and not isinstance(tokens, bool) and tokens > 0, "tune.tokens",
                 f"expected a positive number of tokens (or null for tune.fraction x the budget), got {tokens!r}.")
    int_at_least(setting(cfg, "tune.seed", 0), "tune.seed", minimum=0)
    return sorted(float(v) for v in values), int(math.ceil(tokens))


def axes_of(cfg: DictConfig, plan: Plan | None = None, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The axis values of this arm, as the report groups them (format resolved from `auto` by the Plan,
    or by `resolved`: Plan field -> value), in schema.AXIS_TABLE order."""
    if plan is not None:
        resolved = {a.resolved: getattr(plan, a.resolved) for a in AXIS_TABLE if a.resolved}
    resolved = resolved or {}
    out = {}
    for a in AXIS_TABLE:
        v = resolved[a.resolved] if a.resolved in resolved else setting(cfg, a.key)
        out[a.name] = a.cast(v) if a.cast is not None else v
    return out
