"""GLUE fine-tuning: a thin Lightning module around models.bert.BertEncoder.

Protocol (RoBERTa §3.1 / Appendix C, BERT §4.1): a classifier on the pooled [CLS] vector (BERT's
tanh pooler -> dropout -> Linear(H, num_labels)); MSE on one output for regression tasks (STS-B);
AdamW with linear warmup over 6% of the steps then linear decay to 0; evaluate every dev split after
every epoch and keep the best epoch's dev metrics (dev-set selection); several seeds per task,
summarised by the median. The metrics and the GLUE score come from robablate.metrics. When a task's
test files are present, the selected epoch also predicts them into GLUE-server files.

Inputs are `[CLS] a [SEP] b [SEP]` with token_type_ids 0 / 1, built here from the tokenizer's ids
without special tokens, so any tokenizer (WordPiece or byte BPE, with or without a post-processor)
gets BERT's layout. Token ids are cached on disk per (task, data, tokenizer, max_len).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from robablate.data.glue import (Split, TaskSpec, dev_splits, get_task, load_task, load_task_hf, submission_splits,
                                 submission_text)
from robablate.data.tokenizer import special_ids, tokenizer_fingerprint
from robablate.errors import ConfigError, DataError
from robablate.io import atomic_write_text
from robablate.metrics import glue_score, summarize_seeds, task_metrics, task_score
from robablate.models.bert import BertConfig, BertEncoder, BertForPretraining
from robablate.optim import build_optimizer, build_scheduler, validate_lr

CACHE_VERSION = 1  # bump when the encoding below changes: old caches are then ignored
SUBSET_SEED = 0    # max_*_examples draws the same rows for every arm and seed (paired comparisons)


# --- encoding ----------------------------------------------------------------------------------

def truncate_pair_lengths(la: np.ndarray, lb: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Lengths kept by BERT's `_truncate_seq_pair` (and HF's longest_first): drop one token at a time
    from the longer side (from b on a tie) until la + lb <= budget. Closed form, vectorised: the
    shorter side survives whole if it fits in half, else a gets ceil(budget / 2) and b the rest."""
    la, lb = np.asarray(la, dtype=np.int64), np.asarray(lb, dtype=np.int64)
    over = la + lb > budget
    a = np.minimum(la, np.maximum((budget + 1) // 2, budget - lb))
    return np.where(over, a, la), np.where(over, budget - a, lb)


@dataclass
class EncodedSplit:
    """Token ids of one split, flat: example i = tokens[offsets[i]:offsets[i+1]] (with [CLS]/[SEP]);
    segment B (token type 1) starts at b_start[i] (== its length for single sentences)."""

    tokens: np.ndarray      # int32
    offsets: np.ndarray     # int64 [N + 1]
    b_start: np.ndarray     # int32 [N]
    labels: np.ndarray | None
    rows: np.ndarray        # int64 [N]: row of each example in the file (after any subsetting)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        """Dynamically padded batch (pad to the longest example, not to max_len)."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.offsets[idx + 1] - self.offsets[idx]
        L = int(lengths.max())
        ids = np.full((len(idx), L), pad_id, dtype=np.int64)
        for r, i in enumerate(idx):
            ids[r, :lengths[r]] = self.tokens[self.offsets[i]:self.offsets[i + 1]]
        pos = np.arange(L)[None, :]
        out = {"input_ids": torch.from_numpy(ids),
               "attention_mask": torch.from_numpy((pos < lengths[:, None]).astype(np.int64)),
               "token_type_ids": torch.from_numpy(((pos >= self.b_start[idx, None]) &
                                                   (pos < lengths[:, None])).astype(np.int64))}
        if self.labels is not None:
            out["labels"] = torch.from_numpy(self.labels[idx])
        return out


def special_token_ids(tokenizer: Any) -> tuple[int, int, int]:
    """(cls, sep, pad) ids, read from the tokenizer (never hard-coded; design.md fixed facts)."""
    ids = special_ids(tokenizer)
    return ids.cls, ids.sep, ids.pad


def encode_split(split: Split, tokenizer: Any, max_len: int) -> EncodedSplit:
    """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, truncated to max_len (BERT's longest-first rule)."""
    cls, sep, _ = special_token_ids(tokenizer)

    def ids_of(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"] if texts else []

    a = ids_of(split.texts_a)
    la = np.fromiter((len(x) for x in a), dtype=np.int64, count=len(a))
    if split.texts_b is None:
        ta, tb, b = np.minimum(la, max_len - 2), None, None
    else:
        b = ids_of(split.texts_b)
        lb = np.fromiter((len(x) for x in b), dtype=np.int64, count=len(b))
        ta, tb = truncate_pair_lengths(la, lb, max_len - 3)
    pieces: list[list[int]] = []
    b_start = np.empty(len(a), dtype=np.int32)
    for i in range(len(a)):
        seq = [cls, *a[i][:ta[i]], sep]
        b_start[i] = len(seq)
        if b is not None:
            seq += [*b[i][:tb[i]], sep]
        pieces.append(seq)
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32, count=int(offsets[-1]))
    return EncodedSplit(tokens, offsets, b_start, split.labels, np.arange(len(a), dtype=np.int64))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def subset(split: Split, n: int | None) -> tuple[Split, np.ndarray]:
    """At most n rows, drawn with a fixed seed (files can be sorted, e.g. CoLA by source), in file order."""
    rows = np.arange(len(split), dtype=np.int64)
    if n is not None and n < len(split):
        rows = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(split))[:n])
    if len(rows) == len(split):
        return split, rows
    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    labels = split.labels[rows] if split.labels is not None else None
    return Split(pick(split.texts_a), pick(split.texts_b) if split.texts_b is not None else None,
                 labels, split.n_skipped, split.path), rows


def test_splits_present(task: str | TaskSpec, data_dir: str | Path | None, source: str = "local") -> list[str]:
    """The task's test splits (GLUE-server submission) when all of its test files are there: local
    files under data_dir, or the hub's test splits; [] for the synthetic tasks."""
    spec = get_task(task)
    names = submission_splits(spec)
    if source == "hf":
        return names
    if not names or data_dir is None:
        return []
    return names if all((Path(data_dir) / spec.folder / f"{s}.tsv").is_file() for s in names) else []


def load_encoded(task: str | TaskSpec, data_dir: str | Path | None, tokenizer: Any, max_len: int,
                 cache_dir: str | Path | None = None, source: str = "local",
                 max_train: int | None = None, max_eval: int | None = None,
                 with_test: bool = False) -> dict[str, EncodedSplit]:
    """Train and dev splits of `task` (and its test splits with `with_test`, when present), tokenised
    once and cached under cache_dir/glue/. max_train / max_eval cap train / dev; test splits are never
    capped (a submission needs every row)."""
    spec = get_task(task)
    names = ["train", *dev_splits(spec), *(test_splits_present(spec, data_dir, source) if with_test else [])]
    caps = {s: (max_train if s == "train" else None if s.startswith("test") else max_eval) for s in names}
    if source == "local":
        if data_dir is None:
            raise ConfigError(f"glue.data_dir: {spec.name} needs a folder in the official GLUE layout "
                              f"(or glue.source=hf)")
        files = {s: Path(data_dir) / spec.folder / f"{s}.tsv" for s in names}
        data_id: Any = {s: _file_digest(p) if p.is_file() else str(p) for s, p in files.items()}
    elif source == "hf":
        data_id = ["nyu-mll/glue", spec.hf_config]
    else:
        raise ConfigError(f"glue.source must be local or hf, got {source!r}")

    def read_all() -> dict[str, EncodedSplit]:
        out = {}
        for s in names:
            split = load_task(data_dir, spec, s) if source == "local" else load_task_hf(spec, s)
            split, rows = subset(split, caps[s])
            enc = encode_split(split, tokenizer, max_len)
            enc.rows = rows
            out[s] = enc
        return out

    if cache_dir is None:
        return read_all()
    from robablate.io import atomic_dir, cache_key

    key = cache_key("glue", CACHE_VERSION, spec.name, data_id, tokenizer_fingerprint(tokenizer), max_len, caps)
    folder = Path(cache_dir) / "glue" / f"{spec.name}-{key}"

    def build(tmp: Path) -> None:
        for s, enc in read_all().items():
            arrays = {k: v for k, v in asdict(enc).items() if v is not None}
            np.savez(tmp / f"{s}.npz", **arrays)

    atomic_dir(folder, build)
    out = {}
    for s in names:
        with np.load(folder / f"{s}.npz") as z:
            out[s] = EncodedSplit(z["tokens"], z["offsets"], z["b_start"],
                                  z["labels"] if "labels" in z.files else None, z["rows"])
    return out


class _Batches:
    """collate_fn: a list of example indices -> a padded batch (picklable, no lambda)."""

    def __init__(self, enc: EncodedSplit, pad_id: int):
        self.enc, self.pad_id = enc, pad_id

    def __call__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        return self.enc.batch(np.asarray(idx), self.pad_id)


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
                          collate_fn=_Batches(enc, self.pad_id))

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(range(len(self.encoded[s])), batch_size=self.eval_batch_size,
                           collate_fn=_Batches(self.encoded[s], self.pad_id)) for s in dev_splits(self.spec)]

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.encoded["train"]) / self.batch_size)


# --- model ---------------------------------------------------------------------------------------

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
    def __init__(self, config: Mapping[str, Any], task: str, lr: float, total_steps: int,
                 warmup_fraction: float = 0.06, weight_decay: float = 0.1, dropout: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 encoder_state: Mapping[str, torch.Tensor] | None = None, keep_best_state: bool = False):
        super().__init__()
        self.save_hyperparameters(ignore=["encoder_state", "keep_best_state"])
        self.spec = get_task(task)
        self.model = FinetuneModel(BertConfig(**config), self.spec.num_labels, dropout)
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
        hp = self.hparams
        # fused: one pass per tensor; on CPU the for-loop AdamW costs more than a tiny model's forward
        # and backward (no gradient clipping here, so fused is safe under 16-mixed too).
        opt = build_optimizer(self.model, {"betas": list(hp.betas), "eps": hp.eps, "weight_decay": hp.weight_decay},
                              hp.lr, fused=True)
        sched = build_scheduler(opt, {"name": "linear", "warmup_fraction": hp.warmup_fraction}, int(hp.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# --- one task, one seed ----------------------------------------------------------------------------

def _get(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    value = cfg.get(key, default) if cfg is not None else default
    return default if value is None else value


def write_dev_predictions(path: Path, spec: TaskSpec, encoded: Mapping[str, EncodedSplit],
                          preds: Mapping[str, np.ndarray]) -> None:
    """split, row (in the dev file), prediction, label (label strings; scores for regression)."""
    fmt = (lambda v: f"{float(v):.4f}") if spec.is_regression else (lambda v: spec.labels[int(v)])
    lines = ["split\trow\tprediction\tlabel"]
    for s, p in preds.items():
        enc = encoded[s]
        lines += [f"{s}\t{r}\t{fmt(y_hat)}\t{fmt(y)}" for r, y_hat, y in zip(enc.rows, p, enc.labels)]
    atomic_write_text(path, "\n".join(lines) + "\n")


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


def write_submission(out_dir: Path, spec: TaskSpec, preds: Mapping[str, np.ndarray]) -> list[Path]:
    """GLUE-server files (index, prediction) named as the server expects (RTE.tsv, MNLI-m.tsv, ...),
    one per test split, in out_dir."""
    paths = []
    for split, name in zip(submission_splits(spec), spec.submission_files):
        if split in preds:
            paths.append(out_dir / name)
            atomic_write_text(paths[-1], submission_text(spec, preds[split]))
    return paths


def check_model(config: BertConfig, tokenizer: Any, cfg_glue: Mapping[str, Any]) -> int:
    """glue.max_len fits the encoder's positions and the tokenizer its vocabulary; returns max_len."""
    max_len = int(_get(cfg_glue, "max_len", 128))
    if not 4 <= max_len <= config.max_position_embeddings:
        raise ConfigError(f"glue.max_len={max_len} must be in [4, {config.max_position_embeddings}] "
                          f"(the encoder's max_position_embeddings)")
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the encoder's vocabulary is "
                          f"{config.vocab_size}: fine-tune with the tokenizer the encoder was pretrained with")
    return max_len


def check_glue_config(cfg_glue: Mapping[str, Any]) -> list[TaskSpec]:
    """Everything about `glue` that can be checked before pretraining: task names, glue.source, the
    grid, and for local real-GLUE tasks that glue.data_dir holds each task's train and dev files."""
    tasks = [get_task(t) for t in cfg_glue.get("tasks") or []]
    source = str(_get(cfg_glue, "source", "local"))
    if source not in ("local", "hf"):
        raise ConfigError(f"glue.source must be local or hf, got {source!r}")
    for point in grid_points(cfg_glue.get("grid")):
        merged = {**cfg_glue, **point}
        validate_lr(_get(merged, "lr", 2e-5), "glue.lr")
        for key, default in (("epochs", 3), ("batch_size", 32), ("max_len", 128)):
            value = _get(merged, key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < (4 if key == "max_len" else 1):
                raise ConfigError(f"glue.{key} must be a positive integer{' >= 4' if key == 'max_len' else ''}, "
                                  f"got {value!r}")
        if not 0.0 <= float(_get(merged, "warmup_fraction", 0.06)) < 1.0:
            raise ConfigError(f"glue.warmup_fraction must be in [0, 1), got {merged.get('warmup_fraction')!r}")
    init = cfg_glue.get("init")
    if init and not (Path(str(init)).expanduser() / "config.json").is_file():
        raise ConfigError(f"glue.init: {init} is not a local Hugging Face model folder (no config.json); "
                          f"give a finished run's pretrain/hf or a BERT checkpoint folder")
    for spec in tasks:
        if spec.synthetic or source == "hf":
            continue
        data_dir = cfg_glue.get("data_dir")
        if not data_dir:
            raise ConfigError(f"glue.data_dir: {spec.name} needs a folder in the official GLUE layout "
                              f"(folders {' '.join(t.name for t in tasks if not t.synthetic)}), or glue.source=hf")
        for split in ["train", *dev_splits(spec)]:
            path = Path(data_dir) / spec.folder / f"{split}.tsv"
            if not path.is_file():
                raise DataError(f"glue.data_dir: {path} not found ({spec.name} needs its {split} file); point "
                                f"glue.data_dir at a folder in the official GLUE layout, or read the task from "
                                f"the Hugging Face hub with glue.source=hf")
    return tasks


def check_glue_files(cfg_glue: Mapping[str, Any], tasks: list[TaskSpec] | None = None) -> None:
    """Read every local GLUE file the fine-tuning will read (train, dev and, with glue.submission,
    the test files that are present) with the task's reader, before any compute: a bad row (too few
    fields, unknown label, a non-numeric STS-B score) or an empty split fails here, naming the file and
    line, not hours later after pretraining. Every bad file is listed in one DataError.
    Synthetic tasks (generated by robablate) and glue.source=hf (read from the hub) are not read here."""
    tasks = check_glue_config(cfg_glue) if tasks is None else tasks
    source = str(_get(cfg_glue, "source", "local"))
    data_dir = cfg_glue.get("data_dir")
    if source != "local" or not data_dir:
        return
    errors = []
    for spec in tasks:
        if spec.synthetic:
            continue
        names = ["train", *dev_splits(spec)]
        if bool(_get(cfg_glue, "submission", True)):
            names += test_splits_present(spec, data_dir)
        for split in names:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # QQP's known short rows: warned when fine-tuning
                    load_task(data_dir, spec, split)
            except DataError as e:
                errors.append(str(e))
    if errors:
        raise DataError("GLUE data: " + ("\n  ".join(["", *errors]) if len(errors) > 1 else errors[0]))


def finetune_task(encoder_state: Mapping[str, torch.Tensor] | None, model_cfg: BertConfig | Mapping[str, Any],
                  tokenizer: Any, task: str, data_dir: str | Path | None, seed: int,
                  cfg_glue: Mapping[str, Any], out_dir: str | Path, *, cache_dir: str | Path | None = None,
                  encoded: Mapping[str, EncodedSplit] | None = None, trainer_kwargs: Mapping[str, Any] | None = None,
                  loggers: list | None = None) -> dict[str, Any]:
    """Fine-tune one encoder on one task with one seed; return the best epoch's dev metrics and score.

    encoder_state None = a randomly initialised encoder (the "no pretraining" baseline). Writes
    out_dir/metrics.csv (CSVLogger: train loss per step, dev metrics per epoch),
    out_dir/dev_predictions.tsv (the selected epoch's predictions) and, when `encoded` holds test
    splits (load_encoded(with_test=True)), the selected epoch's GLUE-server files in out_dir/submission/.
    """
    from lightning.pytorch.loggers import CSVLogger

    spec = get_task(task)
    out_dir = Path(out_dir)
    config = model_cfg if isinstance(model_cfg, BertConfig) else BertConfig(**dict(model_cfg))
    max_len = check_model(config, tokenizer, cfg_glue)
    if encoded is None:
        encoded = load_encoded(spec, data_dir, tokenizer, max_len, cache_dir, str(_get(cfg_glue, "source", "local")),
                               cfg_glue.get("max_train_examples"), cfg_glue.get("max_eval_examples"))
    epochs, batch_size = int(_get(cfg_glue, "epochs", 3)), int(_get(cfg_glue, "batch_size", 32))
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"glue.epochs and glue.batch_size must be >= 1, got {epochs} and {batch_size}")

    pl.seed_everything(int(seed), workers=True, verbose=False)  # head init, dropout, data order
    dm = GlueDataModule(spec, encoded, batch_size, int(seed), special_token_ids(tokenizer)[2])
    total_steps = epochs * dm.steps_per_epoch()
    module = FinetuneModule(
        asdict(config), spec.name, lr=float(_get(cfg_glue, "lr", 2e-5)), total_steps=total_steps,
        warmup_fraction=float(_get(cfg_glue, "warmup_fraction", 0.06)),
        weight_decay=float(_get(cfg_glue, "weight_decay", 0.1)), dropout=float(_get(cfg_glue, "dropout", 0.1)),
        betas=tuple(float(b) for b in _get(cfg_glue, "betas", (0.9, 0.98))),
        eps=float(_get(cfg_glue, "eps", 1e-6)), encoder_state=encoder_state,
        keep_best_state=any(k.startswith("test") for k in encoded))
    kw = {"accelerator": "auto", "precision": "32-true", "deterministic": True, "enable_progress_bar": False,
          **(trainer_kwargs or {})}
    trainer = pl.Trainer(
        devices=1, max_epochs=epochs, num_sanity_val_steps=0, enable_checkpointing=False,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, dm.steps_per_epoch())),
        logger=[CSVLogger(save_dir=str(out_dir), name="", version=""), *(loggers or [])],
        default_root_dir=str(out_dir), **kw)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=dm)
    best = module.best
    assert best is not None  # validation runs after every epoch
    write_dev_predictions(out_dir / "dev_predictions.tsv", spec, encoded, best["preds"])
    submission: list[str] = []
    if module.best_state is not None:
        module.model.load_state_dict(module.best_state)  # the selected epoch, as for the dev predictions
        pad_id = special_token_ids(tokenizer)[2]
        preds = {s: predict(module.model, spec, enc, pad_id, 2 * batch_size) for s, enc in encoded.items()
                 if s.startswith("test")}
        submission = [str(p) for p in write_submission(out_dir / "submission", spec, preds)]
    return {"task": spec.name, "seed": int(seed), "metrics": best["metrics"], "score": best["score"],
            "best_epoch": best["epoch"], "epochs": module.history, "steps": total_steps,
            "n_train": len(encoded["train"]), "n_dev": {s: len(encoded[s]) for s in dev_splits(spec)},
            "submission": submission, "wall_s": time.perf_counter() - t0}


# --- all tasks x seeds (x grid) -> the glue section of results.json ---------------------------------

GRID_KEYS = ("batch_size", "lr", "epochs", "warmup_fraction", "weight_decay", "dropout")


def grid_points(grid: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every combination of glue.grid (e.g. {batch_size: [16, 32], lr: [1e-5, 2e-5, 3e-5]})."""
    if not grid:
        return [{}]
    bad = [k for k in grid if k not in GRID_KEYS]
    if bad:
        raise ConfigError(f"glue.grid: unknown keys {bad}; allowed: {', '.join(GRID_KEYS)}")
    keys = list(grid)
    values = [list(grid[k]) if isinstance(grid[k], (list, tuple)) else [grid[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def select_best(tried: list[dict[str, Any]]) -> dict[str, Any]:
    """Dev-set selection over grid points (RoBERTa §3.1): the highest task score, the first on ties."""
    return max(tried, key=lambda r: r["score"])


def _median_metrics(runs: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, float]:
    return {m: float(np.median([r["metrics"][m] for r in runs])) for m in names}


def finetune_all(cfg: Any, run_dir: str | Path, hf_dir: str | Path, tokenizer: Any) -> dict[str, Any]:
    """Fine-tune the run's encoder (or glue.init, with its own tokenizer) on glue.tasks x glue.seeds
    (x glue.grid, best dev per seed); return the `glue` section of results.json. Per task, the GLUE
    score uses each metric's median over seeds (RoBERTa reports the median of 5).

    Writes run_dir/glue/<task>/seed=<n>/ (metrics.csv, dev_predictions.tsv, submission/ when the task's
    test files are present) and run_dir/glue/submission/: per task, the GLUE-server files of the seed
    with the best dev score (dev-set selection, as for the grid), ready to zip and upload."""
    from omegaconf import OmegaConf

    from robablate.callbacks import build_loggers
    from robablate.config import resolve_precision
    from robablate.data import synthetic
    from robablate.data.tokenizer import load_tokenizer
    from robablate.models.hf_export import encoder_state_from_hf

    g = cfg.glue
    cfg_glue = OmegaConf.to_container(g, resolve=True) if OmegaConf.is_config(g) else dict(g)
    tasks = check_glue_config(cfg_glue)
    n_seeds = int(cfg_glue.get("seeds") or 0)
    if not tasks or n_seeds < 1:
        return {}
    init = cfg_glue.get("init")
    if init:  # another encoder: it must read its own vocabulary, not the run's
        tokenizer = load_tokenizer(init, key="glue.init")
    config, state = encoder_state_from_hf(init or hf_dir)
    max_len = check_model(config, tokenizer, cfg_glue)
    run_dir, cache_dir = Path(run_dir), Path(cfg.get("cache_dir") or ".cache")
    syn_dir = synthetic.ensure_glue(cfg.get("corpus"), cache_dir) if any(t.synthetic for t in tasks) else None
    trainer_kwargs = {"accelerator": cfg.trainer.accelerator, "precision": resolve_precision(cfg),
                      "deterministic": bool(cfg.trainer.deterministic),
                      "enable_progress_bar": bool(cfg.trainer.enable_progress_bar)}
    points = grid_points(cfg_glue.get("grid"))
    section: dict[str, Any] = {"tasks": {}, "data_dir": cfg_glue.get("data_dir"), "source": cfg_glue.get("source"),
                               "seeds": n_seeds, "grid": cfg_glue.get("grid"), "init": init}
    submission: dict[str, Any] = {}
    for spec in tasks:
        data_dir = syn_dir if spec.synthetic else cfg_glue.get("data_dir")
        source = "local" if spec.synthetic else str(cfg_glue.get("source") or "local")
        encoded = load_encoded(spec, data_dir, tokenizer, max_len, cache_dir, source,
                               cfg_glue.get("max_train_examples"), cfg_glue.get("max_eval_examples"),
                               with_test=bool(_get(cfg_glue, "submission", True)))
        runs = []
        for seed in range(n_seeds):
            tried = []
            for point in points:
                sub = ",".join(f"{k}={v}" for k, v in point.items())
                out_dir = run_dir / "glue" / spec.name / f"seed={seed}"
                out_dir = out_dir / sub if sub else out_dir
                # W&B (logger=wandb): the arm's one finetune run, metrics under "<task>/seed=<n>/";
                # finetune_task writes the CSV log itself.
                loggers = build_loggers(cfg, out_dir, "finetune")[1:]
                r = finetune_task(state, config, tokenizer, spec.name, data_dir, seed, {**cfg_glue, **point},
                                  out_dir, encoded=encoded, trainer_kwargs=trainer_kwargs, loggers=loggers)
                tried.append({**r, "hparams": point})
            best = select_best(tried)
            runs.append({"seed": seed, "metrics": best["metrics"], "score": best["score"],
                         "best_epoch": best["best_epoch"], "hparams": best["hparams"],
                         "submission": best["submission"], "wall_s": sum(t["wall_s"] for t in tried),
                         "grid": [{"hparams": t["hparams"], "score": t["score"]} for t in tried]
                         if len(tried) > 1 else None})
        section["tasks"][spec.name] = {
            "metrics": list(spec.metrics), "main": spec.main_metric, "seeds": runs,
            "summary": summarize_seeds([r["score"] for r in runs]),
            "median_metrics": _median_metrics(runs, spec.metrics),
            "n_train": len(encoded["train"]), "n_dev": {s: len(encoded[s]) for s in dev_splits(spec)},
            "wall_s": sum(r["wall_s"] for r in runs),
        }
        chosen = select_best(runs)
        if chosen["submission"]:
            dest = run_dir / "glue" / "submission"
            dest.mkdir(parents=True, exist_ok=True)
            files = []
            for f in map(Path, chosen["submission"]):
                atomic_write_text(dest / f.name, f.read_text(encoding="utf-8"))
                files.append(str(dest / f.name))
            submission[spec.name] = {"seed": chosen["seed"], "files": files}
    section["score"] = glue_score({n: t["median_metrics"] for n, t in section["tasks"].items()})
    if submission:
        section["submission"] = submission
    return section
