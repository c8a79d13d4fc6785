"""Input formats (RoBERTa §4.2): layout, NSP pairing, packing coverage, short_seq_prob, determinism.

Test corpora use token id = 5 + global token position, so every token in an instance tells us exactly
where it came from (document, sentence, position) and packing/pairing can be checked token by token.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from robablate.data.formats import (
    FORMATS,
    NSP_FORMATS,
    Instances,
    build_instances,
    mean_tokens,
    resolve_format,
    token_type_ids,
    truncation_counts,
)
from robablate.data.token_cache import TokenCache
from robablate.data.tokenizer import SpecialIds
from robablate.errors import ConfigError, DataError

FIRST = 5  # first non-special id; ids 0..4 are specials as in every tokenizer robablate trains


def _shared_data() -> Path:
    env = os.environ.get("ROBABLATE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def make_cache(sent_lens_per_doc: list[list[int]]) -> tuple[TokenCache, SpecialIds]:
    lens = [n for doc in sent_lens_per_doc for n in doc]
    sent_offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    doc_offsets = np.concatenate([[0], np.cumsum([len(d) for d in sent_lens_per_doc])]).astype(np.int64)
    n_tok = int(sent_offsets[-1])
    tokens = (FIRST + np.arange(n_tok)).astype(np.int32)
    ids = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=FIRST + n_tok)
    return TokenCache(tokens, sent_offsets, doc_offsets, "test"), ids


def random_corpus(seed: int, n_docs: int, sents: tuple[int, int], lens: tuple[int, int]):
    rng = np.random.default_rng(seed)
    return make_cache([rng.integers(lens[0], lens[1] + 1, rng.integers(sents[0], sents[1] + 1)).tolist()
                       for _ in range(n_docs)])


def maps(cache: TokenCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token: document id, sentence id, and whether it starts a sentence."""
    n = len(cache.tokens)
    sent = np.repeat(np.arange(cache.n_sentences), np.diff(cache.sent_offsets))
    doc_of_sent = np.repeat(np.arange(cache.n_docs), np.diff(cache.doc_offsets))
    starts = np.zeros(n + 1, bool)
    starts[cache.sent_offsets] = True
    return doc_of_sent[sent], sent, starts[:n]


def segments(inst: Instances, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Token positions of A and B of pair instance i (content ids minus FIRST)."""
    row, b, n = inst.input_ids[i], int(inst.b_start[i]), int(inst.lengths[i])
    return row[1:b - 1].astype(np.int64) - FIRST, row[b:n - 1].astype(np.int64) - FIRST


# A corpus with empty sentences, an empty document, one-sentence documents and long sentences.
EDGE_DOCS = [[3, 0, 5, 7], [], [40], [2, 2, 0, 9, 1, 4, 6], [0], [30, 1, 2], [8] * 10, [1], [5, 5, 5, 5]]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("short", [0.0, 0.3])
def test_layout_invariants(fmt, short):
    cache, ids = random_corpus(1, 60, (1, 12), (1, 14))
    for cache, ids in [(cache, ids), make_cache(EDGE_DOCS)]:
        max_len = 24
        inst = build_instances(cache, fmt, max_len, short, seed=3, ids=ids)
        x, n, b = inst.input_ids, inst.lengths, inst.b_start
        assert x.dtype == np.int32 and x.shape == (len(n), max_len)
        assert n.dtype == np.int32 and b.dtype == np.int32 and inst.nsp_labels.dtype == np.int64
        assert np.all(n <= max_len) and np.all(n >= 3)
        pos = np.arange(max_len)
        assert np.array_equal((x != ids.pad).sum(1), n)
        assert np.all(x[pos >= n[:, None]] == ids.pad)
        assert np.all(x[:, 0] == ids.cls)
        assert np.all(x[np.arange(len(n)), n - 1] == ids.sep)
        if fmt in NSP_FORMATS:
            assert np.all(x[np.arange(len(n)), b - 1] == ids.sep)
            assert np.all((b >= 3) & (b <= n - 2))  # A and B both non-empty
            inside = (pos > 0) & (pos < n[:, None] - 1) & (pos != b[:, None] - 1)
            assert np.all(x[inside] >= FIRST)
            assert set(np.unique(inst.nsp_labels)) <= {0, 1}
        else:
            assert np.array_equal(b, n)
            assert np.all(inst.nsp_labels == -100)
            inner = x[(pos > 0) & (pos < n[:, None] - 1)]
            allowed_sep = fmt == "full_sentences"  # only the document separator
            assert np.all((inner >= FIRST) | (allowed_sep & (inner == ids.sep)))


@pytest.mark.parametrize("fmt", NSP_FORMATS)
def test_nsp_labels_balanced(fmt):
    # 20k+ instances: sd of the label mean is ~0.0035, so the +-2 point tolerance is ~6 sd. BERT's
    # one-sentence chunks always take a random B, which is why sentences are short relative to max_len.
    cache, ids = random_corpus(2, 2400, (20, 80), (1, 6))
    inst = build_instances(cache, fmt, 32, 0.0, seed=0, ids=ids)
    assert len(inst) >= 20_000
    assert abs(inst.nsp_labels.mean() - 0.5) <= 0.02, inst.nsp_labels.mean()


def test_segment_pair_b_is_true_continuation_or_another_document():
    cache, ids = random_corpus(3, 200, (5, 40), (1, 9))
    doc, sent, starts = maps(cache)
    ends = np.append(starts[1:], True)  # token is the last of its sentence
    max_len = 40
    # short_seq_prob=0.5: many chunks end below max_len, so nothing is truncated and the exact
    # whole-sentence checks below apply to a large share of the instances.
    inst = build_instances(cache, "segment_pair", max_len, 0.5, seed=1, ids=ids)
    untruncated = 0
    for i in range(len(inst)):
        a, b = segments(inst, i)
        # Each segment is one contiguous run of the token stream inside one document.
        assert np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1)
        assert len(set(doc[a])) == 1 and len(set(doc[b])) == 1
        if inst.nsp_labels[i] == 0:
            assert doc[b[0]] == doc[a[-1]] and b[0] > a[-1]
            if inst.lengths[i] < max_len:  # not truncated: whole sentences, B right after A
                untruncated += 1
                assert starts[a[0]] and ends[a[-1]] and starts[b[0]] and ends[b[-1]]
                assert sent[b[0]] == sent[a[-1]] + 1 and b[0] == a[-1] + 1
        else:
            assert doc[b[0]] != doc[a[-1]]
            if inst.lengths[i] < max_len:
                assert starts[a[0]] and ends[a[-1]] and starts[b[0]] and ends[b[-1]]
    assert untruncated >= 0.2 * (inst.nsp_labels == 0).sum()  # the exact check was not vacuous


def test_sentence_pair_uses_each_sentence_with_a_successor_once():
    cache, ids = random_corpus(4, 100, (1, 20), (1, 10))
    doc, sent, _ = maps(cache)
    inst = build_instances(cache, "sentence_pair", 64, 0.0, seed=2, ids=ids)  # no truncation needed
    a_sents = []
    for i in range(len(inst)):
        a, b = segments(inst, i)
        # Whole single sentences on both sides.
        assert len(set(sent[a])) == 1 and len(a) == np.sum(sent == sent[a[0]])
        assert len(set(sent[b])) == 1 and len(b) == np.sum(sent == sent[b[0]])
        if inst.nsp_labels[i] == 0:
            assert sent[b[0]] == sent[a[0]] + 1 and doc[b[0]] == doc[a[0]]
        else:
            assert doc[b[0]] != doc[a[0]]
        a_sents.append(sent[a[0]])
    doc_of_sent = np.repeat(np.arange(cache.n_docs), np.diff(cache.doc_offsets))
    has_successor = np.flatnonzero(doc_of_sent[:-1] == doc_of_sent[1:])
    assert sorted(a_sents) == has_successor.tolist()


def test_truncation_counts_match_berts_loop():
    rng = np.random.default_rng(0)
    la, lb, limit = rng.integers(1, 60, 3000), rng.integers(1, 60, 3000), rng.integers(2, 80, 3000)
    cut_a, cut_b = truncation_counts(la, lb, limit)
    for i in range(len(la)):
        a, b = int(la[i]), int(lb[i])
        while a + b > limit[i]:  # create_pretraining_data.py truncate_seq_pair
            if a > b:
                a -= 1
            else:
                b -= 1
        assert (cut_a[i], cut_b[i]) == (la[i] - a, lb[i] - b)


def test_pair_truncation_keeps_both_sides_and_fits():
    # Sentences much longer than max_len force heavy truncation of both formats.
    cache, ids = random_corpus(5, 30, (2, 6), (20, 90))
    for fmt in NSP_FORMATS:
        inst = build_instances(cache, fmt, 16, 0.0, seed=0, ids=ids)
        assert np.all(inst.lengths == 16)  # always over-full, so truncated to exactly max_len
        la, lb = inst.b_start - 2, inst.lengths - inst.b_start - 1
        assert np.all(np.abs(la - lb) <= 1)  # the longer side is cut first: both end balanced


def _content(inst: Instances) -> list[np.ndarray]:
    return [inst.input_ids[i, 1:inst.lengths[i] - 1] for i in range(len(inst))]


def _check_packing(cache, ids, inst, max_len, cross):
    """Every token exactly once and in order; [SEP] exactly at document boundaries inside an
    instance; greedy: the next whole sentence (or piece) did not fit."""
    doc, sent, starts = maps(cache)
    rows = _content(inst)
    stream = np.concatenate([r[r != ids.sep] for r in rows]).astype(np.int64) - FIRST
    assert np.array_equal(stream, np.arange(len(cache.tokens)))
    cap = max_len - 2
    crossed = 0
    for i, r in enumerate(rows):
        is_sep = r == ids.sep
        toks = r[~is_sep].astype(np.int64) - FIRST
        assert not is_sep[0] and not is_sep[-1]
        changes = np.flatnonzero(doc[toks[1:]] != doc[toks[:-1]])
        assert is_sep.sum() == len(changes) and (cross or len(changes) == 0)
        crossed += len(changes) > 0
        # A separator sits exactly where the document changes.
        assert np.array_equal(np.flatnonzero(is_sep), changes + 1 + np.arange(len(changes)))
        # Instances start at a sentence start, or at a multiple of cap inside a long sentence.
        t0 = toks[0]
        s0 = cache.sent_offsets[sent[t0]]
        assert starts[t0] or (t0 - s0) % cap == 0
        if i + 1 < len(rows):  # greedy: the next unit would not have fitted
            nxt = rows[i + 1][rows[i + 1] != ids.sep].astype(np.int64) - FIRST
            s = sent[nxt[0]]
            unit = min(cache.sent_offsets[s + 1] - nxt[0], cap)
            new_doc = doc[nxt[0]] != doc[toks[-1]]
            if cross or not new_doc:
                assert len(r) + unit + new_doc > cap
    return crossed


def test_full_sentences_packs_every_token_once_and_crosses_documents():
    docs = [[5, 30, 2], [7, 1], [60], [3, 3, 3, 40, 1]] + [[4, 2, 3]] * 20 + [[1]] * 30
    cache, ids = make_cache(docs)
    inst = build_instances(cache, "full_sentences", 24, 0.0, seed=0, ids=ids)
    assert _check_packing(cache, ids, inst, 24, cross=True) >= 10
    cache, ids = random_corpus(6, 300, (1, 30), (1, 40))
    inst = build_instances(cache, "full_sentences", 64, 0.0, seed=0, ids=ids)
    assert _check_packing(cache, ids, inst, 64, cross=True) >= 50


def test_doc_sentences_never_crosses_documents_and_covers_every_token():
    cache, ids = random_corpus(7, 300, (1, 30), (1, 40))
    inst = build_instances(cache, "doc_sentences", 64, 0.0, seed=0, ids=ids)
    assert _check_packing(cache, ids, inst, 64, cross=False) == 0
    doc, _, _ = maps(cache)
    for r in _content(inst):
        assert len(set(doc[r.astype(np.int64) - FIRST])) == 1
    full = build_instances(cache, "full_sentences", 64, 0.0, seed=0, ids=ids)
    assert len(inst) > len(full) and mean_tokens(inst) < mean_tokens(full)


def test_packed_short_seq_prob_keeps_coverage_and_shortens():
    cache, ids = random_corpus(8, 20, (200, 400), (1, 5))
    long = build_instances(cache, "full_sentences", 128, 0.0, seed=0, ids=ids)
    short = build_instances(cache, "full_sentences", 128, 0.2, seed=0, ids=ids)
    stream = np.concatenate([r[r != ids.sep] for r in _content(short)]) - FIRST
    assert np.array_equal(stream, np.arange(len(cache.tokens)))
    # Greedy packing of 1..5-token sentences fills to >= 122 of 126 unless the target was short.
    frac = lambda inst: np.mean(inst.lengths < 128 - 8)  # noqa: E731
    assert frac(long) < 0.01
    assert 0.2 * 0.85 <= frac(short) <= 0.2 + 0.02  # ~20% * P(uniform[2,126] < ~120)


def test_segment_pair_short_seq_prob_rate():
    # Long documents of short sentences: without short targets almost every instance is full.
    cache, ids = random_corpus(9, 40, (3000, 3400), (1, 6))
    max_len = 128
    full = build_instances(cache, "segment_pair", max_len, 0.0, seed=0, ids=ids)
    some = build_instances(cache, "segment_pair", max_len, 0.1, seed=0, ids=ids)
    assert len(some) >= 5000
    short = lambda inst: inst.lengths < max_len - 8  # noqa: E731
    assert short(full).mean() <= 0.03  # document ends only
    # A short target t ~ U[2, 125] gives a visibly short instance when t <~ 113 (overshoot is at most
    # a few 1..6-token sentences): expected extra rate ~0.1 * 111/124 ~= 0.09; sd ~0.004 at N >= 5000.
    extra = short(some).mean() - short(full).mean()
    assert 0.07 <= extra <= 0.11, extra
    lens = some.lengths[short(some)]
    assert lens.min() <= 12 and 40 <= np.median(lens) <= 85  # spread over [2, max], not clustered


@pytest.mark.parametrize("fmt", FORMATS)
def test_deterministic(fmt):
    cache, ids = random_corpus(10, 80, (1, 20), (1, 15))
    a = build_instances(cache, fmt, 32, 0.1, seed=5, ids=ids)
    b = build_instances(cache, fmt, 32, 0.1, seed=5, ids=ids)
    c = build_instances(cache, fmt, 32, 0.1, seed=6, ids=ids)
    for f in ("input_ids", "lengths", "b_start", "nsp_labels"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert a.input_ids.shape != c.input_ids.shape or not np.array_equal(a.input_ids, c.input_ids)


def test_token_type_ids_and_mean_tokens():
    b_start, lengths = np.array([3, 5, 4]), np.array([6, 5, 9])
    tt = token_type_ids(b_start, lengths, 10)
    expect = np.zeros((3, 10), np.int64)
    for i in range(3):
        expect[i, b_start[i]:lengths[i]] = 1
    assert np.array_equal(tt, expect) and tt.dtype == np.int64
    cache, ids = random_corpus(11, 50, (2, 10), (1, 10))
    inst = build_instances(cache, "segment_pair", 32, 0.0, seed=0, ids=ids)
    tt = token_type_ids(inst.b_start, inst.lengths, 32)
    assert np.array_equal(tt.sum(1), inst.lengths - inst.b_start)
    assert mean_tokens(inst) == pytest.approx((inst.input_ids != ids.pad).sum() / len(inst))


def test_resolve_format():
    assert resolve_format("auto", True) == "segment_pair"
    assert resolve_format("auto", False) == "full_sentences"
    for f in FORMATS:
        assert resolve_format(f, f in NSP_FORMATS) == f
    wrong = [("full_sentences", True), ("doc_sentences", True),
             ("segment_pair", False), ("sentence_pair", False)]
    for f, nsp in wrong:
        with pytest.raises(ConfigError) as e:
            resolve_format(f, nsp)
        msg = str(e.value)
        assert "nsp" in msg and "format" in msg and f in msg
        allowed = NSP_FORMATS if nsp else ("full_sentences", "doc_sentences")
        assert all(a in msg for a in allowed)
        assert not any(x in msg for x in FORMATS if x not in allowed and x != f)
    with pytest.raises(ConfigError, match="format"):
        resolve_format("segment-pair", True)


def test_bad_inputs_raise():
    cache, ids = make_cache([[3], [4], [5]])  # no document with 2 sentences
    with pytest.raises(DataError, match="zero instances"):
        build_instances(cache, "sentence_pair", 16, 0.0, 0, ids)
    build_instances(cache, "segment_pair", 16, 0.0, 0, ids)  # BERT pairs 1-sentence chunks with a random B
    one_doc, ids1 = make_cache([[3, 4, 5]])
    with pytest.raises(DataError, match="2 non-empty documents"):
        build_instances(one_doc, "segment_pair", 16, 0.0, 0, ids1)
    empty, ids0 = make_cache([[0, 0], []])
    with pytest.raises(DataError, match="zero instances"):
        build_instances(empty, "full_sentences", 16, 0.0, 0, ids0)
    with pytest.raises(ConfigError, match="max_len"):
        build_instances(cache, "full_sentences", 4, 0.0, 0, ids)
    with pytest.raises(ConfigError, match="short_seq_prob"):
        build_instances(cache, "full_sentences", 16, 1.5, 0, ids)
    with pytest.raises(ConfigError, match="format"):
        build_instances(cache, "auto", 16, 0.0, 0, ids)
    bad = TokenCache(cache.tokens, cache.sent_offsets[:-1], cache.doc_offsets, "bad")
    with pytest.raises(DataError, match="offsets"):
        build_instances(bad, "full_sentences", 16, 0.0, 0, ids)


def _wikitext_cache(path: Path) -> tuple[TokenCache, SpecialIds]:
    """Crude whitespace tokenisation: a ' = Title = ' line starts a document, other non-empty lines
    are split into sentences after ' . '."""
    docs: list[list[list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if re.fullmatch(r"= [^=].* =", line) or not docs:
            docs.append([])
        docs[-1].extend(s.split() for s in re.split(r"(?<= \.) ", line) if s.strip())
    words = [w for d in docs for s in d for w in s]
    vocab, tokens = np.unique(np.array(words), return_inverse=True)
    sent_offsets = np.concatenate([[0], np.cumsum([len(s) for d in docs for s in d])]).astype(np.int64)
    doc_offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    ids = SpecialIds(0, 1, 2, 3, 4, vocab_size=FIRST + len(vocab))
    return TokenCache((tokens + FIRST).astype(np.uint16), sent_offsets, doc_offsets, "wikitext-2"), ids


@pytest.mark.shared_data
def test_wikitext2_speed():
    path = _shared_data() / "corpus" / "wikitext-2" / "train.txt"
    if not path.exists():
        pytest.skip(f"{path} absent (set ROBABLATE_SHARED_DATA to the shared/data folder)")
    cache, ids = _wikitext_cache(path)
    assert cache.n_sentences > 50_000
    for fmt in FORMATS:
        t = time.perf_counter()
        inst = build_instances(cache, fmt, 128, 0.1, seed=0, ids=ids)
        dt = time.perf_counter() - t
        assert np.all(inst.lengths <= 128)
        assert dt < 5.0, f"{fmt}: {dt:.1f}s on WikiText-2 (brief: < 5 s; ~0.3 s measured)"


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunked_assembly_equals_one_pass(fmt, monkeypatch):
    """Instances are gathered in chunks of formats.FILL_CHUNK tokens (bounded temporary memory on a large
    corpus); any chunk size gives the same arrays as a single pass."""
    from robablate.data import formats

    cache, ids = random_corpus(4, 30, (2, 9), (1, 14))
    one = build_instances(cache, fmt, 32, 0.1, seed=5, ids=ids)
    monkeypatch.setattr(formats, "FILL_CHUNK", 7)  # smaller than most ranges: one or a few per chunk
    chunked = build_instances(cache, fmt, 32, 0.1, seed=5, ids=ids)
    for name in ("input_ids", "lengths", "b_start", "nsp_labels"):
        assert np.array_equal(getattr(one, name), getattr(chunked, name)), name
