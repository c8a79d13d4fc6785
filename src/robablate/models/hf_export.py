"""Save / load the native BERT in Hugging Face `BertForPreTraining` format.

The export goes through transformers itself (build `transformers.BertForPreTraining`, load our weights
with strict=True, `save_pretrained`), so whatever file layout the installed transformers writes
(safetensors, tied-weight handling) is by construction one that `from_pretrained` reads back.
Loading also goes through `from_pretrained`, so any local HF BERT folder works (BertModel,
BertForMaskedLM or BertForPreTraining checkpoints, legacy gamma/beta names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from robablate.errors import DataError
from robablate.io import replace_dir
from robablate.models.bert import BertConfig, BertForPretraining

# Flag written into config.json: False when the model was pretrained without NSP, in which case the
# saved cls.seq_relationship is all zeros (an honest 50/50 head) because HF's class always has one.
NSP_FLAG = "robablate_nsp_head"


def _name_pairs(num_layers: int) -> list[tuple[str, str]]:
    """(native name, HF name) for every tensor except the fused QKV and the tied decoder."""
    pairs = [("encoder.embeddings." + n, "bert.embeddings." + n) for n in (
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
        "LayerNorm.weight", "LayerNorm.bias")]
    for i in range(num_layers):
        nat, hf = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        for a, b in (("attention.out", "attention.output.dense"),
                     ("attention.LayerNorm", "attention.output.LayerNorm"),
                     ("intermediate", "intermediate.dense"),
                     ("output", "output.dense"),
                     ("LayerNorm", "output.LayerNorm")):
            pairs += [(f"{nat}{a}.{p}", f"{hf}{b}.{p}") for p in ("weight", "bias")]
    for a, b in (("encoder.pooler", "bert.pooler.dense"),
                 ("mlm_head.dense", "cls.predictions.transform.dense"),
                 ("mlm_head.LayerNorm", "cls.predictions.transform.LayerNorm"),
                 ("nsp_head", "cls.seq_relationship")):
        pairs += [(f"{a}.{p}", f"{b}.{p}") for p in ("weight", "bias")]
    pairs.append(("mlm_head.decoder.bias", "cls.predictions.bias"))
    return pairs


def _unwrap(model: Any) -> BertForPretraining:
    return getattr(model, "_orig_mod", model)  # a torch.compile'd model wraps the real one


def to_hf_state_dict(model: BertForPretraining) -> dict[str, torch.Tensor]:
    """Native weights renamed (and QKV split) for transformers.BertForPreTraining; fp32 CPU copies."""
    model = _unwrap(model)
    # torch.compile on a submodule inserts "_orig_mod." into the names; strip it.
    sd = {k.replace("_orig_mod.", ""): v.detach().to("cpu", torch.float32).clone()
          for k, v in model.state_dict().items()}
    H = model.config.hidden_size
    out = {}
    for nat, hf in _name_pairs(model.config.num_layers):
        if nat.startswith("nsp_head.") and model.nsp_head is None:
            out[hf] = torch.zeros((2, H) if nat.endswith("weight") else (2,))
        else:
            out[hf] = sd[nat]
    for i in range(model.config.num_layers):
        for p in ("weight", "bias"):
            q, k, v = sd[f"encoder.layers.{i}.attention.qkv.{p}"].split(H, dim=0)
            for name, t in (("query", q), ("key", k), ("value", v)):
                out[f"bert.encoder.layer.{i}.attention.self.{name}.{p}"] = t.clone()
    # Tied in HF too; supplied so load_state_dict(strict=True) sees every key.
    out["cls.predictions.decoder.weight"] = out["bert.embeddings.word_embeddings.weight"]
    out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    return out


def from_hf_state_dict(hf_sd: dict[str, torch.Tensor], num_layers: int, nsp: bool) -> dict[str, torch.Tensor]:
    """Inverse of to_hf_state_dict: HF BertForPreTraining names -> native names (QKV fused)."""
    out = {}
    for nat, hf in _name_pairs(num_layers):
        if nat.startswith("nsp_head.") and not nsp:
            continue
        out[nat] = hf_sd[hf]
    for i in range(num_layers):
        pre = f"bert.encoder.layer.{i}.attention.self."
        for p in ("weight", "bias"):
            out[f"encoder.layers.{i}.attention.qkv.{p}"] = torch.cat(
                [hf_sd[f"{pre}{n}.{p}"] for n in ("query", "key", "value")], dim=0)
    out["mlm_head.decoder.weight"] = out["encoder.embeddings.word_embeddings.weight"]
    return out


def hf_config(model: BertForPretraining) -> Any:
    """The transformers.BertConfig describing `model`."""
    from transformers import BertConfig as HFBertConfig

    c = _unwrap(model).config
    return HFBertConfig(
        architectures=["BertForPreTraining"], vocab_size=c.vocab_size, hidden_size=c.hidden_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        intermediate_size=c.intermediate_size, hidden_act="gelu",  # exact erf GELU, as F.gelu
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id, initializer_range=0.02,
        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.attention_dropout,
        **{NSP_FLAG: _unwrap(model).nsp})


def save_hf(model: BertForPretraining, out_dir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Write `model` (+ tokenizer files) as a HF BertForPreTraining folder; atomic (temp dir + rename)."""
    from transformers import BertForPreTraining as HFBertForPreTraining

    hf = HFBertForPreTraining(hf_config(model))
    hf.load_state_dict(to_hf_state_dict(model), strict=True)

    def build(tmp: Path) -> None:
        hf.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return replace_dir(Path(out_dir), build)


def load_native_from_hf(path: str | os.PathLike) -> BertForPretraining:
    """Load a local HF BERT folder (ours or any BERT checkpoint) as a native BertForPretraining.

    Heads missing from the checkpoint (pooler, MLM head, NSP) keep transformers' fresh init; the NSP
    head is kept only if the checkpoint has a trained one.
    """
    from transformers import BertForPreTraining as HFBertForPreTraining

    path = Path(path)
    if not (path / "config.json").is_file():
        raise DataError(f"{path}: not a Hugging Face model folder (no config.json)")
    try:
        hf, info = HFBertForPreTraining.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: could not load as a BERT checkpoint: {e}") from e
    hc = hf.config
    if hc.hidden_act != "gelu" or getattr(hc, "position_embedding_type", "absolute") != "absolute":
        raise DataError(f"{path / 'config.json'}: robablate's BERT supports hidden_act 'gelu' and absolute "
                        f"positions, got hidden_act={hc.hidden_act!r}, "
                        f"position_embedding_type={getattr(hc, 'position_embedding_type', None)!r}")
    missing = set(info.get("missing_keys", ()))
    nsp = bool(getattr(hc, NSP_FLAG, True)) and "cls.seq_relationship.weight" not in missing
    config = BertConfig(
        vocab_size=hc.vocab_size, hidden_size=hc.hidden_size, num_layers=hc.num_hidden_layers,
        num_heads=hc.num_attention_heads, intermediate_size=hc.intermediate_size,
        max_position_embeddings=hc.max_position_embeddings, type_vocab_size=hc.type_vocab_size,
        dropout=float(hc.hidden_dropout_prob), attention_dropout=float(hc.attention_probs_dropout_prob),
        layer_norm_eps=float(hc.layer_norm_eps),
        pad_token_id=hc.pad_token_id if hc.pad_token_id is not None else 0)
    model = BertForPretraining(config, nsp=nsp)
    model.load_state_dict(from_hf_state_dict(hf.state_dict(), config.num_layers, nsp), strict=True)
    return model


def encoder_state_from_hf(path: str | os.PathLike) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """(config, BertEncoder state dict) of a local HF BERT folder: fine-tuning with glue.init=PATH."""
    model = load_native_from_hf(path)
    return model.config, model.encoder.state_dict()
