"""No compute on padding: turn a padded, masked batch into real tokens + a packed attention layout.

A padded batch [B, L] spends the encoder's dense layers (QKV, output, FFN, LayerNorms: ~90% of a small
BERT's FLOPs at L=128) on pad positions; FULL-SENTENCES instances hold ~107 real tokens of 128, pair
formats fewer. `pack_batch` keeps only the real tokens, in instance order ([T], T = sum of lengths),
so the dense layers run on exactly T rows (the unpadding of MosaicBERT, Portes et al. 2023, which
follows NVIDIA's BERT "packed" kernels). Attention still needs each instance on its own: the tokens
are laid out for it in rows of width W (the batch's longest instance), first-fit decreasing, several
short instances per row, with a per-slot segment id; the model attends only within a segment (a
block-diagonal mask), so no token ever sees another instance (Krell et al. 2021, "Efficient sequence
packing without cross-contamination").

What each instance contains, where its separators are, its token types, its masks (masking runs per
instance before this) and what attends to what are unchanged; position ids restart at 0 for every
instance, as in the padded batch. tests/test_packing.py checks that the loss is the same.
"""

from __future__ import annotations

import numpy as np
import torch

PACKED_KEY = "pack_index"  # present in a batch dict iff the batch is packed (models/bert.py checks it)


def first_fit_decreasing(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assign items of `lengths` (each <= width) to rows of `width`: (row, offset, rank in row) per item.

    Longest first, each into the first row with room (Johnson 1973; <= 11/9 OPT + 1 rows). Loops over
    instances (tens per batch), never tokens. Ties keep the input order, so the result is deterministic.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > width):
        raise ValueError(f"every length must be in [1, {width}], got {lengths.min()}..{lengths.max()}")
    row = np.empty(len(lengths), dtype=np.int64)
    offset = np.empty(len(lengths), dtype=np.int64)
    rank = np.empty(len(lengths), dtype=np.int64)
    used: list[int] = []  # tokens already in each row
    count: list[int] = []  # items already in each row
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        r = next((k for k, u in enumerate(used) if u + n <= width), len(used))
        if r == len(used):
            used.append(0)
            count.append(0)
        row[i], offset[i], rank[i] = r, used[r], count[r]
        used[r] += n
        count[r] += 1
    return row, offset, rank


def pack_layout(lengths: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Index arrays of the packed layout for instances of `lengths`, tokens flattened in instance order.

    pack_index   int64 [R, W]: the flat token at each row slot (0 for an empty slot: its value is
                 never seen by a real token, and its output is dropped)
    unpack_index int64 [T]: the slot (r * W + w) of each flat token
    segment_ids  int64 [R, W]: 1 + the instance's order within its row, 0 on empty slots (empty slots
                 attend to each other, so no softmax row is empty: no NaN in the discarded outputs)
    position_ids int64 [T]: position within its instance (restarts at 0: [CLS] is position 0)
    cls_index    int64 [N]: flat index of each instance's first token ([CLS], for the NSP head)
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    row, offset, rank = first_fit_decreasing(lengths, width)
    n_rows = int(row.max()) + 1 if len(row) else 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = int(lengths.sum())
    inst = np.repeat(np.arange(len(lengths)), lengths)             # instance of each flat token
    position = np.arange(total, dtype=np.int64) - starts[inst]
    unpack = row[inst] * width + offset[inst] + position
    pack = np.zeros(n_rows * width, dtype=np.int64)
    pack[unpack] = np.arange(total, dtype=np.int64)
    segment = np.zeros(n_rows * width, dtype=np.int64)
    segment[unpack] = rank[inst] + 1
    return {"pack_index": pack.reshape(n_rows, width), "unpack_index": unpack,
            "segment_ids": segment.reshape(n_rows, width), "position_ids": position, "cls_index": starts}


def pack_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A padded batch (input_ids, token_type_ids, attention_mask, mlm_labels: [B, L]; nsp_labels: [B])
    -> the same tokens packed: input_ids, token_type_ids, mlm_labels, position_ids as [T] (real tokens,
    instance order), the pack_layout indices, nsp_labels [B], and attention_mask [R, W] (bool, True on
    occupied slots: its sum is still the real-token count, its width the attention span)."""
    mask = batch["attention_mask"].bool()
    lengths = mask.sum(1)
    if not bool((mask == (torch.arange(mask.shape[1]) < lengths[:, None])).all()) or int(lengths.min()) < 1:
        raise ValueError("pack_batch expects right-padded rows (attention_mask 1...1 0...0), each non-empty, "
                         "trimmed to the longest")
    layout = {k: torch.from_numpy(v) for k, v in pack_layout(lengths.numpy(), mask.shape[1]).items()}
    out = {k: batch[k][mask] for k in ("input_ids", "token_type_ids", "mlm_labels")}
    out.update(layout)
    out["nsp_labels"] = batch["nsp_labels"]
    out["attention_mask"] = layout["segment_ids"] > 0
    return out


def padding_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Share of the positions the dense layers run on that are padding (0 for a packed batch)."""
    if PACKED_KEY in batch:
        return 0.0
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()
