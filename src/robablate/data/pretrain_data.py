"""Pretraining data: corpus -> tokenizer -> token cache -> instances -> masked batches (Lightning).

`prepare(cfg, plan)` does all the preprocessing once, in the main process, before the Trainer exists
(every cached step is keyed by a hash, so the arms of a sweep share it). `PretrainDataModule` then only
serves batches: the training order comes from `BatchPlanSampler` (a pure function of seed, epoch and
step, so a resumed or multi-process run sees the same data) and each batch is masked by `mask_tokens`
with the data epoch (dynamic) or the copy index epoch % dupe_factor (static).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from robablate.config import Plan
from robablate.data import corpus as corpus_mod
from robablate.data import token_cache
from robablate.data.token_cache import TokenCache
from robablate.data.batching import KEY_EPOCH, KEY_INDEX, BatchPlanSampler
from robablate.data.formats import Instances, build_instances, mean_tokens, token_type_ids
from robablate.data.masking import mask_epoch, mask_tokens
from robablate.data.packing import pack_batch
from robablate.data.tokenizer import (SpecialIds, get_tokenizer, special_ids, tokenizer_fingerprint,
                                      word_start_table)
from robablate.errors import DataError
from robablate.io import cache_key

# Validation masks and instances use this seed whatever the run's seed, so every arm is scored on the
# very same masked tokens (only the model differs).
VAL_SEED = 20190726
PHASE_SEED_STRIDE = 1_000_003


@dataclass
class PreparedData:
    """Everything the DataModule serves, built once per run (cheap to pickle for ddp_spawn)."""

    ids: SpecialIds
    word_starts: np.ndarray | None
    phases: list[Instances]            # training instances, one set per seq_len phase
    val_mlm: Instances                 # FULL-SENTENCES at train.val_max_len: the same for every arm
    val_nsp: Instances | None          # the arm's pair format on the validation documents (nsp=true)
    tokenizer: Any = None
    fingerprint: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def _first(inst: Instances, n: int) -> Instances:
    return Instances(inst.input_ids[:n], inst.lengths[:n], inst.b_start[:n], inst.nsp_labels[:n])


def split_tail(cache: TokenCache, tokens: int) -> tuple[TokenCache, TokenCache, int]:
    """(head, tail, k): the last k documents of `cache`, the fewest holding >= `tokens` tokens (at most
    half of the documents), and the documents before them. Contiguous views, no copies."""
    doc_tok = np.asarray(cache.sent_offsets)[np.asarray(cache.doc_offsets)]  # token offset of each doc
    n_docs = len(doc_tok) - 1
    if n_docs < 2:
        raise DataError(f"token cache {cache.fingerprint or '(unnamed)'}: holding out documents needs >= 2, "
                        f"found {n_docs}")
    enough = np.flatnonzero(doc_tok[-1] - doc_tok[:-1] >= tokens)  # tail from document j holds enough
    k = max(1, min(n_docs - int(enough[-1]) if len(enough) else n_docs, n_docs // 2))
    cut_doc = n_docs - k
    cut_sent, cut_tok = int(cache.doc_offsets[cut_doc]), int(doc_tok[cut_doc])
    so, do = np.asarray(cache.sent_offsets), np.asarray(cache.doc_offsets)
    head = TokenCache(cache.tokens[:cut_tok], so[: cut_sent + 1], do[: cut_doc + 1], cache.fingerprint + ":head")
    tail = TokenCache(cache.tokens[cut_tok:], so[cut_sent:] - cut_tok, do[cut_doc:] - cut_sent,
                      cache.fingerprint + f":tail{k}")
    return head, tail, k


def prepare(cfg: DictConfig, plan: Plan, *, tune_split: bool = False) -> PreparedData:
    """Tokenizer + token caches + instances for this arm. Raises DataError on unusable data.

    tune_split=True (the LR pilots of tune.py): the last training documents, as many as hold the
    validation set's size (train.val_instances x train.val_max_len tokens, at most half of them), are
    taken out of training and serve as the validation split instead of the corpus' val split, which
    the reported numbers use and the LR choice must not see.
    """
    timings: dict[str, float] = {}
    cache_dir = Path(cfg.cache_dir).resolve()
    t = time.perf_counter()
    read_cfg = cfg.corpus
    fp = corpus_mod.fingerprint(read_cfg)

    def docs(split: str):
        return corpus_mod.iter_documents(read_cfg, split, cache_dir=cache_dir)
    timings["corpus_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tok = get_tokenizer(cfg.tokenizer, lambda: docs("train"), cache_dir, fp)
    ids = special_ids(tok)
    timings["tokenizer_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # The tokens depend on the corpus and the tokenizer itself (vocabulary with ids, normaliser, ...),
    # not its config: a retrained tokenizer (e.g. after TOKENIZER_VERSION changes) gets new caches.
    tok_key = cache_key(fp, tokenizer_fingerprint(tok))
    caches = {
        split: token_cache.build_or_load(lambda s=split: docs(s), tok,
                                         cache_dir / "tokens", cache_key(tok_key, split))
        for split in ("train", "val")
    }
    timings["token_cache_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ssp = float(cfg.seq_len.short_seq_prob)
    n_val = int(cfg.train.val_instances)
    val_len = int(cfg.train.val_max_len)
    split = {"train": "corpus train split", "val": "corpus val split"}
    if tune_split:
        caches["train"], caches["val"], k = split_tail(caches["train"], n_val * val_len)
        split = {"train": f"corpus train split without its last {k} documents",
                 "val": f"the last {k} documents of the corpus train split ({len(caches['val'].tokens)} tokens), "
                        "held out of the pilots' training; the corpus val split is not used"}
    where = f"corpus `{cfg.corpus.name}` ({read_cfg.get('path') or 'generated'})"
    try:
        phases = [build_instances(caches["train"], plan.format, ph.max_len, ssp, int(cfg.seed), ids)
                  for ph in plan.phases]
        val_mlm = _first(build_instances(caches["val"], "full_sentences", val_len, 0.0, VAL_SEED, ids), n_val)
        val_nsp = (_first(build_instances(caches["val"], plan.format, val_len, 0.0, VAL_SEED, ids), n_val)
                   if plan.nsp else None)
    except DataError as e:
        raise DataError(f"{where}: {e}") from e
    timings["instances_s"] = time.perf_counter() - t

    for inst, ph in zip(phases, plan.phases):
        # Token batching: one step takes about tokens_per_step / mean length instances.
        need = (max(plan.accumulate * plan.world_size, math.ceil(ph.tokens_per_step / max(mean_tokens(inst), 1.0)))
                if plan.token_batching else plan.global_batch)
        if len(inst.lengths) < need:
            raise DataError(
                f"The {where} gives only {len(inst.lengths)} "
                f"{plan.format} instances of at most {ph.max_len} tokens, fewer than one global batch "
                f"({need}); use a larger corpus or a smaller batch.size.")
    if len(val_mlm.lengths) == 0:
        raise DataError(f"The validation split of corpus `{cfg.corpus.name}` is empty; it needs at least one document.")

    ws = word_start_table(tok) if cfg.masking.whole_word else None
    stats = {
        "train_tokens": int(len(caches["train"].tokens)),
        "train_sentences": caches["train"].n_sentences,
        "train_docs": caches["train"].n_docs,
        "val_tokens": int(len(caches["val"].tokens)),
        "instances": [int(len(p.lengths)) for p in phases],
        "mean_instance_tokens": [mean_tokens(p) for p in phases],
        # Sequences an optimizer step takes on average (batch.unit=tokens: the budget / mean length).
        "sequences_per_step": [ph.tokens_per_step / mean_tokens(p) if plan.token_batching else plan.global_batch
                               for p, ph in zip(phases, plan.phases)],
        "split": split,
        "vocab_size": ids.vocab_size,
    }
    return PreparedData(ids=ids, word_starts=ws, phases=phases, val_mlm=val_mlm, val_nsp=val_nsp, tokenizer=tok,
                        fingerprint=tok_key, timings=timings, stats=stats)


def make_batch(inst: Instances, idx: np.ndarray, epoch: int, seed: int, masking: DictConfig, ids: SpecialIds,
               word_starts: np.ndarray | None) -> dict[str, torch.Tensor]:
    """Rows `idx` of `inst`, trimmed to their longest length and masked with (seed, epoch, idx)."""
    lengths = inst.lengths[idx]
    L = int(lengths.max())
    rows = np.asarray(inst.input_ids[idx, :L], dtype=np.int64)
    masked, labels = mask_tokens(
        rows, idx.astype(np.int64), epoch, seed, mask_prob=masking.mask_prob,
        mask_token_frac=masking.mask_token_frac, random_token_frac=masking.random_token_frac,
        ids=ids, word_starts=word_starts)
    return {
        "input_ids": torch.from_numpy(masked),
        "token_type_ids": torch.from_numpy(token_type_ids(inst.b_start[idx], lengths, L).astype(np.int64)),
        "attention_mask": torch.from_numpy(np.arange(L)[None, :] < lengths[:, None]),
        "mlm_labels": torch.from_numpy(labels),
        "nsp_labels": torch.from_numpy(np.asarray(inst.nsp_labels[idx], dtype=np.int64)),
    }


class MaskedBatches(Dataset):
    """Map-style dataset whose items are whole batches: key = (phase, data epoch, instance indices).

    Returning batches (DataLoader batch_size=None) lets `mask_tokens` run once per batch, vectorised.
    """

    def __init__(self, data: PreparedData, masking: DictConfig, seed: int, pack: bool = False):
        self.data, self.masking, self.seed, self.pack = data, masking, seed, pack

    def __len__(self) -> int:  # not used for sampling; the sampler drives the order
        return sum(len(p.lengths) for p in self.data.phases)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> dict[str, torch.Tensor]:
        phase, epoch, idx = key
        m_epoch = mask_epoch(self.masking.name, epoch, self.masking.dupe_factor)
        # Phase p's instance i is a different sequence from phase 0's instance i: give it its own masks.
        seed = self.seed + PHASE_SEED_STRIDE * phase
        batch = make_batch(self.data.phases[phase], idx, m_epoch, seed, self.masking, self.data.ids,
                           self.data.word_starts)
        # train.pack: masked per instance above, then only the real tokens go to the encoder (data/packing.py).
        return pack_batch(batch) if self.pack else batch


class PhasedSampler(Sampler):
    """Chains one BatchPlanSampler per seq_len phase, from the trainer's current global step.

    `start_step` is read when iteration starts, so a run resumed at step k continues with exactly the
    batches an uninterrupted run would have fed after step k (no dataloader state to save).
    """

    def __init__(self, data: PreparedData, plan: Plan, seed: int, rank: int, start_step_fn):
        self.data, self.plan, self.seed, self.rank, self.start_step_fn = data, plan, seed, rank, start_step_fn

    def __len__(self) -> int:
        return self.plan.total_steps * self.plan.accumulate

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        start, offset = int(self.start_step_fn()), 0
        for p, ph in enumerate(self.plan.phases):
            end = offset + ph.steps
            if start < end:
                tokens = ph.tokens_per_step if self.plan.token_batching else None
                sampler = BatchPlanSampler(
                    self.data.phases[p].lengths, seed=self.seed, batch_size=self.plan.global_batch,
                    tokens_per_batch=tokens, accumulate=self.plan.accumulate, world_size=self.plan.world_size,
                    rank=self.rank, start_step=max(0, start - offset), max_steps=ph.steps, phase=p)
                for keys in sampler:  # one data epoch per global batch
                    yield p, int(keys[0, KEY_EPOCH]), keys[:, KEY_INDEX]
            offset = end


def fixed_val_batches(inst: Instances, batch_size: int, masking: DictConfig, ids: SpecialIds,
                      word_starts: np.ndarray | None) -> list[dict[str, torch.Tensor]]:
    """Validation batches masked once with VAL_SEED: identical tokens scored for every arm and step."""
    out = []
    for s in range(0, len(inst.lengths), batch_size):
        idx = np.arange(s, min(s + batch_size, len(inst.lengths)))
        out.append(make_batch(inst, idx, 0, VAL_SEED, masking, ids, word_starts))
    return out


class PretrainDataModule(pl.LightningDataModule):
    def __init__(self, data: PreparedData, plan: Plan, masking: DictConfig, seed: int, num_workers: int = 0,
                 pack: bool = False):
        super().__init__()
        self.data, self.plan, self.masking, self.seed, self.num_workers = data, plan, masking, seed, num_workers
        self.pack = pack

    def _start_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sampler = PhasedSampler(self.data, self.plan, self.seed, rank, self._start_step)
        return DataLoader(MaskedBatches(self.data, self.masking, self.seed, self.pack), sampler=sampler, batch_size=None,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False)

    def val_dataloader(self) -> list[DataLoader]:
        bs = max(1, self.plan.micro_batch)
        # Validation masks are fixed (VAL_SEED) and use the dynamic rule's epoch 0 for every arm.
        loaders = [DataLoader(fixed_val_batches(self.data.val_mlm, bs, self.masking, self.data.ids,
                                                self.data.word_starts), batch_size=None)]
        if self.data.val_nsp is not None:
            loaders.append(DataLoader(fixed_val_batches(self.data.val_nsp, bs, self.masking, self.data.ids,
                                                        self.data.word_starts), batch_size=None))
        return loaders
