"""The pretraining progress line: optimizer steps and tokens of the budget, not Lightning's epochs.

A Lightning callback (TQDMProgressBar) built on first use, plus the pure text it shows.
"""

from __future__ import annotations

from typing import Any


def format_tokens(n: float) -> str:
    """1234 -> "1.2k", 2_000_000 -> "2.0M" (a progress line, not a table)."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}"


def progress_text(step: int, total_steps: int, tokens: float, token_budget: float) -> str:
    """What the pretraining progress line says: optimizer steps and tokens of the budget
    (`step 120/489 · tokens 0.5M/2.0M`), not Lightning's epochs (`Epoch 0/-2` with max_epochs=-1)."""
    return f"step {step}/{total_steps} · tokens {format_tokens(tokens)}/{format_tokens(token_budget)}"


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
    """`StepProgressBar` is built on first use (importing this module must not import Lightning) and
    is picklable by name (ddp_spawn pickles the callbacks)."""
    if name != "StepProgressBar":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = globals()[name] = _make_step_progress_bar()
    return cls


def step_progress_bar(total_steps: int, token_budget: float):
    """The pretraining progress bar, in optimizer steps and tokens of the budget."""
    return __getattr__("StepProgressBar")(total_steps, token_budget)
