"""BERT for pretraining, in one readable file (after nanoGPT's model.py).

Post-LayerNorm Transformer encoder exactly as the BERT paper / Hugging Face `BertModel` (so an exported
checkpoint loads in transformers with the same logits): learned absolute positions, two token types,
exact-erf GELU, fused QKV projection and `scaled_dot_product_attention`.

The MLM head runs only on the selected positions (labels != -100): with 15% masking this skips 85% of
the [tokens x vocab] output matmul, which is the single largest matmul of a small BERT.

Packed batches (data/packing.py, train.pack=true; the layout in models/packed.py): the dense layers run
on the real tokens only ([T, H], no padding) and attention runs on rows of several instances with a
block-diagonal mask, so the outputs are those of the padded batch without its padding compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robablate.errors import ConfigError, int_at_least
from robablate.models.packed import PackedLayout, Regather

IGNORE_INDEX = -100  # label value meaning "no loss here" (PyTorch's cross_entropy default)


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                    "max_position_embeddings", "type_vocab_size"):
            int_at_least(getattr(self, key), f"model.{key}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"model.num_heads={self.num_heads} must divide model.hidden_size="
                              f"{self.hidden_size} (each head gets hidden_size / num_heads dims)")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= float(getattr(self, key)) < 1.0:
                raise ConfigError(f"model.{key} must be in [0, 1), got {getattr(self, key)!r}")
        if not float(self.layer_norm_eps) > 0:
            raise ConfigError(f"model.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad token id {self.pad_token_id} is outside the vocabulary "
                              f"(size {self.vocab_size})")

    @classmethod
    def from_cfg(cls, cfg_model: Mapping[str, Any], vocab_size: int, pad_token_id: int) -> "BertConfig":
        """Build from the `model` config group; the vocabulary comes from the tokenizer, not the YAML."""
        known = {f.name for f in fields(cls)} - {"vocab_size", "pad_token_id"}
        kwargs = {k: cfg_model[k] for k in cfg_model if k in known}
        for k in ("dropout", "attention_dropout", "layer_norm_eps"):
            if k in kwargs:
                kwargs[k] = float(kwargs[k])
        return cls(vocab_size=int(vocab_size), pad_token_id=int(pad_token_id), **kwargs)


# model.init: `pretrained` trains the encoder; `random` is the control arm (no pretraining step, the
# same tokenizer, validation MLM loss at initialisation and the same read-outs), so every read-out
# can be reported as a pretraining gain over it.
INITS = ("pretrained", "random")


@dataclass(frozen=True)
class ModelSpec:
    """The `model` group, checked once by `from_config` (config.validate calls it before any compute):
    the architecture, whose vocabulary the tokenizer decides later (`config`), and `model.init`."""

    arch: BertConfig   # every model.* size and rate; vocab_size / pad_token_id are placeholders
    init: str = "pretrained"

    @classmethod
    def from_config(cls, cfg_model: Mapping[str, Any]) -> "ModelSpec":
        init = cfg_model.get("init", "pretrained")
        if init not in INITS:
            raise ConfigError(f"Invalid config `model.init`: expected one of {INITS}, got {init!r}.")
        # vocab_size=1, pad 0 stand in for the tokenizer's: every other rule is checked now.
        return cls(arch=BertConfig.from_cfg(cfg_model, vocab_size=1, pad_token_id=0), init=init)

    def config(self, vocab_size: int, pad_token_id: int) -> BertConfig:
        """The encoder's config for the run's tokenizer."""
        return replace(self.arch, vocab_size=int(vocab_size), pad_token_id=int(pad_token_id))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with a cheaper random mask on CPU (same distribution, another random stream).

    torch's CPU dropout draws its Bernoulli mask one element at a time from mt19937 (its fast MKL
    path runs on Intel CPUs only): 7% of a training step at the benchmark shape. Here one 64-bit draw
    gives two 32-bit uniforms, and a unit is dropped when its uniform falls in the lowest p * 2^32 of
    the range: still i.i.d. with probability p (to 2^-32, finer than a float32 uniform), kept units
    scaled by 1 / (1 - p), so the layer means the same as nn.Dropout. 2.5x faster than F.dropout.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, True)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None)  # full 64-bit range
    keep = bits.view(torch.int32)[:n].view(x.shape) >= -(2**31) + round(p * 2**32)
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))


class Dropout(nn.Dropout):
    """nn.Dropout (same name, same state dict) through `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def _add_norm(block: nn.Module, c: BertConfig) -> None:
    """The LayerNorm and dropout each block ends with (post-LN, as BERT; HF's names, for the export)."""
    block.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
    block.dropout = Dropout(c.dropout)


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        # padding_idx as HF: the pad row starts at zero and gets no gradient from the lookup.
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        _add_norm(self, c)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] ids (positions 0..L-1), or any shape with explicit position_ids (packed: [T])."""
        if position_ids is None:
            L = input_ids.shape[1]
            if L > self.position_embeddings.num_embeddings:
                # Would otherwise be an opaque index error (a device-side assert on CUDA).
                raise ValueError(f"sequence length {L} exceeds max_position_embeddings "
                                 f"{self.position_embeddings.num_embeddings}")
            pos = self.position_embeddings(torch.arange(L, device=input_ids.device))[None]
        else:
            pos = self.position_embeddings(position_ids)
        x = self.word_embeddings(input_ids) + pos
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention + residual + post-LayerNorm (HF's BertAttention)."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.num_heads = c.num_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)  # rows: [query; key; value]
        self.out = nn.Linear(c.hidden_size, c.hidden_size)
        _add_norm(self, c)
        self.attention_dropout = c.attention_dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                layout: PackedLayout | None = None) -> torch.Tensor:
        """x: [B, L, H] padded, or [T, H] real tokens with `layout` (attention then runs on its rows)."""
        H = x.shape[-1]
        qkv = self.qkv(x)
        if layout is not None:  # [T, 3H] -> rows [R, W, 3H]; empty slots hold some token, never attended to
            R, W = layout.pack_index.shape
            qkv = Regather.apply(qkv, layout.pack_index.view(-1), layout.unpack_index).view(R, W, 3 * H)
        B, L = qkv.shape[:2]
        q, k, v = qkv.view(B, L, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)
        y = self._attend(q, k, v, attn_mask).transpose(1, 2).reshape(B * L, H)
        if layout is not None:  # rows -> [T, H]
            y = Regather.apply(y, layout.unpack_index, layout.pack_index.view(-1))
        else:
            y = y.view(B, L, H)
        return self.LayerNorm(x + self.dropout(self.out(y)))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        p = self.attention_dropout if self.training else 0.0
        if p > 0 and q.device.type == "cpu":
            # SDPA's fused CPU kernel has no dropout, so SDPA would run this same math path; written
            # out, the probabilities get the cheaper dropout above (and q alone is scaled, not q and k).
            scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
            if attn_mask is not None:  # every row keeps [CLS] (packed: its own segment) unmasked: no all -inf row
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            return dropout(scores.softmax(-1), p, True) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False, dropout_p=p)


class Layer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = SelfAttention(c)
        self.intermediate = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output = nn.Linear(c.intermediate_size, c.hidden_size)
        _add_norm(self, c)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                layout: PackedLayout | None = None) -> torch.Tensor:
        x = self.attention(x, attn_mask, layout)
        return self.LayerNorm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))


def _attn_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, L] 1/0 padding mask -> boolean [B, 1, 1, L] (True = may attend), or None without padding.

    None lets SDPA pick its fastest kernel (flash) when the batch has no padding (e.g. FULL-SENTENCES).
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size)  # tanh(W h_[CLS] + b), BERT §3

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                layout: PackedLayout | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded: [B, L] -> ([B, L, H], pooled [B, H]). Packed (`layout`, 1-D input_ids, token types and
        position ids of the real tokens; attention_mask unused): ([T, H], pooled [N, H], one per instance)."""
        if layout is None:
            mask = _attn_mask(attention_mask)
        else:
            if layout.pack_index.shape[1] > self.config.max_position_embeddings:
                raise ValueError(f"packed row width {layout.pack_index.shape[1]} exceeds max_position_embeddings "
                                 f"{self.config.max_position_embeddings}")
            mask = layout.attn_mask()
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        for layer in self.layers:
            x = layer(x, mask, layout)
        cls = x[:, 0] if layout is None else x[layout.cls_index]
        return x, torch.tanh(self.pooler(cls))


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder (weight tied to the word embeddings, own bias)."""

    def __init__(self, c: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)  # vocab_size outputs: [MASK] is in the vocab
        self.decoder.weight = word_embeddings.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(F.gelu(self.dense(h))))


class BertForPretraining(nn.Module):
    def __init__(self, config: BertConfig, nsp: bool):
        super().__init__()
        self.config = config
        self.encoder = BertEncoder(config)
        self.mlm_head = MLMHead(config, self.encoder.embeddings.word_embeddings)
        self.nsp_head = nn.Linear(config.hidden_size, 2) if nsp else None
        self.apply(self._init_weights)
        # The tied decoder re-initialised the shared matrix after the embedding did: zero the pad row
        # again, as HF's BertForPreTraining ends up with (same init for a fair comparison with HF).
        with torch.no_grad():
            self.encoder.embeddings.word_embeddings.weight[config.pad_token_id].zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # normal(0, 0.02), zero biases, LayerNorm 1/0: HF _init_weights (BERT's TF code truncates at 2 std).
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def nsp(self) -> bool:
        return self.nsp_head is not None

    def mlm_logits(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full [B, L, V] logits (export tests, inspection); training uses forward()."""
        return self.mlm_head(self.encoder(input_ids, token_type_ids, attention_mask)[0])

    def nsp_logits(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.nsp_head is None:
            raise RuntimeError("this model was built with nsp=False: it has no NSP head")
        return self.nsp_head(self.encoder(input_ids, token_type_ids, attention_mask)[1])

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, mlm_labels: torch.Tensor | None = None,
                nsp_labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                pack_index: torch.Tensor | None = None, unpack_index: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None, cls_index: torch.Tensor | None = None,
                with_accuracy: bool = True) -> dict[str, torch.Tensor | None]:
        """Losses and accuracy counts. nsp_* counts are 0 when there is no NSP head or no NSP labels.
        with_accuracy=False (training steps): mlm_correct is None, the [N, vocab] argmax is skipped
        (~1% of a CPU step at BERT-Mini; the loss is the same).

        Takes a padded batch or a packed one (data/packing.pack_batch: the same instances, same loss)."""
        if mlm_labels is None:
            raise ValueError("mlm_labels is required (use mlm_logits() for inference)")
        layout = None
        if pack_index is not None:
            if unpack_index is None or segment_ids is None or cls_index is None or position_ids is None:
                raise ValueError("a packed batch needs position_ids, pack_index, unpack_index, segment_ids "
                                 "and cls_index (data/packing.pack_batch)")
            layout = PackedLayout(pack_index, unpack_index, segment_ids, cls_index)
        hidden, pooled = self.encoder(input_ids, token_type_ids, attention_mask, position_ids, layout)
        # Loss only on the selected positions (BERT §3.1): gather them, then run the head on [N, H].
        selected = mlm_labels != IGNORE_INDEX
        targets = mlm_labels[selected]
        logits = self.mlm_head(hidden[selected])
        # Sum / max(N, 1): the mean over selected tokens, and exactly 0 (with a graph) when N == 0,
        # where a plain mean would be 0/0 = NaN.
        n = targets.numel()
        mlm_loss = F.cross_entropy(logits.float(), targets, reduction="sum") / max(n, 1)
        out: dict[str, torch.Tensor | None] = {
            "mlm_loss": mlm_loss,
            "mlm_correct": (logits.argmax(-1) == targets).sum().detach() if with_accuracy else None,
            "mlm_count": torch.tensor(n, device=input_ids.device),
            "nsp_loss": None,
            "nsp_correct": torch.zeros((), dtype=torch.long, device=input_ids.device),
            "nsp_count": torch.zeros((), dtype=torch.long, device=input_ids.device),
        }
        loss = mlm_loss
        if self.nsp_head is not None and nsp_labels is not None:
            nsp_logits = self.nsp_head(pooled).float()
            valid = nsp_labels != IGNORE_INDEX
            count = valid.sum()
            nsp_loss = F.cross_entropy(nsp_logits, nsp_labels, ignore_index=IGNORE_INDEX,
                                       reduction="sum") / count.clamp_min(1)
            out.update(nsp_loss=nsp_loss, nsp_count=count.detach(),
                       nsp_correct=((nsp_logits.argmax(-1) == nsp_labels) & valid).sum().detach())
            loss = loss + nsp_loss
        out["loss"] = loss
        return out


def num_params(model: nn.Module, non_embedding: bool = True) -> int:
    """Parameter count (tied weights once); non_embedding drops the lookup tables, as nanoGPT."""
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return n


def flops_per_token(config: BertConfig, seq_len: int, mlm_fraction: float = 0.15) -> float:
    """Training FLOPs per token (forward + backward), for MFU (nanoGPT / PaLM appendix B).

    6 N for the encoder's non-embedding weights, 12 * layers * hidden * seq_len for the attention scores
    and their weighted sum (bidirectional: every token sees all seq_len positions), and 6 x the MLM
    head's weights at the mlm_fraction of positions where the head runs. The pooler/NSP head
    (once per sequence) is negligible and left out.
    """
    H, I, L = config.hidden_size, config.intermediate_size, config.num_layers
    per_layer = (4 * H * H + 4 * H) + (2 * H * I + I + H) + 4 * H  # attention, FFN, two LayerNorms
    head = H * H + H + 2 * H + H * config.vocab_size + config.vocab_size
    return 6.0 * L * per_layer + 12.0 * L * H * seq_len + 6.0 * mlm_fraction * head


def mfu(config: BertConfig, seq_len: int, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s over the hardware's peak (e.g. 989e12 bf16 H100)."""
    return flops_per_token(config, seq_len) * tokens_per_s / peak_flops if peak_flops > 0 else math.nan
