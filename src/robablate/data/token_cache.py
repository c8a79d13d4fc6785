"""Flat token arrays with sentence and document boundaries (nanoGPT-style memmaps), hash-keyed.

Layout of a cache folder `<cache_root>/<key>/`:
  tokens.bin        raw uint16 (int32 if the vocab has more than 65535 ids), no special tokens
  sent_offsets.npy  int64 [n_sentences + 1]
  doc_offsets.npy   int64 [n_docs + 1]
  meta.json         dtype, counts, vocab size, key (written last)
The folder is built in a temp dir and renamed into place under a file lock, so parallel sweep jobs
never read a half-written cache and only one of them tokenizes the corpus.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from robablate.io import atomic_dir, atomic_write_json

from robablate.errors import DataError


CACHE_VERSION = 1
CHUNK_SENTENCES = 8192  # sentences per encode_batch call: big enough for the Rust batch encoder's
#                         threads, small enough that memory stays flat in corpus size


@dataclass
class TokenCache:
    """A tokenized corpus: sentence i is tokens[sent_offsets[i]:sent_offsets[i+1]]; document j is
    sentences doc_offsets[j]:doc_offsets[j+1]. No special tokens are stored."""

    tokens: np.ndarray
    sent_offsets: np.ndarray
    doc_offsets: np.ndarray
    fingerprint: str = ""

    @property
    def n_sentences(self) -> int:
        return len(self.sent_offsets) - 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_offsets) - 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def _encoder(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """Batch encoder without special tokens, truncation or padding."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: correct, just slower
        return lambda batch: tokenizer(batch, add_special_tokens=False)["input_ids"]
    if backend.truncation is not None or backend.padding is not None:
        from tokenizers import Tokenizer
        backend = Tokenizer.from_str(backend.to_str())  # a copy: do not change the caller's tokenizer
        backend.no_truncation()
        backend.no_padding()
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # fast: no char offsets
    return lambda batch: [e.ids for e in encode(batch, add_special_tokens=False)]


def _chunks(documents: Iterable[list[str]]) -> Iterator[tuple[list[str], list[int]]]:
    """(sentences, sentences per document) of whole documents, about CHUNK_SENTENCES at a time."""
    sents: list[str] = []
    counts: list[int] = []
    for doc in documents:
        sents.extend(doc)
        counts.append(len(doc))
        if len(sents) >= CHUNK_SENTENCES:
            yield sents, counts
            sents, counts = [], []
    if counts:
        yield sents, counts


def _raw_to_npy(raw: Path, npy: Path) -> None:
    """Copy a raw int64 file into a .npy file chunk by chunk (memory stays flat)."""
    src = np.memmap(raw, dtype=np.int64, mode="r")
    dst = np.lib.format.open_memmap(npy, mode="w+", dtype=np.int64, shape=src.shape)
    step = 1 << 20
    for i in range(0, len(src), step):
        dst[i:i + step] = src[i:i + step]
    dst.flush()
    del src, dst
    raw.unlink()


def _build(documents: Iterable[list[str]], tokenizer, folder: Path, key: str) -> None:
    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)
    encode = _encoder(tokenizer)
    n_tok = n_sent = n_doc = 0
    with open(folder / "tokens.bin", "wb") as ft, open(folder / "sent.raw", "wb") as fs, \
            open(folder / "doc.raw", "wb") as fd:
        np.zeros(1, np.int64).tofile(fs)
        np.zeros(1, np.int64).tofile(fd)
        for sents, counts in _chunks(documents):
            ids = encode(sents)
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            keep = lengths > 0  # sentences empty after tokenization (e.g. only control chars) are dropped
            flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            if flat.size and (flat.min() < 0 or flat.max() >= vocab_size):
                raise DataError(f"token cache {folder}: the tokenizer produced ids outside [0, {vocab_size}).")
            flat.astype(dtype).tofile(ft)
            (n_tok + np.cumsum(lengths[keep])).tofile(fs)
            doc_of_sent = np.repeat(np.arange(len(counts)), counts)
            per_doc = np.bincount(doc_of_sent[keep], minlength=len(counts))
            per_doc = per_doc[per_doc > 0]  # documents with no tokens are dropped
            (n_sent + np.cumsum(per_doc)).tofile(fd)
            n_tok += int(lengths.sum())
            n_sent += int(keep.sum())
            n_doc += len(per_doc)
    if n_tok == 0:
        raise DataError("token cache: the corpus produced no tokens (no non-empty sentences after tokenization).")
    _raw_to_npy(folder / "sent.raw", folder / "sent_offsets.npy")
    _raw_to_npy(folder / "doc.raw", folder / "doc_offsets.npy")
    atomic_write_json(folder / "meta.json", {
        "version": CACHE_VERSION, "key": key, "dtype": dtype.name, "vocab_size": vocab_size,
        "n_tokens": n_tok, "n_sentences": n_sent, "n_docs": n_doc,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
    })


def load(folder: str | os.PathLike, vocab_size: int | None = None) -> TokenCache:
    """Open a built cache folder (tokens and offsets as read-only memmaps), checking it is consistent."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        tokens = np.memmap(folder / "tokens.bin", dtype=dtype, mode="r", shape=(meta["n_tokens"],))
        sent = np.load(folder / "sent_offsets.npy", mmap_mode="r")
        doc = np.load(folder / "doc_offsets.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"token cache {folder}: cannot be read ({e}); delete the folder to rebuild it.") from e
    ok = (meta.get("version") == CACHE_VERSION and len(sent) == meta["n_sentences"] + 1
          and len(doc) == meta["n_docs"] + 1 and sent[-1] == meta["n_tokens"] and doc[-1] == meta["n_sentences"]
          and (folder / "tokens.bin").stat().st_size == meta["n_tokens"] * dtype.itemsize)
    if not ok:
        raise DataError(f"token cache {folder}: files are inconsistent with meta.json; "
                        f"delete the folder to rebuild it.")
    if vocab_size is not None and meta["vocab_size"] != vocab_size:
        raise DataError(f"token cache {folder}: built with a vocabulary of {meta['vocab_size']} ids but the "
                        f"tokenizer has {vocab_size}; the cache key must include the tokenizer.")
    return TokenCache(tokens=tokens, sent_offsets=sent, doc_offsets=doc, fingerprint=meta["key"])


def build_or_load(documents_factory: Callable[[], Iterable[list[str]]], tokenizer,
                  cache_root: str | os.PathLike, key: str) -> TokenCache:
    """The token cache `<cache_root>/<key>/`, built (streaming) on first use and reused afterwards.
    `key` must identify both the documents and the tokenizer (see `cache_key`)."""
    folder = Path(cache_root) / key
    atomic_dir(folder, lambda tmp: _build(documents_factory(), tokenizer, tmp, key))
    return load(folder, vocab_size=len(tokenizer))
