"""Deterministic WordPiece training (data/wordpiece.py): the same vocabulary as tokenizers'
WordPieceTrainer, but the same one every time (huggingface/tokenizers#1794)."""

from __future__ import annotations

from collections import Counter

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from robablate.data import synthetic
from robablate.data.tokenizer import SPECIAL_TOKENS
from robablate.data.wordpiece import train_wordpiece_vocab, word_counts

SPECIALS = list(SPECIAL_TOKENS)
DOCS = list(synthetic.iter_synthetic(synthetic.params({"num_docs": 400, "num_val_docs": 5}), "train"))


def counts(docs=DOCS) -> Counter:
    return word_counts(docs, normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer())


def hf_vocab(docs, vocab_size: int) -> dict[str, int]:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(docs, trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIALS, show_progress=False))
    return tok.get_vocab()


def test_word_counts_of_batches_equal_sentence_by_sentence():
    n, p = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    one_by_one = Counter(w for d in DOCS[:50] for s in d for w, _ in p.pre_tokenize_str(n.normalize_str(s)))
    assert counts(DOCS[:50]) == one_by_one and one_by_one["the"] > 50


def test_training_is_deterministic_and_matches_the_wordpiece_trainer():
    c = counts()
    a, b = train_wordpiece_vocab(c, 2000, 2, SPECIALS), train_wordpiece_vocab(c, 2000, 2, SPECIALS)
    assert a == b  # token -> id, every time
    assert [t for t, i in sorted(a.items(), key=lambda kv: kv[1])][:5] == SPECIALS
    assert sorted(a.values()) == list(range(len(a))) and len(a) == 2000
    hf = set(hf_vocab(DOCS, 2000))
    # The same algorithm: equal sets up to the tokens the WordPieceTrainer's ties pick at random
    # (measured: identical sets on this corpus and on WikiText-2 at 8192).
    assert len(set(a) & hf) / len(set(a) | hf) > 0.99


def test_tokens_map_back_to_wordpiece_form_and_cover_every_character():
    docs = [["zebra quiz", "a bqx"]] * 3  # q and x occur only inside words
    vocab = train_wordpiece_vocab(counts(docs), 60, 2, SPECIALS)
    assert all(t in SPECIALS or t.isprintable() for t in vocab)  # no private-use symbol left
    assert {"q", "x", "##q", "##x", "z", "##e"} <= set(vocab)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert "[UNK]" not in tok.encode("xq qx zebra").tokens


def test_private_use_characters_in_the_corpus_are_not_confused():
    # (BERT's normalizer drops private-use characters; another normalizer may keep them.)
    vocab = train_wordpiece_vocab(Counter({"a\U000f0000b": 3, "ab": 3, "ba": 2}), 40, 2, SPECIALS)
    assert "##\U000f0000" in vocab and "##b" in vocab and "a" in vocab
