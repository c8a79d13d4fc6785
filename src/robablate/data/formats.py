"""The four input formats of RoBERTa §4.2, as pure functions of (token cache, format, seed).

segment_pair   [CLS] A [SEP] B [SEP], A/B = runs of whole sentences, + NSP (BERT; create_pretraining_data.py)
sentence_pair  [CLS] A [SEP] B [SEP], A/B = single sentences, + NSP
full_sentences [CLS] s s s [SEP] s s [SEP], whole sentences packed across documents, [SEP] between docs
doc_sentences  the same packing, but an instance never crosses a document boundary

Python loops run over sentences only (never tokens); each instance is a few token ranges, and the
2-D array is gathered with numpy at the end. All randomness comes from one
np.random.default_rng([seed, salt]) walked in a fixed order, so the same inputs give the same instances.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from robablate.data.token_cache import TokenCache
from robablate.data.tokenizer import SpecialIds
from robablate.errors import ConfigError, DataError

FORMATS = ("segment_pair", "sentence_pair", "full_sentences", "doc_sentences")
NSP_FORMATS = ("segment_pair", "sentence_pair")
PACKED_FORMATS = ("full_sentences", "doc_sentences")
MIN_MAX_LEN = 5  # [CLS] a [SEP] b [SEP]: the smallest pair with one token per side
FILL_CHUNK = 1 << 20  # tokens gathered per step when assembling instances (bounds the temporary arrays)


@dataclass
class Instances:
    input_ids: np.ndarray  # int32 [N, max_len], padded with pad id; includes [CLS]/[SEP]
    lengths: np.ndarray  # int32 [N]
    b_start: np.ndarray  # int32 [N]: index of the first token of segment B (== lengths if no B)
    nsp_labels: np.ndarray  # int64 [N]: 0 = true continuation, 1 = random B; -100 without NSP

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass(frozen=True)
class FormatSpec:
    """How training instances are cut (the `format` group, `nsp` and seq_len.short_seq_prob), checked
    once by `from_config`: `name` is resolved (never `auto`) and agrees with `nsp`."""

    name: str
    nsp: bool
    short_seq_prob: float = 0.0   # BERT's: a target length drawn uniformly below the maximum, this often

    @classmethod
    def from_config(cls, name: str, nsp: object, short_seq_prob: object = 0.0) -> "FormatSpec":
        if not isinstance(nsp, bool):
            raise ConfigError(f"Invalid config `nsp`: expected true or false, got {nsp!r}.")
        fmt = resolve_format(str(name), nsp)
        if isinstance(short_seq_prob, bool) or not isinstance(short_seq_prob, (int, float)) \
                or not 0 <= short_seq_prob < 1:
            raise ConfigError(f"Invalid config `seq_len.short_seq_prob`: expected a probability in [0, 1), "
                              f"got {short_seq_prob!r}.")
        return cls(name=fmt, nsp=nsp, short_seq_prob=float(short_seq_prob))


def resolve_format(fmt: str, nsp: bool) -> str:
    """`auto` -> BERT's segment_pair with NSP, RoBERTa's full_sentences without. A format that
    contradicts `nsp` is an error rather than a silent NSP head trained on -100 labels (or an NSP
    format whose labels are ignored)."""
    if fmt == "auto":
        return "segment_pair" if nsp else "full_sentences"
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is unknown; expected 'auto' or one of {', '.join(FORMATS)}")
    allowed = NSP_FORMATS if nsp else PACKED_FORMATS
    if fmt not in allowed:
        raise ConfigError(
            f"nsp={str(nsp).lower()} does not go with format={fmt!r}: with nsp={str(nsp).lower()} "
            f"format must be 'auto' or one of {', '.join(allowed)}"
        )
    return fmt


def token_type_ids(b_start: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Segment ids: 0 on [CLS] A [SEP], 1 on B [SEP], 0 on padding. int64 [N, max_len]."""
    pos = np.arange(max_len)
    b = (pos >= np.asarray(b_start)[:, None]) & (pos < np.asarray(lengths)[:, None])
    return b.astype(np.int64)


def mean_tokens(instances: Instances) -> float:
    """Mean instance length incl. specials: sets the batch size that equalises tokens per batch (§4.2)."""
    return float(np.mean(instances.lengths)) if len(instances.lengths) else 0.0


def build_instances(
    cache: TokenCache, fmt: str, max_len: int, short_seq_prob: float, seed: int, ids: SpecialIds
) -> Instances:
    """Cut `cache` into instances of format `fmt` (one of FORMATS), each at most `max_len` tokens."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is unknown; expected one of {', '.join(FORMATS)}")
    if int(max_len) < MIN_MAX_LEN:
        raise ConfigError(f"max_len={max_len} is too small; expected an integer >= {MIN_MAX_LEN}")
    if not 0.0 <= float(short_seq_prob) <= 1.0:
        raise ConfigError(f"short_seq_prob={short_seq_prob} must be a probability in [0, 1]")
    if int(seed) < 0:
        raise ConfigError(f"seed={seed} must be a non-negative integer")
    max_len = int(max_len)
    rng = np.random.default_rng([int(seed), zlib.crc32(fmt.encode())])
    sents = _nonempty_sentences(cache)
    where = f"token cache {cache.fingerprint or '(unnamed)'}"
    if fmt in NSP_FORMATS:
        if len(sents.doc_start) < 2:
            raise DataError(
                f"{where}: format={fmt} needs at least 2 non-empty documents to draw a random "
                f"next segment for NSP, found {len(sents.doc_start)}"
            )
        pick = _segment_pairs if fmt == "segment_pair" else _sentence_pairs
        a_lo, a_hi, b_lo, b_hi, limit, labels = pick(sents, max_len - 3, short_seq_prob, _Uniforms(rng))
        if len(labels) == 0:
            raise DataError(f"{where}: format={fmt} gave zero instances (no document with >= 2 sentences)")
        a_lo, a_hi, b_lo, b_hi = _truncate_pairs(a_lo, a_hi, b_lo, b_hi, limit, rng)
        return _assemble_pairs(cache.tokens, a_lo, a_hi, b_lo, b_hi, labels, max_len, ids)
    lo, hi = _pack(sents, max_len - 2, short_seq_prob, _Uniforms(rng), cross_docs=fmt == "full_sentences")
    if len(lo) == 0:
        raise DataError(f"{where}: format={fmt} gave zero instances (the corpus has no tokens)")
    return _assemble_packed(cache.tokens, lo, hi, sents.doc_token_start, max_len, ids)


# ---- corpus view -------------------------------------------------------------------------------


@dataclass
class _Sentences:
    lo: list  # token start of each non-empty sentence
    hi: list  # token end
    doc: list  # document index (among non-empty documents)
    doc_start: list  # first sentence of each non-empty document
    doc_end: list  # one past its last sentence
    doc_token_start: np.ndarray  # token offset where each non-empty document starts


def _nonempty_sentences(cache: TokenCache) -> _Sentences:
    """Drop empty sentences and documents: they carry no tokens, and an empty A or B segment (or a
    separator between two [SEP]-adjacent empty documents) would be a malformed instance."""
    so = np.asarray(cache.sent_offsets, dtype=np.int64)
    do = np.asarray(cache.doc_offsets, dtype=np.int64)
    ok = len(so) >= 1 and len(do) >= 1 and so[0] == 0 and do[0] == 0
    ok = ok and so[-1] == len(cache.tokens) and do[-1] == len(so) - 1
    if not ok or np.any(np.diff(so) < 0) or np.any(np.diff(do) < 0):
        raise DataError(
            f"token cache {cache.fingerprint or '(unnamed)'}: sent_offsets/doc_offsets must be "
            "non-decreasing, start at 0 and end at the token count / sentence count"
        )
    doc_of_sent = np.repeat(np.arange(len(do) - 1), np.diff(do))
    keep = np.flatnonzero(np.diff(so) > 0)
    doc = doc_of_sent[keep]
    _, doc = np.unique(doc, return_inverse=True)  # renumber the non-empty documents 0..m-1
    n_docs = int(doc.max()) + 1 if len(doc) else 0
    start = np.searchsorted(doc, np.arange(n_docs), side="left")
    end = np.searchsorted(doc, np.arange(n_docs), side="right")
    lo = so[:-1][keep]
    return _Sentences(
        lo=lo.tolist(), hi=so[1:][keep].tolist(), doc=doc.tolist(),
        doc_start=start.tolist(), doc_end=end.tolist(), doc_token_start=lo[start],
    )


class _Uniforms:
    """Scalar uniforms drawn from `rng` in blocks (a scalar rng call per draw is ~10x slower)."""

    def __init__(self, rng: np.random.Generator, block: int = 4096):
        self.rng, self.block, self.buf, self.i = rng, block, [], 0

    def __call__(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(self.block).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi], inclusive like Python's random.randint used by BERT."""
        return lo + min(int(self() * (hi - lo + 1)), hi - lo)

    def target(self, max_tokens: int, short_seq_prob: float) -> int:
        """BERT's target length: usually the max, with p=short_seq_prob uniform in [2, max] so
        pretraining also sees the short sequences fine-tuning uses."""
        return self.integer(2, max_tokens) if self() < short_seq_prob else max_tokens


def _other_doc(d: int, n_docs: int, u: _Uniforms) -> int:
    """A uniformly random document other than `d` (BERT retries 10 times and may keep `d`; a
    random B from the same document would be a mislabelled NSP example)."""
    r = u.integer(0, n_docs - 2)
    return r + (r >= d)


# ---- NSP formats -------------------------------------------------------------------------------


def _segment_pairs(s: _Sentences, max_tokens: int, short_seq_prob: float, u: _Uniforms):
    """BERT's create_instances_from_document, over every document in order (dupe_factor is the
    masking layer's job). One deviation: the target length is redrawn for every instance, so
    short_seq_prob is the fraction of short instances, where BERT draws it once per document."""
    lo, hi, n_docs = s.lo, s.hi, len(s.doc_start)
    a_lo, a_hi, b_lo, b_hi, labels = [], [], [], [], []
    for d in range(n_docs):
        first, end = s.doc_start[d], s.doc_end[d]
        target = u.target(max_tokens, short_seq_prob)
        i, chunk_start, cur = first, first, 0
        while i < end:
            cur += hi[i] - lo[i]
            if i == end - 1 or cur >= target:
                n_chunk = i - chunk_start + 1
                a_end = 1 if n_chunk == 1 else u.integer(1, n_chunk - 1)
                alo, ahi = lo[chunk_start], hi[chunk_start + a_end - 1]
                if n_chunk == 1 or u() < 0.5:
                    # Random next: fill B from a random point of another document up to the target.
                    r = _other_doc(d, n_docs, u)
                    j = start = u.integer(s.doc_start[r], s.doc_end[r] - 1)
                    need, got = target - (ahi - alo), 0
                    while j < s.doc_end[r]:
                        got += hi[j] - lo[j]
                        j += 1
                        if got >= need:
                            break
                    blo, bhi, label = lo[start], hi[j - 1], 1
                    i -= n_chunk - a_end  # put the unused continuation back (BERT: num_unused_segments)
                else:
                    blo, bhi, label = lo[chunk_start + a_end], hi[i], 0
                a_lo.append(alo), a_hi.append(ahi), b_lo.append(blo), b_hi.append(bhi), labels.append(label)
                chunk_start, cur = i + 1, 0
                target = u.target(max_tokens, short_seq_prob)
            i += 1
    limit = np.full(len(labels), max_tokens, dtype=np.int64)  # BERT truncates to the max, not the target
    return _arrays(a_lo, a_hi, b_lo, b_hi) + (limit, np.asarray(labels, dtype=np.int64))


def _sentence_pairs(s: _Sentences, max_tokens: int, short_seq_prob: float, u: _Uniforms):
    """Each sentence that has a successor in its document is A once; B is that successor (p=0.5)
    or a random sentence of another document. The target length is the truncation limit."""
    lo, hi, n_docs = s.lo, s.hi, len(s.doc_start)
    a_lo, a_hi, b_lo, b_hi, labels, limit = [], [], [], [], [], []
    for d in range(n_docs):
        for i in range(s.doc_start[d], s.doc_end[d] - 1):
            if u() < 0.5:
                r = _other_doc(d, n_docs, u)
                j, label = u.integer(s.doc_start[r], s.doc_end[r] - 1), 1
            else:
                j, label = i + 1, 0
            a_lo.append(lo[i]), a_hi.append(hi[i]), b_lo.append(lo[j]), b_hi.append(hi[j])
            labels.append(label), limit.append(u.target(max_tokens, short_seq_prob))
    return _arrays(a_lo, a_hi, b_lo, b_hi) + (np.asarray(limit, np.int64), np.asarray(labels, np.int64))


def _arrays(*lists) -> tuple:
    return tuple(np.asarray(x, dtype=np.int64) for x in lists)


def truncation_counts(
    len_a: np.ndarray, len_b: np.ndarray, limit: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How many tokens BERT's truncate_seq_pair removes from A and from B: one at a time from the
    longer side (B on ties) until len_a + len_b <= limit. Closed form of that loop: first level the
    longer side down to the shorter, then alternate starting with B."""
    len_a, len_b, limit = (np.asarray(x, dtype=np.int64) for x in (len_a, len_b, limit))
    excess = np.maximum(len_a + len_b - limit, 0)
    level = np.minimum(np.abs(len_a - len_b), excess)
    rest = excess - level
    cut_a = np.where(len_a > len_b, level, 0) + rest // 2
    cut_b = np.where(len_a > len_b, 0, level) + (rest + 1) // 2
    return cut_a, cut_b


def _truncate_pairs(a_lo, a_hi, b_lo, b_hi, limit, rng: np.random.Generator):
    """truncate_seq_pair, vectorised: BERT removes each token from the front or back with p=0.5
    (to add noise); the number taken from the front is therefore Binomial(cut, 0.5)."""
    cut_a, cut_b = truncation_counts(a_hi - a_lo, b_hi - b_lo, limit)
    front_a, front_b = rng.binomial(cut_a, 0.5), rng.binomial(cut_b, 0.5)
    return a_lo + front_a, a_hi - (cut_a - front_a), b_lo + front_b, b_hi - (cut_b - front_b)


# ---- packed formats ----------------------------------------------------------------------------


def _pack(s: _Sentences, capacity: int, short_seq_prob: float, u: _Uniforms, cross_docs: bool):
    """Greedy packing of whole sentences into token ranges [lo, hi) of at most `capacity` tokens
    (FULL-SENTENCES / DOC-SENTENCES, RoBERTa §4.2). A sentence that does not fit starts the next
    instance; one longer than `capacity` is split into capacity-sized pieces first. Crossing into a
    new document costs one separator token. The (short_seq_prob) target only decides when to stop
    adding sentences: an instance always holds at least one whole sentence or piece."""
    lo = np.asarray(s.lo, dtype=np.int64)
    n = np.asarray(s.hi, dtype=np.int64) - lo
    pieces = -(-n // capacity)
    unit = np.repeat(np.arange(len(n)), pieces)
    k = np.arange(len(unit)) - np.repeat(np.cumsum(pieces) - pieces, pieces)  # piece index in its sentence
    u_lo = lo[unit] + k * capacity
    u_len = np.minimum(n[unit] - k * capacity, capacity)
    u_doc = np.asarray(s.doc, dtype=np.int64)[unit]
    out_lo, out_hi = [], []
    cur_lo = cur_hi = cur_len = cur_doc = target = -1
    for ulo, ulen, udoc in zip(u_lo.tolist(), u_len.tolist(), u_doc.tolist()):
        if cur_len > 0:
            extra = ulen + (udoc != cur_doc)
            if (cross_docs or udoc == cur_doc) and cur_len + extra <= target:
                cur_len, cur_hi, cur_doc = cur_len + extra, ulo + ulen, udoc
                continue
            out_lo.append(cur_lo), out_hi.append(cur_hi)
        cur_lo, cur_hi, cur_len, cur_doc = ulo, ulo + ulen, ulen, udoc
        target = u.target(capacity, short_seq_prob)
    if cur_len > 0:
        out_lo.append(cur_lo), out_hi.append(cur_hi)
    return np.asarray(out_lo, dtype=np.int64), np.asarray(out_hi, dtype=np.int64)


# ---- assembly ----------------------------------------------------------------------------------


def _fill(tokens, n_rows, max_len, pad, r_row, r_pos, r_lo, r_len, s_row, s_pos, s_id) -> np.ndarray:
    """Gather token ranges (row, first position, token start, length) and single special tokens
    into a padded [n_rows, max_len] int32 array, without a per-token Python loop."""
    out = np.full((n_rows, max_len), pad, dtype=np.int32)
    ends = np.cumsum(r_len)
    start = 0
    while start < len(r_len):  # chunks of ~FILL_CHUNK tokens: the int64 index arrays stay small
        stop = max(start + 1, int(np.searchsorted(ends, (ends[start - 1] if start else 0) + FILL_CHUNK, "right")))
        n = r_len[start:stop]
        which = np.repeat(np.arange(start, stop), n)
        within = np.arange(len(which)) - np.repeat(np.cumsum(n) - n, n)
        out[r_row[which], r_pos[which] + within] = np.asarray(tokens[r_lo[which] + within], dtype=np.int32)
        start = stop
    out[s_row, s_pos] = s_id
    return out


def _assemble_pairs(tokens, a_lo, a_hi, b_lo, b_hi, labels, max_len, ids) -> Instances:
    la, lb = a_hi - a_lo, b_hi - b_lo
    n = len(la)
    rows = np.arange(n)
    b_start = la + 2
    lengths = la + lb + 3
    # Two token ranges per row: A at position 1, B at b_start.
    r_row, r_pos = np.concatenate([rows, rows]), np.concatenate([np.ones(n, np.int64), b_start])
    r_lo, r_len = np.concatenate([a_lo, b_lo]), np.concatenate([la, lb])
    s_row = np.concatenate([rows, rows, rows])
    s_pos = np.concatenate([np.zeros(n, np.int64), la + 1, lengths - 1])
    s_id = np.concatenate([np.full(n, ids.cls), np.full(2 * n, ids.sep)])
    input_ids = _fill(tokens, n, max_len, ids.pad, r_row, r_pos, r_lo, r_len, s_row, s_pos, s_id)
    return Instances(input_ids, lengths.astype(np.int32), b_start.astype(np.int32), labels.astype(np.int64))


def _assemble_packed(tokens, lo, hi, doc_token_start, max_len, ids) -> Instances:
    """[CLS] content [SEP], with a [SEP] before every document start strictly inside (lo, hi):
    the extra separator RoBERTa §4.2 adds between documents (fairseq's </s>)."""
    n = len(lo)
    rows = np.arange(n)
    first = np.searchsorted(doc_token_start, lo, side="right")  # boundaries inside start here
    last = np.searchsorted(doc_token_start, hi, side="left")
    n_sep = last - first
    lengths = (hi - lo) + n_sep + 2
    # Split each instance's content at its inner boundaries: piece p of a row is shifted right by
    # the number of separators before it.
    cuts = np.repeat(rows, n_sep)
    k = np.arange(len(cuts)) - np.repeat(np.cumsum(n_sep) - n_sep, n_sep)  # separator index in its row
    bounds = doc_token_start[np.repeat(first, n_sep) + k]
    p_row = np.concatenate([rows, cuts])
    p_lo = np.concatenate([lo, bounds])
    order = np.lexsort((p_lo, p_row))
    p_row, p_lo = p_row[order], p_lo[order]
    p_hi = np.append(p_lo[1:], 0)
    row_end = np.append(p_row[1:] != p_row[:-1], True)
    p_hi[row_end] = hi[p_row[row_end]]
    p_shift = np.concatenate([np.zeros(n, np.int64), k + 1])[order]
    p_pos = 1 + (p_lo - lo[p_row]) + p_shift
    s_row = np.concatenate([rows, rows, cuts])
    s_pos = np.concatenate([np.zeros(n, np.int64), lengths - 1, 1 + (bounds - lo[cuts]) + k])
    s_id = np.concatenate([np.full(n, ids.cls), np.full(n + len(cuts), ids.sep)])
    input_ids = _fill(tokens, n, max_len, ids.pad, p_row, p_pos, p_lo, p_hi - p_lo, s_row, s_pos, s_id)
    lengths = lengths.astype(np.int32)
    return Instances(input_ids, lengths, lengths.copy(), np.full(n, -100, np.int64))
