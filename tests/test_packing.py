"""Packed batches (data/packing.py): same loss and gradients as the padded batch, no attention across
instances, every real token placed exactly once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robablate.data.formats import build_instances
from robablate.data.packing import first_fit_decreasing, pack_batch, pack_layout, padding_fraction
from robablate.data.pretrain_data import make_batch
from robablate.data.token_cache import TokenCache
from robablate.data.tokenizer import SpecialIds
from robablate.models.bert import BertConfig, BertForPretraining

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 300
IDS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=VOCAB)
MASKING = OmegaConf.create({"mask_prob": 0.15, "mask_token_frac": 0.8, "random_token_frac": 0.1})


def corpus(seed: int = 0) -> TokenCache:
    """Random documents of random sentences (3-25 tokens), token ids in 5..VOCAB-1."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(3, 26, rng.integers(2, 12)).tolist() for _ in range(60)]
    lens = [n for d in docs for n in d]
    sent_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    doc_offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    tokens = rng.integers(5, VOCAB, int(sent_offsets[-1])).astype(np.int32)
    return TokenCache(tokens, sent_offsets, doc_offsets, "test")


def batch_for(fmt: str, n: int = 24, max_len: int = 64, short_seq_prob: float = 0.3) -> dict[str, torch.Tensor]:
    inst = build_instances(corpus(), fmt, max_len, short_seq_prob, 0, IDS)
    # A variable number of instances of variable length, as token batching gives.
    idx = np.random.default_rng(1).choice(len(inst.lengths), size=n, replace=False).astype(np.int64)
    return make_batch(inst, idx, 0, 0, MASKING, IDS, None)


def model(nsp: bool, dropout: float = 0.0) -> BertForPretraining:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                     max_position_embeddings=64, dropout=dropout, attention_dropout=dropout)
    return BertForPretraining(cfg, nsp=nsp)


def grads(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fmt,nsp", [("segment_pair", True), ("sentence_pair", True), ("full_sentences", False)])
@pytest.mark.parametrize("train", [False, True])
def test_packed_loss_and_grads_equal_padded(fmt, nsp, train):
    padded = batch_for(fmt)
    packed = pack_batch(padded)
    assert packed["pack_index"].shape[0] < padded["input_ids"].shape[0] or fmt == "full_sentences"
    m = model(nsp)
    m.train(train)  # dropout 0: train mode takes the written-out CPU attention path, eval mode SDPA
    outs = []
    for b in (padded, packed):
        m.zero_grad()
        out = m(**b)
        out["loss"].backward()
        outs.append((out, grads(m)))
    (a, ga), (b, gb) = outs
    for key in ("loss", "mlm_loss", "nsp_loss") if nsp else ("loss", "mlm_loss"):
        assert abs(float(a[key].detach()) - float(b[key].detach())) < 1e-5, key
    for key in ("mlm_count", "mlm_correct", "nsp_count", "nsp_correct"):
        assert int(a[key]) == int(b[key]), key
    if nsp:
        assert int(a["nsp_count"]) == len(padded["nsp_labels"]) > 0
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=1e-5, rtol=1e-4, msg=k)


def test_attention_never_crosses_instances():
    packed = pack_batch(batch_for("sentence_pair", n=30, max_len=64))
    seg, pack = packed["segment_ids"], packed["pack_index"]
    # An instance that shares its row with another one (so the test can fail).
    row = int(torch.nonzero(seg.max(1).values >= 2)[0, 0])
    victim = pack[row][seg[row] == 2]  # flat tokens of the row's second instance
    others = torch.ones(len(packed["input_ids"]), dtype=torch.bool)
    others[victim] = False
    m = model(nsp=True).eval()
    layout = {k: packed[k] for k in ("pack_index", "unpack_index", "segment_ids", "cls_index")}
    from robablate.models.packed import PackedLayout
    with torch.no_grad():
        h0, p0 = m.encoder(packed["input_ids"], packed["token_type_ids"], None, packed["position_ids"],
                           PackedLayout(**layout))
        changed = packed["input_ids"].clone()
        changed[victim[1:]] = torch.randint(5, VOCAB, (len(victim) - 1,))  # keep its [CLS]
        h1, p1 = m.encoder(changed, packed["token_type_ids"], None, packed["position_ids"], PackedLayout(**layout))
    assert not torch.allclose(h0[victim], h1[victim])
    assert torch.equal(h0[others], h1[others])
    cls_victim = (packed["cls_index"] == victim[0]).nonzero()[0, 0]
    keep = torch.ones(len(p0), dtype=torch.bool)
    keep[cls_victim] = False
    assert torch.equal(p0[keep], p1[keep])


def test_pack_layout_places_each_token_once():
    rng = np.random.default_rng(0)
    for _ in range(50):
        width = int(rng.integers(5, 40))
        lengths = rng.integers(1, width + 1, int(rng.integers(1, 30)))
        lay = pack_layout(lengths, width)
        total = int(lengths.sum())
        unpack = lay["unpack_index"]
        assert sorted(unpack.tolist()) == sorted(set(unpack.tolist())) and len(unpack) == total
        assert np.array_equal(lay["pack_index"].reshape(-1)[unpack], np.arange(total))
        assert (lay["segment_ids"] > 0).sum() == total
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        assert np.array_equal(lay["cls_index"], starts)
        for i, (s, n) in enumerate(zip(starts, lengths)):
            slots = unpack[s:s + n]
            assert np.array_equal(np.diff(slots), np.ones(n - 1))          # contiguous in one row
            assert slots[0] // width == slots[-1] // width
            assert np.array_equal(lay["position_ids"][s:s + n], np.arange(n))  # positions restart
            seg = lay["segment_ids"].reshape(-1)[slots]
            assert len(set(seg.tolist())) == 1
        # Two instances in one row never share a segment id.
        row_of = unpack[starts] // width
        seg_of = lay["segment_ids"].reshape(-1)[unpack[starts]]
        assert len(set(zip(row_of.tolist(), seg_of.tolist()))) == len(lengths)
        # First-fit decreasing: no two rows could be merged.
        used = np.bincount(row_of, weights=lengths)
        assert len(used) == 1 or np.sort(used)[0] + np.sort(used)[1] > width


def test_first_fit_decreasing_rejects_long_items():
    with pytest.raises(ValueError, match="in \\[1, 4\\]"):
        first_fit_decreasing(np.array([3, 5]), 4)


def test_padding_fraction():
    padded = batch_for("sentence_pair")
    assert 0.2 < padding_fraction(padded) < 1.0
    assert padding_fraction(pack_batch(padded)) == 0.0


def test_packed_training_with_dropout_runs():
    """Dropout > 0 (the written-out CPU attention with dropout): finite loss and gradients."""
    m = model(nsp=True, dropout=0.1).train()
    out = m(**pack_batch(batch_for("segment_pair")))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_packed_under_bf16_autocast():
    """bf16 autocast (train.precision=bf16-mixed; the CUDA path uses the same ops): the packed loss
    matches the padded one to bf16 precision."""
    padded = batch_for("segment_pair")
    m = model(nsp=True).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        a, b = m(**padded)["loss"].float(), m(**pack_batch(padded))["loss"].float()
    assert torch.isfinite(b) and abs(float(a) - float(b)) < 2e-2
