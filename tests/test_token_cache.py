"""Token cache: offsets match per-sentence tokenization, dtype, reuse, atomic and concurrent builds."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

from robablate.io import cache_key
from robablate.data import synthetic, token_cache
from robablate.data.tokenizer import get_tokenizer
from robablate.errors import DataError

PARAMS = synthetic.params({"num_docs": 120, "num_val_docs": 5})
# Sentences of only control characters tokenize to nothing (BertNormalizer's clean_text drops them):
# such sentences are dropped, and a document made only of them is dropped too.
EMPTY = "\x00\x01"
DOCS = [["A first sentence.", EMPTY, "And a second one!"], [EMPTY, EMPTY], ["Lonely sentence here."]]


def documents():
    yield from DOCS
    yield from synthetic.iter_synthetic(PARAMS, "train")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    cfg = {"kind": "wordpiece", "vocab_size": 1500, "lowercase": True, "min_frequency": 2, "path": None,
           "train_docs": None}
    return get_tokenizer(cfg, documents, tmp_path_factory.mktemp("tok"), "token-cache-test")


def test_offsets_match_per_sentence_tokenization(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(token_cache, "CHUNK_SENTENCES", 100)  # several chunks, documents across them
    cache = token_cache.build_or_load(documents, tok, tmp_path, "k1")
    assert cache.tokens.dtype == np.uint16 and cache.fingerprint == "k1"
    expected_docs = []
    for doc in documents():
        ids = [tok(s, add_special_tokens=False)["input_ids"] for s in doc]
        ids = [x for x in ids if x]
        if ids:
            expected_docs.append(ids)
    so, do = np.asarray(cache.sent_offsets), np.asarray(cache.doc_offsets)
    assert so[0] == 0 and do[0] == 0 and np.all(np.diff(so) > 0) and np.all(np.diff(do) > 0)
    assert cache.n_docs == len(expected_docs) == len(DOCS) - 1 + PARAMS["num_docs"]
    assert cache.n_sentences == sum(map(len, expected_docs)) and so[-1] == len(cache.tokens)
    for j, doc in enumerate(expected_docs):
        got = [cache.tokens[so[i]:so[i + 1]].tolist() for i in range(do[j], do[j + 1])]
        assert got == doc
    assert tok.cls_token_id not in set(np.unique(cache.tokens).tolist())  # no specials stored


def test_token_dtype():
    assert token_cache.token_dtype(8192) == np.uint16 and token_cache.token_dtype(65535) == np.uint16
    assert token_cache.token_dtype(65536) == np.int32 and token_cache.token_dtype(250_000) == np.int32


def test_second_call_reuses_the_cache(tok, tmp_path):
    calls = []

    def factory():
        calls.append(1)
        return documents()

    first = token_cache.build_or_load(factory, tok, tmp_path, "k2")
    meta = tmp_path / "k2" / "meta.json"
    stamp = (meta.stat().st_ino, meta.stat().st_mtime_ns)
    t = time.perf_counter()
    second = token_cache.build_or_load(factory, tok, tmp_path, "k2")
    assert time.perf_counter() - t < 1.0
    assert len(calls) == 1 and (meta.stat().st_ino, meta.stat().st_mtime_ns) == stamp
    assert np.array_equal(first.tokens, second.tokens) and np.array_equal(first.doc_offsets, second.doc_offsets)
    assert isinstance(second.tokens, np.memmap)


def test_failed_build_leaves_nothing_and_empty_corpus_is_an_error(tok, tmp_path):
    def broken():
        yield from DOCS
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        token_cache.build_or_load(broken, tok, tmp_path, "k3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k3.lock"]  # no folder, no temp folder
    assert token_cache.build_or_load(documents, tok, tmp_path, "k3").n_docs > 0  # the next try builds it
    with pytest.raises(DataError, match="no tokens"):
        token_cache.build_or_load(lambda: iter([[EMPTY]]), tok, tmp_path, "k4")


def test_corrupt_cache_is_reported(tok, tmp_path):
    token_cache.build_or_load(documents, tok, tmp_path, "k5")
    with open(tmp_path / "k5" / "tokens.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(DataError, match="k5.*inconsistent"):
        token_cache.build_or_load(documents, tok, tmp_path, "k5")


def test_cache_key_is_stable_and_sensitive():
    assert cache_key("a", 1, {"x": [1, 2]}) == cache_key("a", 1, {"x": [1, 2]})
    assert cache_key("a", 1) != cache_key("a", 2)
    assert cache_key(Path("/x")) == cache_key("/x")


def _worker(tok_dir: str, root: str, log: str) -> tuple[int, int, float, float]:
    from transformers import AutoTokenizer

    from robablate.data import token_cache as tc
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    def slow_documents():
        with open(log, "a") as f:  # one line per build
            f.write("build\n")
        time.sleep(2.0)  # a slow build, so the other process arrives while it runs
        yield from documents()

    enter = time.time()
    cache = tc.build_or_load(slow_documents, tokenizer, root, "shared")
    return len(cache.tokens), int(np.asarray(cache.tokens, dtype=np.int64).sum()), enter, time.time()


def test_concurrent_builds_from_two_processes(tok, tmp_path):
    log = tmp_path / "builds.log"
    ctx = mp.get_context("spawn")  # no fork: the tokenizers library's threads do not survive fork
    with ctx.Pool(2) as pool:
        results = pool.starmap(_worker, [(tok.name_or_path, str(tmp_path / "root"), str(log))] * 2)
    assert log.read_text().count("build") == 1  # one process built, the other waited and loaded
    (n0, s0, enter0, exit0), (n1, s1, enter1, exit1) = results
    assert max(enter0, enter1) < min(exit0, exit1), "the two calls did not overlap: the lock was not exercised"
    assert (n0, s0) == (n1, s1)
    cache = token_cache.load(tmp_path / "root" / "shared")
    assert (len(cache.tokens), int(np.asarray(cache.tokens, dtype=np.int64).sum())) == (n0, s0)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["shared", "shared.lock"]
