"""Pretraining batches: instances -> masked batches, and the data a run prepares once.

`PreparedData` holds what robablate.datamodule.prepare builds (tokenizer, instances per phase, fixed
validation sets); `MaskedBatches` serves a batch per key (phase, data epoch, instance indices), masked
by `mask_tokens` with the data epoch (dynamic) or the copy index epoch % dupe_factor (static);
`fixed_val_batches` masks the validation set once. Pure data code: the run's Plan and the Lightning
wiring are in robablate.datamodule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from robablate.data.token_cache import TokenCache
from robablate.data.formats import Instances, token_type_ids
from robablate.data.masking import MaskingSpec, mask_batch
from robablate.data.packing import pack_batch
from robablate.data.tokenizer import SpecialIds
from robablate.errors import DataError

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


def first_n(inst: Instances, n: int) -> Instances:
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


def make_batch(inst: Instances, idx: np.ndarray, epoch: int, seed: int, masking: MaskingSpec, ids: SpecialIds,
               word_starts: np.ndarray | None) -> dict[str, torch.Tensor]:
    """Rows `idx` of `inst`, trimmed to their longest length and masked with (seed, epoch, idx)."""
    lengths = inst.lengths[idx]
    L = int(lengths.max())
    rows = np.asarray(inst.input_ids[idx, :L], dtype=np.int64)
    masked, labels = mask_batch(rows, idx.astype(np.int64), epoch, seed, masking, ids, word_starts)
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

    def __init__(self, data: PreparedData, masking: MaskingSpec | Mapping[str, Any], seed: int, pack: bool = False):
        self.data, self.seed, self.pack = data, seed, pack
        self.masking = MaskingSpec.of(masking)  # checked once here, not per batch

    def __len__(self) -> int:  # not used for sampling; the sampler drives the order
        return sum(len(p.lengths) for p in self.data.phases)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> dict[str, torch.Tensor]:
        phase, epoch, idx = key
        m_epoch = self.masking.epoch(epoch)
        # Phase p's instance i is a different sequence from phase 0's instance i: give it its own masks.
        seed = self.seed + PHASE_SEED_STRIDE * phase
        batch = make_batch(self.data.phases[phase], idx, m_epoch, seed, self.masking, self.data.ids,
                           self.data.word_starts)
        # train.pack: masked per instance above, then only the real tokens go to the encoder (data/packing.py).
        return pack_batch(batch) if self.pack else batch


def fixed_val_batches(inst: Instances, batch_size: int, masking: MaskingSpec | Mapping[str, Any], ids: SpecialIds,
                      word_starts: np.ndarray | None) -> list[dict[str, torch.Tensor]]:
    """Validation batches masked once with VAL_SEED: identical tokens scored for every arm and step."""
    masking = MaskingSpec.of(masking)
    out = []
    for s in range(0, len(inst.lengths), batch_size):
        idx = np.arange(s, min(s + batch_size, len(inst.lengths)))
        out.append(make_batch(inst, idx, 0, VAL_SEED, masking, ids, word_starts))
    return out
