"""Tokenizer: train one with `tokenizers` (cached by corpus hash) or load a local HF tokenizer folder.

kinds: `wordpiece` (BERT: BertNormalizer + BertPreTokenizer + WordPiece with "##" continuations),
`bpe` (RoBERTa §4.4: byte-level BPE as in GPT-2, so there is no unknown token), `pretrained` (a local
Hugging Face tokenizer folder, `tokenizer.path`). Trained tokenizers are saved in Hugging Face format
under <cache_dir>/tokenizers/<hash of config + corpus fingerprint>/, so every arm of a sweep shares one
and `AutoTokenizer.from_pretrained(folder)` loads it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robablate.io import atomic_dir, cache_key
from robablate.errors import ConfigError, DataError, int_at_least, positive_int_or_none
from robablate.settings import Spec, setting

# Every tokenizer robablate trains puts these first, so their ids are 0..4. Code reads ids from
# SpecialIds, never from this order, so a loaded tokenizer with other ids works too.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens and the vocabulary size (the MLM output layer's size)."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int
    vocab_size: int

    def all(self) -> np.ndarray:
        """Sorted ids of every special token: never selected for masking, never drawn as replacements."""
        return np.unique(np.array([self.pad, self.unk, self.cls, self.sep, self.mask], dtype=np.int64))

    def non_special(self) -> np.ndarray:
        """Sorted ids a random replacement may draw: real vocabulary, no specials (BERT and HF can
        draw specials here; we do not, so a replacement is always a plausible token)."""
        keep = np.ones(self.vocab_size, dtype=bool)
        keep[self.all()] = False
        return np.flatnonzero(keep).astype(np.int64)


TOKENIZER_KINDS = ("wordpiece", "bpe", "pretrained")
TOKENIZER_VERSION = 2  # bump when training changes, so cached tokenizers are not reused (2: deterministic WordPiece)
MIN_VOCAB = len(SPECIAL_TOKENS) + 32  # the special tokens plus a minimal alphabet
BYTE_ALPHABET = 256  # byte-level BPE starts from all 256 bytes (RoBERTa §4.4)


def _cfg(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return setting(cfg, key, default, section="tokenizer")


def special_ids(tokenizer) -> SpecialIds:
    """Special-token ids of any HF tokenizer; vocab_size covers every id it can produce."""
    ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "unk", "cls", "sep", "mask")}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise DataError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: has no {', '.join(missing)} "
                        f"token; MLM pretraining needs pad, unk, cls, sep and mask tokens.")
    return SpecialIds(**ids, vocab_size=max(len(tokenizer), max(ids.values()) + 1))


def word_start_table(tokenizer) -> np.ndarray:
    """bool[vocab]: True where a token starts a word (for whole-word masking). WordPiece: tokens not
    starting with the continuation prefix "##"; byte-level BPE: tokens starting with "Ġ" (a space);
    SentencePiece: tokens starting with "▁". Special tokens are True. A tokenizer with none of these
    markers gets all True (whole-word masking then equals token masking)."""
    ids = special_ids(tokenizer)
    table = np.zeros(ids.vocab_size, dtype=bool)
    vocab = tokenizer.get_vocab()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    prefix = getattr(getattr(backend, "model", None), "continuing_subword_prefix", None)
    if prefix:  # WordPiece
        for tok, i in vocab.items():
            table[i] = not tok.startswith(prefix)
    else:
        marker = next((m for m in ("Ġ", "▁") if any(t.startswith(m) for t in vocab)), None)
        for tok, i in vocab.items():
            table[i] = marker is None or tok.startswith(marker)
    table[ids.all()] = True
    table[[i for i in getattr(tokenizer, "all_special_ids", []) if i < len(table)]] = True
    return table


def load_tokenizer(path: str | os.PathLike, key: str = "tokenizer.path"):
    """A local Hugging Face tokenizer folder (no network)."""
    from transformers import AutoTokenizer
    folder = Path(os.path.expanduser(str(path)))
    if not folder.is_dir():
        raise ConfigError(f"{key}: {folder} is not a folder (expected a local Hugging Face tokenizer folder).")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: cannot load a tokenizer from this folder ({e}).") from e


def _sentence_batches(documents: Iterable[list[str]], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in documents:
        batch.extend(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(kind: str, sentences: Iterable[list[str]] | Iterable[str], vocab_size: int,
                    lowercase: bool = True, min_frequency: int = 2):
    """Train a WordPiece or byte-level BPE tokenizer with SPECIAL_TOKENS as ids 0..4 and wrap it as a
    transformers fast tokenizer. `sentences` is streamed (strings or batches of strings)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast, PreTrainedTokenizerFast

    pad, unk, cls, sep, mask = SPECIAL_TOKENS
    if kind == "wordpiece":
        # WordPieceTrainer's algorithm, made deterministic (data/wordpiece.py: tokenizers#1794).
        from robablate.data.wordpiece import train_wordpiece_vocab, word_counts

        normalizer, pre = normalizers.BertNormalizer(lowercase=lowercase), pre_tokenizers.BertPreTokenizer()
        vocab = train_wordpiece_vocab(word_counts(sentences, normalizer, pre), vocab_size, min_frequency,
                                      list(SPECIAL_TOKENS))
        tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, continuing_subword_prefix="##"))
        tok.normalizer, tok.pre_tokenizer = normalizer, pre
        tok.decoder = decoders.WordPiece(prefix="##")
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        # add_prefix_space: every sentence's first word gets "Ġ" too, so a word is the same tokens
        # wherever it sits and word_start_table marks it as a word start.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIAL_TOKENS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(sentences, trainer=trainer)  # BpeTrainer is deterministic
    else:
        raise ConfigError(f"tokenizer.kind: expected one of {list(TOKENIZER_KINDS)}, got {kind!r}.")
    if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != list(range(len(SPECIAL_TOKENS))):
        raise AssertionError("special tokens must get ids 0..4")  # a tokenizers behaviour change
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise DataError("tokenizer training saw no text (the corpus yielded no sentences).")
    # [CLS] A [SEP] (B [SEP]) with token types 0/1, as BERT; used when fine-tuning encodes GLUE pairs.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    specials = dict(pad_token=pad, unk_token=unk, cls_token=cls, sep_token=sep, mask_token=mask)
    if kind == "wordpiece":
        return BertTokenizerFast(tokenizer_object=tok, do_lower_case=lowercase, **specials)
    # token_type_ids too (RoBERTa drops them; our BERT encoder has segment embeddings for pairs).
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "token_type_ids",
                                                                            "attention_mask"], **specials)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer's full definition (vocab with ids, normaliser, pre-tokeniser, specials):
    what a token cache or a GLUE encoding depends on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class TokenizerSpec(Spec):
    """The `tokenizer` group, checked once by `from_config` (config.validate calls it before any
    compute): a folder to load (`path`, or kind `pretrained`) or the settings of a tokenizer to train."""

    kind: str                       # wordpiece | bpe | pretrained
    path: str | None = None         # a local Hugging Face tokenizer folder to load instead of training
    vocab_size: int | None = None
    lowercase: bool = True
    min_frequency: int = 2
    train_docs: int | None = None   # cap on documents used to train it

    @classmethod
    def from_config(cls, cfg_tokenizer: Mapping[str, Any]) -> "TokenizerSpec":
        """Every `tokenizer` rule: kinds, the minimum vocabulary (5 specials + an alphabet, or + the
        256 bytes of byte-level BPE), min_frequency, train_docs; a folder to load needs `path`."""
        kind, path = _cfg(cfg_tokenizer, "kind", "wordpiece"), _cfg(cfg_tokenizer, "path")
        if kind == "pretrained" or path is not None:
            if path is None:
                raise ConfigError("tokenizer.path: required with tokenizer=pretrained "
                                  "(a local Hugging Face tokenizer folder).")
            return cls(kind="pretrained", path=str(path))
        if kind not in TOKENIZER_KINDS:
            raise ConfigError(f"tokenizer.kind: expected one of {list(TOKENIZER_KINDS)}, got {kind!r}.")
        vs = _cfg(cfg_tokenizer, "vocab_size")
        need = len(SPECIAL_TOKENS) + BYTE_ALPHABET if kind == "bpe" else MIN_VOCAB
        why = "the 5 special tokens plus the 256 bytes" if kind == "bpe" else "5 special tokens + a minimal alphabet"
        int_at_least(vs, "tokenizer.vocab_size", need, why=why)
        mf = int_at_least(_cfg(cfg_tokenizer, "min_frequency", 2), "tokenizer.min_frequency")
        td = positive_int_or_none(_cfg(cfg_tokenizer, "train_docs"), "tokenizer.train_docs")
        return cls(kind=kind, vocab_size=vs, lowercase=bool(_cfg(cfg_tokenizer, "lowercase", True)),
                   min_frequency=mf, train_docs=td)

    def cache_key(self, corpus_fingerprint: str) -> str:
        """The trained tokenizer's folder name: these settings, the corpus and the library version."""
        import tokenizers

        opts = {"kind": self.kind, "vocab_size": self.vocab_size, "lowercase": self.lowercase,
                "min_frequency": self.min_frequency, "train_docs": self.train_docs}
        return cache_key("tokenizer", TOKENIZER_VERSION, tokenizers.__version__, opts, corpus_fingerprint)


def get_tokenizer(tokenizer: "TokenizerSpec | Mapping[str, Any]", documents_factory: Callable[[], Iterable[list[str]]],
                  cache_dir: str | os.PathLike, corpus_fingerprint: str):
    """The run's tokenizer (a transformers PreTrainedTokenizerFast): the folder `path` names, or one
    trained on the corpus once and reused from the cache. `tokenizer` is a TokenizerSpec (a mapping
    is checked into one)."""
    spec = TokenizerSpec.of(tokenizer)
    if spec.path is not None:
        return load_tokenizer(spec.path)
    folder = Path(cache_dir) / "tokenizers" / spec.cache_key(corpus_fingerprint)

    def build(tmp: Path) -> None:
        docs = documents_factory()
        if spec.train_docs is not None:
            docs = itertools.islice(docs, spec.train_docs)
        train_tokenizer(spec.kind, _sentence_batches(docs), spec.vocab_size, spec.lowercase,
                        spec.min_frequency).save_pretrained(str(tmp))

    atomic_dir(folder, build)
    return load_tokenizer(folder)
