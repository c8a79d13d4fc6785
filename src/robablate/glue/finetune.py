"""GLUE fine-tuning as Lightning pieces: the classifier, its LightningModule and DataModule.

Protocol (RoBERTa §3.1 / Appendix C, BERT §4.1): a classifier on the pooled [CLS] vector (BERT's
tanh pooler -> dropout -> Linear(H, num_labels)); MSE on one output for regression tasks (STS-B);
AdamW with linear warmup over 6% of the steps then linear decay to 0; every dev split is evaluated
after every epoch and the best epoch kept (dev-set selection). Inputs come from
glue.encoding; the per-task run and the seeds x grid loop are in glue.readout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from robablate.glue.tasks import TaskSpec, dev_splits, get_task
from robablate.glue.encoding import EncodedSplit, PaddedBatches
from robablate.glue.metrics import task_metrics, task_score
from robablate.models.bert import BertConfig, BertEncoder, BertForPretraining
from robablate.errors import ConfigError, int_at_least
from robablate.optim import OptimizerSpec, ScheduleSpec, build_optimizer, build_scheduler, validate_lr


@dataclass(frozen=True)
class FinetuneSettings:
    """One fine-tuning configuration (a point of glue.grid), checked once by `from_config`. The
    defaults are RoBERTa's GLUE protocol (Appendix C: warmup 6%, weight decay 0.1, Adam betas
    0.9/0.98, eps 1e-6) at BERT's usual LR, batch and epochs."""

    max_len: int = 128
    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-5
    dropout: float = 0.1                       # before the classifier
    schedule: ScheduleSpec = ScheduleSpec("linear", warmup_fraction=0.06)   # then linear decay to 0
    optimizer: OptimizerSpec = OptimizerSpec(betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)

    @classmethod
    def from_config(cls, cfg_glue: Mapping[str, Any]) -> "FinetuneSettings":
        """The `glue` keys of these settings (null = the default), every rule checked (ConfigError)."""
        default = cls()
        get = lambda key, d: d if cfg_glue.get(key) is None else cfg_glue[key]  # noqa: E731
        for key in ("epochs", "batch_size", "max_len"):
            int_at_least(get(key, getattr(default, key)), f"glue.{key}", 4 if key == "max_len" else 1)
        opt = default.optimizer
        return cls(max_len=get("max_len", default.max_len), epochs=get("epochs", default.epochs),
                   batch_size=get("batch_size", default.batch_size), lr=validate_lr(get("lr", default.lr), "glue.lr"),
                   dropout=float(get("dropout", default.dropout)),
                   schedule=ScheduleSpec.from_config(
                       {"name": "linear", "warmup_fraction": get("warmup_fraction", default.schedule.warmup_fraction)},
                       section="glue"),
                   optimizer=OptimizerSpec.from_config(
                       {"betas": get("betas", opt.betas), "eps": get("eps", opt.eps),
                        "weight_decay": get("weight_decay", opt.weight_decay)}, section="glue"))


class GlueDataModule(pl.LightningDataModule):
    """Train loader (shuffled by the fine-tuning seed) and one dev loader per dev split, in
    dev_splits(task) order (MNLI: matched, mismatched)."""

    def __init__(self, task: str | TaskSpec, encoded: Mapping[str, EncodedSplit], batch_size: int,
                 seed: int, pad_id: int, eval_batch_size: int | None = None):
        super().__init__()
        self.spec = get_task(task)
        self.encoded, self.batch_size, self.seed, self.pad_id = encoded, int(batch_size), int(seed), pad_id
        self.eval_batch_size = int(eval_batch_size or 2 * batch_size)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        enc = self.encoded["train"]
        return DataLoader(range(len(enc)), batch_size=self.batch_size, shuffle=True, generator=g,
                          collate_fn=PaddedBatches(enc, self.pad_id))

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(range(len(self.encoded[s])), batch_size=self.eval_batch_size,
                           collate_fn=PaddedBatches(self.encoded[s], self.pad_id)) for s in dev_splits(self.spec)]

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.encoded["train"]) / self.batch_size)


class FinetuneModel(nn.Module):
    """BertEncoder -> pooled [CLS] (BERT's tanh pooler) -> dropout -> Linear(H, num_labels)."""

    def __init__(self, config: BertConfig, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = BertEncoder(config)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(BertForPretraining._init_weights)  # BERT's init (normal 0.02) for a fresh encoder/head

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.encoder(input_ids, token_type_ids, attention_mask)
        return self.classifier(self.dropout(pooled))


class FinetuneModule(pl.LightningModule):
    def __init__(self, config: Mapping[str, Any], task: str, hp: FinetuneSettings, total_steps: int, *,
                 encoder_state: Mapping[str, torch.Tensor] | None = None, keep_best_state: bool = False):
        super().__init__()
        self.save_hyperparameters({"config": dict(config), "task": task, "settings": asdict(hp),
                                   "total_steps": total_steps})
        self.spec, self.hp, self.total_steps = get_task(task), hp, int(total_steps)
        self.model = FinetuneModel(BertConfig(**config), self.spec.num_labels, hp.dropout)
        if encoder_state is not None:
            self.model.encoder.load_state_dict(encoder_state, strict=True)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        # The selected epoch's weights (CPU copy), kept only when test predictions are wanted.
        self.keep_best_state, self.best_state = keep_best_state, None
        self._preds: dict[int, list[torch.Tensor]] = {}

    def _outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0].float() if self.spec.is_regression else logits.argmax(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.spec.is_regression:
            return F.mse_loss(logits[:, 0].float(), labels.float())
        return F.cross_entropy(logits.float(), labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch.pop("labels")
        loss = self.loss(self.model(**batch), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.spec.name} fine-tuning loss became {loss.item()} at step "
                                     f"{self.global_step}; lower glue.lr")
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._preds = {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        batch = {k: v for k, v in batch.items() if k != "labels"}
        self._preds.setdefault(dataloader_idx, []).append(self._outputs(self.model(**batch)).cpu())

    def on_validation_epoch_end(self) -> None:
        dm = self.trainer.datamodule
        names = dev_splits(self.spec)
        preds = {s: torch.cat(self._preds[i]).numpy() for i, s in enumerate(names)}
        labels = {s: dm.encoded[s].labels for s in names}
        metrics = task_metrics(self.spec, preds, labels)
        score = task_score(self.spec, metrics)
        epoch = int(self.current_epoch)
        self.history.append({"epoch": epoch, **metrics, "score": score})
        for k, v in metrics.items():
            self.log(f"dev/{k}", v)
        self.log("dev/score", score, prog_bar=True)
        if self.best is None or score > self.best["score"]:  # ties keep the earlier epoch
            self.best = {"epoch": epoch, "metrics": metrics, "score": score, "preds": preds}
            if self.keep_best_state:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def configure_optimizers(self) -> dict:
        # fused: one pass per tensor; on CPU the for-loop AdamW costs more than a tiny model's forward
        # and backward (no gradient clipping here, so fused is safe under 16-mixed too).
        opt = build_optimizer(self.model, self.hp.optimizer, self.hp.lr, fused=True)
        sched = build_scheduler(opt, self.hp.schedule, self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@torch.no_grad()
def predict(model: FinetuneModel, spec: TaskSpec, enc: EncodedSplit, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """Class indices (scores for regression) of every example of `enc`, in order (eval mode, no dropout)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(enc), batch_size):
        batch = enc.batch(np.arange(start, min(start + batch_size, len(enc))), pad_id)
        logits = model(**{k: v.to(device) for k, v in batch.items() if k != "labels"})
        out.append((logits[:, 0].float() if spec.is_regression else logits.argmax(-1)).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)

