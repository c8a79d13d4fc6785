"""Hugging Face export: transformers reads our folder and computes the same logits as the native model.

Tolerance 1e-4 (fp32): the math is identical, but HF runs separate Q/K/V matmuls and its own
attention kernel, so float summation order differs (observed differences are ~1e-7).
"""

import json

import pytest
import torch
import transformers

from robablate.errors import DataError
from robablate.models.bert import BertConfig, BertForPretraining
from robablate.models.hf_export import encoder_state_from_hf, load_native_from_hf, save_hf

V, PAD = 120, 0
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny ops, one thread


def perturbed_model(nsp: bool) -> BertForPretraining:
    """A model whose every tensor (biases, LayerNorms too) is non-trivial, so a swapped or
    missing tensor in the name mapping changes the logits."""
    torch.manual_seed(0)
    m = BertForPretraining(BertConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=4,
                                      intermediate_size=64, pad_token_id=PAD), nsp=nsp)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (3, 16), generator=g)
    am = (torch.arange(16)[None] < torch.tensor([[16], [11], [6]])).long()
    ids[am == 0] = PAD
    tt = ((torch.arange(16)[None] >= torch.tensor([[8], [5], [3]])) & (am == 1)).long()
    return ids, tt, am


@pytest.mark.parametrize("nsp", [True, False])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_transformers_mlm_logits_match_native(tmp_path, nsp, attn):
    m = perturbed_model(nsp)
    save_hf(m, tmp_path / "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", attn_implementation=attn).eval()
    ids, tt, am = padded_batch()
    with torch.no_grad():
        ours = m.mlm_logits(ids, tt, am)
        theirs = hf(input_ids=ids, token_type_ids=tt, attention_mask=am).logits
    real = am.bool()  # HF and we both compute pad positions too, but only real tokens matter
    assert (ours[real] - theirs[real]).abs().max().item() <= TOL
    assert (ours - theirs).abs().max().item() <= TOL


def test_transformers_pretraining_model_matches_mlm_and_nsp(tmp_path):
    m = perturbed_model(nsp=True)
    save_hf(m, tmp_path / "hf")
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    ids, tt, am = padded_batch()
    with torch.no_grad():
        out = hf(input_ids=ids, token_type_ids=tt, attention_mask=am)
        assert (out.prediction_logits - m.mlm_logits(ids, tt, am)).abs().max().item() <= TOL
        assert (out.seq_relationship_logits - m.nsp_logits(ids, tt, am)).abs().max().item() <= TOL
    # HF ties the decoder too: the exported matrix is the embedding table, not a copy that could drift.
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()


def test_config_json_describes_the_model(tmp_path):
    m = perturbed_model(nsp=False)
    save_hf(m, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["architectures"] == ["BertForPreTraining"] and cfg["hidden_act"] == "gelu"
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["pad_token_id"]) == (V, 32, 2, 4, 64, PAD)
    assert cfg["robablate_nsp_head"] is False
    assert (tmp_path / "hf" / "model.safetensors").is_file()


@pytest.mark.parametrize("nsp", [True, False])
def test_round_trip_gives_identical_logits(tmp_path, nsp):
    m = perturbed_model(nsp)
    save_hf(m, tmp_path / "hf")
    back = load_native_from_hf(tmp_path / "hf").eval()
    assert back.nsp == nsp and back.config == m.config
    ids, tt, am = padded_batch()
    with torch.no_grad():
        assert torch.equal(back.mlm_logits(ids, tt, am), m.mlm_logits(ids, tt, am))
        if nsp:
            assert torch.equal(back.nsp_logits(ids, tt, am), m.nsp_logits(ids, tt, am))
    assert back.mlm_head.decoder.weight is back.encoder.embeddings.word_embeddings.weight
    for (k, a), b in zip(m.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k


def test_overwrite_is_atomic_and_leaves_no_temp_dirs(tmp_path):
    save_hf(perturbed_model(nsp=True), tmp_path / "hf")
    m2 = perturbed_model(nsp=False)
    save_hf(m2, tmp_path / "hf")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    assert load_native_from_hf(tmp_path / "hf").nsp is False


def test_tokenizer_files_are_saved(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    save_hf(perturbed_model(nsp=True), tmp_path / "hf", tokenizer=fast)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert loaded("hello world", add_special_tokens=False)["input_ids"] == [5, 6]
    assert loaded.mask_token_id == 4


def test_loads_a_plain_bert_model_checkpoint(tmp_path):
    # Any HF BERT folder (here a BertModel without heads) can initialise fine-tuning (glue.init=PATH).
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=64)).eval()
    hf.save_pretrained(tmp_path / "plain")
    config, state = encoder_state_from_hf(tmp_path / "plain")
    assert config.num_layers == 2 and config.hidden_size == 32
    native = load_native_from_hf(tmp_path / "plain").eval()
    assert native.nsp is False  # the checkpoint has no trained NSP head
    native.encoder.load_state_dict(state)
    ids, tt, am = padded_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, token_type_ids=tt, attention_mask=am)
        hidden, pooled = native.encoder(ids, tt, am)
    assert (ref.last_hidden_state - hidden).abs().max().item() <= TOL
    assert (ref.pooler_output - pooled).abs().max().item() <= TOL


def test_bad_folders_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="config.json"):
        load_native_from_hf(tmp_path)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, hidden_act="relu")
    transformers.BertForPreTraining(cfg).save_pretrained(tmp_path / "relu")
    with pytest.raises(DataError, match="hidden_act"):
        load_native_from_hf(tmp_path / "relu")
