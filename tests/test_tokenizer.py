"""Tokenizer training, caching, loading, special ids and the word-start table."""

from __future__ import annotations

import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from robablate.data import synthetic
from robablate.data.tokenizer import (SPECIAL_TOKENS, SpecialIds, get_tokenizer, load_tokenizer, special_ids,
                                      word_start_table)
from robablate.errors import ConfigError

PARAMS = synthetic.params({"num_docs": 150, "num_val_docs": 5})
EXTRA = [["Hello World. Tokenizers split unaffable words into pieces!", "Zyzzogeton quibbles, 42 times."]] * 3


class CountingFactory:
    """documents_factory that counts how often the corpus is read (i.e. how often training ran)."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        yield from EXTRA
        yield from synthetic.iter_synthetic(PARAMS, "train")


def cfg(kind="wordpiece", vocab_size=2000, **kw):
    return OmegaConf.create({"kind": kind, "vocab_size": vocab_size, "lowercase": kind == "wordpiece",
                             "min_frequency": 2, "path": None, "train_docs": None, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for kind in ("wordpiece", "bpe"):
        factory = CountingFactory()
        out[kind] = (get_tokenizer(cfg(kind), factory, cache, "fp-1"), factory, cache)
    return out


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_special_tokens_get_ids_0_to_4(trained, kind):
    tok = trained[kind][0]
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = special_ids(tok)
    assert ids == SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=len(tok))
    assert 1000 < ids.vocab_size <= 2000
    enc = tok("first sentence", "second one")
    assert enc["input_ids"][0] == ids.cls and enc["input_ids"].count(ids.sep) == 2
    assert set(enc["token_type_ids"]) == {0, 1}


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_round_trip(trained, kind):
    tok = trained[kind][0]
    for doc in list(synthetic.iter_synthetic(PARAMS, "val")):
        for s in doc:
            ids = tok(s, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids).strip() == s
    text = "Hello World. Tokenizers split unaffable words into pieces!"
    back = tok.decode(tok(text, add_special_tokens=False)["input_ids"]).strip()
    assert back == (text.lower() if kind == "wordpiece" else text)  # BPE is cased and byte-exact


def test_cached_second_call_does_not_retrain(trained):
    tok, factory, cache = trained["wordpiece"]
    assert factory.calls == 1
    t = time.perf_counter()
    again = get_tokenizer(cfg("wordpiece"), factory, cache, "fp-1")
    elapsed = time.perf_counter() - t
    assert factory.calls == 1 and again.name_or_path == tok.name_or_path and elapsed < 1.0, elapsed
    assert again.get_vocab() == tok.get_vocab()
    # Another corpus fingerprint or vocab size is another tokenizer folder.
    other = get_tokenizer(cfg("wordpiece", vocab_size=1500), factory, cache, "fp-1")
    assert factory.calls == 2 and other.name_or_path != tok.name_or_path
    assert len(list((cache / "tokenizers").glob(".*tmp-*"))) == 0


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_saved_folder_loads_with_auto_tokenizer(trained, kind):
    from transformers import AutoTokenizer
    tok = trained[kind][0]
    loaded = AutoTokenizer.from_pretrained(tok.name_or_path)
    text = "first, kavo went to the market near the river. Zyzzogeton!"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.mask_token == "[MASK]" and loaded.pad_token_id == 0
    # tokenizer=pretrained loads the same folder (no training, corpus never read).
    pre = get_tokenizer(OmegaConf.create({"kind": "pretrained", "path": tok.name_or_path}),
                        lambda: pytest.fail("read the corpus"), "unused", "fp")
    assert pre(text)["input_ids"] == tok(text)["input_ids"]


def test_bad_configs_raise_config_errors(tmp_path):
    never = lambda: pytest.fail("read the corpus")  # noqa: E731
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        get_tokenizer(cfg("wordpiece", vocab_size=20), never, tmp_path, "fp")
    with pytest.raises(ConfigError, match="tokenizer.vocab_size"):
        get_tokenizer(cfg("bpe", vocab_size=200), never, tmp_path, "fp")  # < 5 specials + 256 bytes
    with pytest.raises(ConfigError, match="tokenizer.kind"):
        get_tokenizer(cfg("unigram"), never, tmp_path, "fp")
    with pytest.raises(ConfigError, match="tokenizer.path"):
        get_tokenizer(OmegaConf.create({"kind": "pretrained", "path": "???"}), never, tmp_path, "fp")
    with pytest.raises(ConfigError, match="tokenizer.path"):
        load_tokenizer(tmp_path / "nope")


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_word_start_table_matches_word_boundaries(trained, kind):
    tok = trained[kind][0]
    table = word_start_table(tok)
    assert table.dtype == bool and len(table) == special_ids(tok).vocab_size
    assert table[special_ids(tok).all()].all()
    # Space-separated words without punctuation: a word's first piece is a word start, the rest are not
    # (byte-level BPE attaches punctuation to no space, so it is not a word start there).
    text = "zyzzogeton quibbles unaffable first market kavo tokenizers"
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    assert len(enc.ids) > len(text.split())  # some words really are split into pieces
    expected = [w is not None and (i == 0 or enc.word_ids[i - 1] != w) for i, w in enumerate(enc.word_ids)]
    assert table[np.array(enc.ids)].tolist() == expected
    assert table[np.array(enc.ids)].sum() == len(text.split())


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_in_a_fresh_cache_reproduces_the_vocabulary(trained, kind, tmp_path):
    """Same corpus and config, a fresh cache: the same tokens with the same ids, so an arm re-run
    elsewhere gets the same numbers (tokenizers' own WordPieceTrainer does not: data/wordpiece.py)."""
    again = get_tokenizer(cfg(kind), CountingFactory(), tmp_path, "fp-1")
    assert again.get_vocab() == trained[kind][0].get_vocab()


def test_fingerprint_follows_token_ids_not_only_the_config(trained):
    """Token caches (datamodule.py) and GLUE encodings are keyed by tokenizer_fingerprint: the same
    tokens with two ids swapped (what a retrained tokenizer can give) must not share a cache."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from robablate.data.tokenizer import tokenizer_fingerprint

    tok = trained["wordpiece"][0]
    spec = json.loads(tok.backend_tokenizer.to_str())
    same = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    vocab = spec["model"]["vocab"]
    a, b = list(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    swapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    assert tokenizer_fingerprint(same) == tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(swapped) != tokenizer_fingerprint(tok)
