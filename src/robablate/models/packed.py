"""Packed batches in the encoder (train.pack=true): where the real tokens of a batch sit in the
attention rows (`PackedLayout`, built from data/packing.pack_layout's indices) and the gather between
the two whose gradient is a gather too (`Regather`). models/bert.py runs the dense layers on the real
tokens [T, H] and attention on the rows with a block-diagonal mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


class Regather(torch.autograd.Function):
    """y = x[index] whose gradient is a gather too: grad_x = grad_y[inverse].

    Between the real tokens [T] and the packed rows [R*W] each real token sits in exactly one slot, so
    the two index arrays invert each other on real tokens, and the backward of either gather is the
    other gather (a parallel, deterministic copy; autograd's own backward is an accumulating scatter,
    measured 2x slower on CPU). The empty slots are the exception, and harmless: their attention
    outputs are dropped, so the gradient reaching them is zero, and the gradient the unpacking hands
    them (some real token's) only flows back through attention rows that the block-diagonal mask
    confines to empty slots (their probabilities toward real tokens are exactly 0), then is dropped by
    the packing's backward. tests/test_packing.py checks the gradients against the padded batch.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


@dataclass
class PackedLayout:
    """Where the real tokens [T] sit in the attention rows [R, W] (built by data/packing.pack_layout)."""

    pack_index: torch.Tensor    # [R, W] flat token at each slot
    unpack_index: torch.Tensor  # [T] slot of each token
    segment_ids: torch.Tensor   # [R, W] instance within the row (1, 2, ...), 0 on empty slots
    cls_index: torch.Tensor     # [N] flat index of each instance's [CLS]

    def attn_mask(self) -> torch.Tensor:
        """Boolean [R, 1, W, W], True where query and key belong to the same instance (block diagonal)."""
        seg = self.segment_ids
        return (seg[:, :, None] == seg[:, None, :])[:, None]
