"""The run's pretraining data, wired to its Plan: preprocessing once, then a Lightning DataModule.

`prepare(plan)` does all the preprocessing in the main process, before the Trainer exists
(corpus -> tokenizer -> token cache -> instances; every cached step is keyed by a hash, so the arms of
a sweep share it). `PretrainDataModule` then only serves batches: the training order comes from
`BatchPlanSampler` (a pure function of seed, epoch and step, so a resumed or multi-process run sees
the same data), chained over the seq_len phases by `PhasedSampler`; batches are masked by
data.pretrain_data.MaskedBatches.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from robablate.config import Plan
from robablate.data import corpus as corpus_mod
from robablate.data import token_cache
from robablate.data.batching import KEY_EPOCH, KEY_INDEX, BatchPlanSampler
from robablate.data.formats import build_instances, mean_tokens
from robablate.data.masking import MaskingSpec
from robablate.data.pretrain_data import VAL_SEED, MaskedBatches, PreparedData, first_n, fixed_val_batches, split_tail
from robablate.data.tokenizer import get_tokenizer, special_ids, tokenizer_fingerprint, word_start_table
from robablate.errors import DataError
from robablate.io import cache_key


def prepare(plan: Plan, *, tune_split: bool = False) -> PreparedData:
    """Tokenizer + token caches + instances for this arm (plan.specs says which corpus, tokenizer,
    format and validation set). Raises DataError on unusable data.

    tune_split=True (the LR pilots of tune.py): the last training documents, as many as hold the
    validation set's size (train.val_instances x train.val_max_len tokens, at most half of them), are
    taken out of training and serve as the validation split instead of the corpus' val split, which
    the reported numbers use and the LR choice must not see.
    """
    spec = plan.specs
    timings: dict[str, float] = {}
    t = time.perf_counter()
    fp = corpus_mod.fingerprint(spec.corpus)

    def docs(split: str):
        return corpus_mod.iter_documents(spec.corpus, split, cache_dir=spec.cache_dir)
    timings["corpus_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tok = get_tokenizer(spec.tokenizer, lambda: docs("train"), spec.cache_dir, fp)
    ids = special_ids(tok)
    timings["tokenizer_s"] = time.perf_counter() - t

    t = time.perf_counter()
    # The tokens depend on the corpus and the tokenizer itself (vocabulary with ids, normaliser, ...),
    # not its config: a retrained tokenizer (e.g. after TOKENIZER_VERSION changes) gets new caches.
    tok_key = cache_key(fp, tokenizer_fingerprint(tok))
    caches = {
        split: token_cache.build_or_load(lambda s=split: docs(s), tok,
                                         spec.cache_dir / "tokens", cache_key(tok_key, split))
        for split in ("train", "val")
    }
    timings["token_cache_s"] = time.perf_counter() - t

    t = time.perf_counter()
    fmt, n_val, val_len = spec.format, spec.val_instances, spec.val_max_len
    split = {"train": "corpus train split", "val": "corpus val split"}
    if tune_split:
        caches["train"], caches["val"], k = split_tail(caches["train"], n_val * val_len)
        split = {"train": f"corpus train split without its last {k} documents",
                 "val": f"the last {k} documents of the corpus train split ({len(caches['val'].tokens)} tokens), "
                        "held out of the pilots' training; the corpus val split is not used"}
    where = f"corpus `{spec.corpus.name}` ({spec.corpus.path or 'generated'})"
    try:
        phases = [build_instances(caches["train"], fmt.name, ph.max_len, fmt.short_seq_prob, spec.seed, ids)
                  for ph in plan.phases]
        val_mlm = first_n(build_instances(caches["val"], "full_sentences", val_len, 0.0, VAL_SEED, ids), n_val)
        val_nsp = (first_n(build_instances(caches["val"], fmt.name, val_len, 0.0, VAL_SEED, ids), n_val)
                   if fmt.nsp else None)
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
                f"{fmt.name} instances of at most {ph.max_len} tokens, fewer than one global batch "
                f"({need}); use a larger corpus or a smaller batch.size.")
    if len(val_mlm.lengths) == 0:
        raise DataError(f"The validation split of corpus `{spec.corpus.name}` is empty; it needs at least one document.")

    ws = word_start_table(tok) if spec.masking.whole_word else None
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


class PretrainDataModule(pl.LightningDataModule):
    def __init__(self, data: PreparedData, plan: Plan, masking: MaskingSpec, seed: int, num_workers: int = 0,
                 pack: bool = False):
        super().__init__()
        self.data, self.plan, self.seed, self.num_workers = data, plan, seed, num_workers
        self.masking = MaskingSpec.of(masking)
        self.pack = pack

    def _start_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def _generator(self) -> torch.Generator:
        """Each loader's own generator: a DataLoader iterator otherwise draws its base seed from torch's
        global RNG, which dropout also uses, so a run resumed between two validations (one more iterator
        created) would train with other dropout masks than the uninterrupted run. Batches and masks do
        not depend on it (they come from (seed, epoch, index))."""
        return torch.Generator().manual_seed(self.seed)

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sampler = PhasedSampler(self.data, self.plan, self.seed, rank, self._start_step)
        return DataLoader(MaskedBatches(self.data, self.masking, self.seed, self.pack), sampler=sampler, batch_size=None,
                          num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
                          persistent_workers=False, generator=self._generator())

    def val_dataloader(self) -> list[DataLoader]:
        bs = max(1, self.plan.micro_batch)
        # Validation masks are fixed (VAL_SEED) and use the dynamic rule's epoch 0 for every arm.
        loaders = [DataLoader(fixed_val_batches(self.data.val_mlm, bs, self.masking, self.data.ids,
                                                self.data.word_starts), batch_size=None, generator=self._generator())]
        if self.data.val_nsp is not None:
            loaders.append(DataLoader(fixed_val_batches(self.data.val_nsp, bs, self.masking, self.data.ids,
                                                        self.data.word_starts), batch_size=None,
                                      generator=self._generator()))
        return loaders
