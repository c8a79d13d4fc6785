"""The native BERT: shapes, padding invariance, the masked-only MLM loss, tying, NSP head, presets."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from robablate.errors import ConfigError
from robablate.models.bert import BertConfig, BertForPretraining, _attn_mask, flops_per_token, num_params

CONF = Path(__file__).resolve().parents[1] / "conf"
V, PAD = 97, 0


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny ops, one thread


def small_config(**kw) -> BertConfig:
    base = dict(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, pad_token_id=PAD)
    return BertConfig(**{**base, **kw})


def make_model(nsp=True, seed=0, **kw) -> BertForPretraining:
    torch.manual_seed(seed)
    return BertForPretraining(small_config(**kw), nsp=nsp)


def batch(B=3, L=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, L), generator=g)
    lengths = torch.tensor([L, L - 4, 5][:B])
    am = (torch.arange(L)[None] < lengths[:, None]).long()
    ids[am == 0] = PAD
    tt = (torch.arange(L)[None] >= (lengths // 2)[:, None]).long() * am
    labels = torch.full((B, L), -100)
    sel = (torch.rand(B, L, generator=g) < 0.3) & (am == 1)
    sel[0, 1] = True
    labels[sel] = ids[sel]
    return ids, tt, am, labels


def test_output_shapes_and_keys():
    m = make_model().eval()
    ids, tt, am, labels = batch()
    hidden, pooled = m.encoder(ids, tt, am)
    assert hidden.shape == (3, 12, 32) and pooled.shape == (3, 32)
    assert m.mlm_logits(ids, tt, am).shape == (3, 12, V)  # output size == vocab size ([MASK] inside)
    out = m(ids, tt, am, labels, nsp_labels=torch.tensor([0, 1, -100]))
    assert set(out) == {"loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_count", "nsp_correct", "nsp_count"}
    assert out["mlm_count"].item() == (labels != -100).sum().item()
    assert out["nsp_count"].item() == 2


def test_padding_does_not_change_real_tokens():
    m = make_model().eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, V, (1, 7), generator=g)
    tt = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        h0, p0 = m.encoder(ids, tt)
        padded = torch.cat([ids, torch.full((1, 5), PAD)], 1)
        tt_pad = torch.cat([tt, torch.zeros(1, 5, dtype=torch.long)], 1)
        am = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], 1).long()
        h1, p1 = m.encoder(padded, tt_pad, am)
        # Without the mask the pads leak into attention: the test can tell the difference.
        h2, _ = m.encoder(padded, tt_pad, None)
    assert torch.allclose(h0, h1[:, :7], atol=1e-5) and torch.allclose(p0, p1, atol=1e-5)
    assert not torch.allclose(h0, h2[:, :7], atol=1e-3)


def test_no_padding_passes_no_mask():
    # SDPA gets attn_mask=None (fast kernels) when nothing is padded, a real mask otherwise.
    assert _attn_mask(torch.ones(2, 5, dtype=torch.long)) is None
    assert _attn_mask(None) is None
    mask = _attn_mask(torch.tensor([[1, 1, 0]]))
    assert mask.shape == (1, 1, 1, 3) and mask.tolist() == [[[[True, True, False]]]]


def test_mlm_loss_is_cross_entropy_on_selected_positions_only():
    m = make_model(nsp=False).eval()
    ids, tt, am, labels = batch()
    with torch.no_grad():
        out = m(ids, tt, am, labels)
        logits = m.mlm_logits(ids, tt, am)
    sel = labels != -100
    expected = F.cross_entropy(logits[sel], labels[sel])
    assert torch.allclose(out["mlm_loss"], expected, atol=1e-6)
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    assert out["mlm_correct"].item() == (logits[sel].argmax(-1) == labels[sel]).sum().item()
    # Scoring every token would give a different number: the test distinguishes the two.
    assert not torch.allclose(F.cross_entropy(logits.flatten(0, 1), ids.flatten()), expected, atol=1e-3)


def test_training_without_accuracy_gives_the_same_loss_and_gradients():
    # PretrainModule.training_step skips the MLM argmax (with_accuracy=False): nothing else may change.
    m = make_model(nsp=True).train()
    ids, tt, am, labels = batch()
    outs = []
    for with_accuracy in (True, False):
        m.zero_grad()
        torch.manual_seed(7)  # the same dropout masks
        out = m(ids, tt, am, labels, nsp_labels=torch.tensor([0, 1, -100]), with_accuracy=with_accuracy)
        out["loss"].backward()
        outs.append((out, [p.grad.clone() for p in m.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = outs
    assert torch.equal(a["loss"], b["loss"]) and all(torch.equal(x, y) for x, y in zip(ga, gb))
    assert a["mlm_correct"] is not None and b["mlm_correct"] is None
    assert torch.equal(a["nsp_correct"], b["nsp_correct"])


def test_zero_selected_tokens_gives_finite_zero_loss_and_backward_works():
    m = make_model(nsp=True).train()
    ids, tt, am, _ = batch()
    labels = torch.full_like(ids, -100)
    out = m(ids, tt, am, labels, nsp_labels=torch.full((3,), -100))
    assert out["mlm_loss"].item() == 0.0 and out["nsp_loss"].item() == 0.0
    assert torch.isfinite(out["loss"]) and out["mlm_count"].item() == 0
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_decoder_weight_is_tied_to_word_embeddings():
    m = make_model()
    emb = m.encoder.embeddings.word_embeddings.weight
    assert m.mlm_head.decoder.weight is emb and m.mlm_head.decoder.weight.data_ptr() == emb.data_ptr()
    assert sum(p is emb for p in m.parameters()) == 1  # counted once by optimizers
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    ids, tt, am, labels = batch()
    m(ids, tt, am, labels)["loss"].backward()
    opt.step()
    assert torch.equal(m.mlm_head.decoder.weight, m.encoder.embeddings.word_embeddings.weight)


def test_nsp_head_exists_iff_nsp_and_its_loss():
    assert make_model(nsp=False).nsp_head is None
    m = make_model(nsp=True).eval()
    assert m.nsp_head is not None and m.nsp_head.out_features == 2
    ids, tt, am, labels = batch()
    nsp_labels = torch.tensor([1, -100, 0])
    with torch.no_grad():
        out = m(ids, tt, am, labels, nsp_labels)
        logits = m.nsp_logits(ids, tt, am)
    expected = F.cross_entropy(logits, nsp_labels, ignore_index=-100)
    assert torch.allclose(out["nsp_loss"], expected, atol=1e-6)
    assert torch.allclose(out["loss"], out["mlm_loss"] + out["nsp_loss"])
    assert out["nsp_correct"].item() == ((logits.argmax(-1) == nsp_labels) & (nsp_labels != -100)).sum().item()
    assert make_model(nsp=False)(ids, tt, am, labels, nsp_labels)["nsp_loss"] is None


def test_init_follows_bert():
    m = make_model(hidden_size=256, num_heads=4, intermediate_size=1024, vocab_size=2000)
    w = m.encoder.layers[0].intermediate.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert (m.encoder.layers[0].intermediate.bias == 0).all() and (m.mlm_head.decoder.bias == 0).all()
    ln = m.encoder.layers[1].LayerNorm
    assert (ln.weight == 1).all() and (ln.bias == 0).all()
    assert (m.encoder.embeddings.word_embeddings.weight[PAD] == 0).all()  # as HF's _init_weights
    assert abs(m.encoder.embeddings.word_embeddings.weight[1:].std().item() - 0.02) < 0.001


def test_overfits_a_fixed_batch():
    m = make_model(nsp=True, dropout=0.0, attention_dropout=0.0).train()
    ids, tt, am, labels = batch()
    nsp_labels = torch.tensor([0, 1, 0])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = m(ids, tt, am, labels, nsp_labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.25 * losses[0], losses


@pytest.mark.parametrize("name,shape", [("tiny", (2, 128, 2, 512)), ("mini", (4, 256, 4, 1024)),
                                        ("small", (4, 512, 8, 2048)), ("base", (12, 768, 12, 3072))])
def test_presets_load_and_match_the_published_shapes(name, shape):
    cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
    c = BertConfig.from_cfg(cfg, vocab_size=30522, pad_token_id=0)
    assert cfg.name == name
    assert (c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size) == shape
    assert (c.max_position_embeddings, c.type_vocab_size, c.dropout, c.layer_norm_eps) == (512, 2, 0.1, 1e-12)


def test_parameter_count_matches_transformers_bert_base():
    # Same architecture => same number of parameters as HF's BertForPreTraining (110,106,428 for
    # bert-base-uncased's shape). Built on the meta device: no memory, no init cost.
    import transformers

    c = BertConfig.from_cfg(OmegaConf.load(CONF / "model" / "base.yaml"), vocab_size=30522, pad_token_id=0)
    with torch.device("meta"):
        ours = BertForPretraining(c, nsp=True)
        hf = transformers.BertForPreTraining(transformers.BertConfig(vocab_size=30522))
    assert num_params(ours, non_embedding=False) == sum(p.numel() for p in hf.parameters()) == 110_106_428
    emb = 30522 * 768 + 512 * 768 + 2 * 768
    assert num_params(ours) == 110_106_428 - emb


def test_flops_per_token_counts_encoder_weights_and_attention():
    c = small_config()
    m = BertForPretraining(c, nsp=False)
    layer_params = num_params(m.encoder.layers)
    T = 64
    assert flops_per_token(c, T, mlm_fraction=0.0) == 6 * layer_params + 12 * c.num_layers * c.hidden_size * T
    head_params = num_params(m.mlm_head, non_embedding=False)  # dense, LayerNorm, tied decoder + bias
    assert flops_per_token(c, T, mlm_fraction=1.0) - flops_per_token(c, T, 0.0) == pytest.approx(6 * head_params)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="model.num_heads"):
        BertConfig.from_cfg({"hidden_size": 130, "num_heads": 4}, vocab_size=100, pad_token_id=0)
    with pytest.raises(ConfigError, match="model.dropout"):
        BertConfig.from_cfg({"dropout": 1.5}, vocab_size=100, pad_token_id=0)
    with pytest.raises(ConfigError, match="model.num_layers"):
        BertConfig.from_cfg({"num_layers": 0}, vocab_size=100, pad_token_id=0)


def test_sequence_longer_than_positions_is_a_clear_error():
    m = make_model(max_position_embeddings=8)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        m.encoder(torch.ones(1, 9, dtype=torch.long))
