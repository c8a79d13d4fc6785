"""The pretraining progress line: optimizer steps and tokens of the budget, not Lightning's epochs.

At a terminal a Lightning callback (TQDMProgressBar) redraws it; when the output goes to a file (a
sweep's log, SLURM, CI, `> log`) per-batch bars would fill the file with carriage-return frames
(hundreds of "Validation DataLoader 0: 81%|..." lines per arm), so `StepProgressLog` prints one plain
line per validation instead. Both callbacks are built on first use, around the pure text they show.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from robablate.sections import format_tokens


def bars_fit_output() -> bool:
    """Whether per-batch progress bars go to a terminal (tqdm draws on stderr); not in a file or pipe."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_text(step: int, total_steps: int, tokens: float, token_budget: float) -> str:
    """What the pretraining progress line says: optimizer steps and tokens of the budget
    (`step 120/489 · tokens 0.5M/2.0M`), not Lightning's epochs (`Epoch 0/-2` with max_epochs=-1)."""
    return f"step {step}/{total_steps} · tokens {format_tokens(tokens)}/{format_tokens(token_budget)}"


# What the plain line reports from the logged metrics, in order: (label, metric key, format).
LINE_METRICS = (("train loss", "train/loss", "{:.4f}"), ("val MLM loss", "val/mlm_loss", "{:.4f}"),
                ("val NSP acc", "val/nsp_acc", "{:.3f}"), ("tokens/s", "train/tokens_per_s", "{:,.0f}"))


def progress_line(step: int, total_steps: int, tokens: float, token_budget: float,
                  metrics: Mapping[str, float]) -> str:
    """One plain progress line for a log file: steps, tokens, losses and throughput known so far."""
    parts = [progress_text(step, total_steps, tokens, token_budget)]
    for label, key, fmt in LINE_METRICS:
        if key in metrics:
            parts.append(f"{label} {fmt.format(float(metrics[key]))}")
    return "[robablate] " + " · ".join(parts)


def _make_step_progress_log():
    from lightning.pytorch.callbacks import Callback

    class StepProgressLog(Callback):
        """One plain line per validation (see `progress_line`), for output that is not a terminal."""

        def __init__(self, total_steps: int, token_budget: float):
            self.total_steps, self.token_budget = int(total_steps), float(token_budget)

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking or not trainer.is_global_zero:
                return
            tokens = float(getattr(pl_module, "tokens_seen", 0)) * trainer.world_size
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
            print(progress_line(trainer.global_step, self.total_steps, tokens, self.token_budget, metrics), flush=True)

    StepProgressLog.__module__, StepProgressLog.__qualname__ = __name__, "StepProgressLog"
    return StepProgressLog


def _make_step_progress_bar():
    from lightning.pytorch.callbacks import TQDMProgressBar

    class StepProgressBar(TQDMProgressBar):
        """Pretraining progress in optimizer steps and tokens of the budget. The run has one open-ended
        epoch (max_epochs=-1, the budget is in steps), so Lightning's default bar reads `Epoch 0/-2`
        and counts micro-batches of an epoch that means nothing here."""

        TRAIN_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| [{elapsed}<{remaining}]{postfix}"

        def __init__(self, total_steps: int, token_budget: float, refresh_rate: int = 1):
            super().__init__(refresh_rate=refresh_rate)
            self.total_steps, self.token_budget = int(total_steps), float(token_budget)

        def init_train_tqdm(self):
            bar = super().init_train_tqdm()
            bar.bar_format = self.TRAIN_FORMAT
            return bar

        def _tokens(self, trainer, pl_module) -> float:
            return float(getattr(pl_module, "tokens_seen", 0)) * trainer.world_size

        def _show(self, trainer, pl_module) -> None:
            bar = self.train_progress_bar
            bar.n = trainer.global_step
            bar.set_description(progress_text(trainer.global_step, self.total_steps,
                                              self._tokens(trainer, pl_module), self.token_budget), refresh=False)
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

        def get_metrics(self, trainer, pl_module) -> dict:
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            return items

        def on_train_epoch_start(self, trainer, pl_module, *_: Any) -> None:
            bar = self.train_progress_bar
            bar.reset(total=self.total_steps)
            bar.initial = 0
            self._show(trainer, pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
            if not self.train_progress_bar.disable and (
                    trainer.global_step % max(1, self.refresh_rate) == 0 or trainer.global_step >= self.total_steps):
                self._show(trainer, pl_module)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if not self.train_progress_bar.disable:
                self._show(trainer, pl_module)

    StepProgressBar.__module__, StepProgressBar.__qualname__ = __name__, "StepProgressBar"
    return StepProgressBar


def __getattr__(name: str) -> Any:
    """`StepProgressBar` and `StepProgressLog` are built on first use (importing this module must not import Lightning) and
    is picklable by name (ddp_spawn pickles the callbacks)."""
    makers = {"StepProgressBar": _make_step_progress_bar, "StepProgressLog": _make_step_progress_log}
    if name not in makers:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = globals()[name] = makers[name]()
    return cls


def step_progress(total_steps: int, token_budget: float):
    """The pretraining progress callback, in optimizer steps and tokens of the budget: a bar at a
    terminal, one plain line per validation otherwise."""
    name = "StepProgressBar" if bars_fit_output() else "StepProgressLog"
    return __getattr__(name)(total_steps, token_budget)
