"""mask_tokens(): the one masking function both arms share (BERT §3.1 "Masked LM", RoBERTa §4.1).

Static and dynamic masking differ only in the epoch they pass (see `mask_epoch`), as in fairseq's
MaskTokensDataset, where item i of epoch e is masked with an rng seeded from (seed, e, i).
Seeding one numpy rng per row would need a Python loop over the batch, so instead every random number
is a counter-based hash of (seed, epoch, instance id, position, stream): splitmix64's finaliser
applied to base(seed, epoch) + id * K + (3 * position + 1 + stream) * golden (mod 2^64), with three
streams: selection, the 80/10/10 category, and the random replacement's id. Consequences:

- the mask of row i is a pure function of (seed, epoch, instance_ids[i]) and its tokens: it does not
  depend on which other rows share its batch, on DataLoader workers or on the number of processes,
  so resume and 1-vs-2-process runs see identical masks;
- a whole batch is masked in a handful of vectorised numpy ops (no per-row or per-token loop;
  a per-token Python loop is orders of magnitude too slow, benchmarks.md);
- a fixed validation mask needs nothing special: the caller passes a fixed (seed, epoch), e.g.
  epoch 0, so every arm and every validation round scores the same masked positions.

Choices (where BERT, Hugging Face and fairseq differ; docs/facts.md §2):
- Count rule: per-token Bernoulli(mask_prob) over non-special positions, in both arms (not BERT's
  fixed round(0.15 L) capped at max_predictions). A row can therefore get zero selected tokens;
  its labels are all -100 and the model's MLM loss, a mean over selected positions only, returns 0
  for a batch without any (models/bert.py), never NaN.
- Specials (PAD/UNK/CLS/SEP/MASK and the [SEP] document separator) are never selected (fairseq can
  select <s>/</s>), and a random replacement is drawn from `ids.non_special()` only (BERT and HF can
  draw specials), so a replacement is always a real token.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from robablate.data.tokenizer import SpecialIds
from robablate.errors import ConfigError, int_at_least
from robablate.settings import Spec

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's Weyl increment


def _u64(value: int) -> np.ndarray:
    # 0-d arrays, not np.uint64 scalars: ufuncs dispatch on them ~40% faster, and at [32, 128] the
    # per-call overhead is most of the cost.
    return np.array(value & _M64, dtype=np.uint64)


_C1, _C2 = _u64(0xBF58476D1CE4E5B9), _u64(0x94D049BB133111EB)
_ROW_STEP = _u64(0xD1B54A32D192ED03)  # odd, unrelated to the golden ratio (a Weyl step of its own)
_S30, _S27, _S31, _S32 = _u64(30), _u64(27), _u64(31), _u64(32)
# Streams: position p draws stream s from Weyl counter 3p + 1 + s, so no two draws share a counter.
_SELECT, _CATEGORY, _REPLACE = 0, 1, 2
_N_STREAMS = 3

STRATEGIES = ("static", "dynamic")


def _mix_py(z: int) -> int:
    """splitmix64 finaliser on a Python int (for the scalar seed/epoch key)."""
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (uint64 products wrap mod 2^64 by design)."""
    tmp = np.empty_like(z)
    for shift, mult in ((_S30, _C1), (_S27, _C2)):
        z ^= np.right_shift(z, shift, out=tmp)
        z *= mult
    z ^= np.right_shift(z, _S31, out=tmp)
    return z


def _row_keys(instance_ids: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """One 64-bit key per row: base(seed, epoch) + instance id x an odd constant. Not mixed here: the
    draw's finaliser mixes key + counter, and two (row, position) pairs could share an input only if
    two ids differed by one of ~6L pseudo-random 64-bit values (odds ~1e-16 per pair of rows)."""
    # int(): callers pass numpy ints (the sampler's keys), whose products here would overflow.
    base = _mix_py(_mix_py(int(seed) * _GOLDEN + 1) ^ (int(epoch) * _GOLDEN + 2))
    keys = instance_ids.astype(np.uint64)
    keys *= _ROW_STEP
    keys += _u64(base)
    return keys


@functools.lru_cache(maxsize=16)
def _counters(length: int) -> np.ndarray:
    """uint64 [3, length]: the Weyl counter of (stream s, position p) is (3p + 1 + s) * golden."""
    steps = np.arange(_N_STREAMS * length, dtype=np.uint64).reshape(length, _N_STREAMS).T + np.uint64(1)
    steps = np.ascontiguousarray(steps * _u64(_GOLDEN))
    steps.flags.writeable = False
    return steps


def _draw(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """64 uniform random bits per (row key, counter); the arguments broadcast."""
    return _mix(keys + counters)


@functools.lru_cache(maxsize=64)
def _below(prob: float) -> np.ndarray:
    """Threshold t with P(draw < t) = prob for a uniform 64-bit draw (integer compare, no float pass)."""
    return _u64(min(int(prob * 2.0**64), _M64))


def _check_fracs(mask_prob: float, mask_token_frac: float, random_token_frac: float) -> None:
    for key, value in (("masking.mask_prob", mask_prob), ("masking.mask_token_frac", mask_token_frac),
                       ("masking.random_token_frac", random_token_frac)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"masking.mask_prob must be in (0, 1), got {mask_prob!r}")
    for key, value in (("masking.mask_token_frac", mask_token_frac), ("masking.random_token_frac", random_token_frac)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {value!r}")
    if mask_token_frac + random_token_frac > 1.0 + 1e-12:
        raise ConfigError(
            "masking.mask_token_frac + masking.random_token_frac must be <= 1 (the rest stay unchanged), "
            f"got {mask_token_frac!r} + {random_token_frac!r}"
        )


def _check_strategy(strategy: Any, dupe_factor: Any) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"masking must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy == "static":
        int_at_least(dupe_factor, "masking.dupe_factor", why="copies of static masks")


@dataclass(frozen=True)
class MaskingSpec(Spec):
    """The `masking` config group, checked once when built: the data loaders take this, not the config,
    so nothing is re-checked per batch."""

    name: str
    mask_prob: float
    mask_token_frac: float = 0.8
    random_token_frac: float = 0.1
    dupe_factor: int | None = None
    whole_word: bool = False

    def __post_init__(self) -> None:
        _check_strategy(self.name, self.dupe_factor)
        _check_fracs(self.mask_prob, self.mask_token_frac, self.random_token_frac)

    @classmethod
    def from_config(cls, cfg_masking: Mapping[str, Any]) -> "MaskingSpec":
        """Every `masking` rule (strategy, dupe_factor, the 15% / 80-10-10 fractions); config.validate
        calls this before any compute."""
        get = cfg_masking.get
        return cls(name=get("name"), mask_prob=get("mask_prob"), mask_token_frac=get("mask_token_frac", 0.8),
                   random_token_frac=get("random_token_frac", 0.1), dupe_factor=get("dupe_factor"),
                   whole_word=bool(get("whole_word", False)))

    def epoch(self, epoch: int) -> int:
        """The epoch number to mask with (see `mask_epoch`)."""
        return _copy_epoch(self.name, epoch, self.dupe_factor)


@functools.lru_cache(maxsize=8)
def _vocab_tables(ids: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """(may-be-selected bool[vocab], replacement pool int64), cached: rebuilding them costs more than
    masking a batch."""
    is_candidate = np.ones(ids.vocab_size, dtype=bool)
    is_candidate[ids.all()] = False
    pool = ids.non_special()
    is_candidate.flags.writeable = pool.flags.writeable = False  # shared by every call
    return is_candidate, pool


def mask_tokens(
    input_ids: np.ndarray,
    instance_ids: np.ndarray,
    epoch: int,
    seed: int,
    *,
    mask_prob: float,
    mask_token_frac: float = 0.8,
    random_token_frac: float = 0.1,
    ids: SpecialIds,
    word_starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask a padded batch for MLM. Returns (masked_ids int64 [B, L], labels int64 [B, L]).

    input_ids: int [B, L] padded with ids.pad; instance_ids: int [B], the dataset index of each row.
    labels hold the original id at selected positions and -100 elsewhere (loss only on those, BERT §3.1).
    word_starts: optional bool[vocab] (tokenizer.word_start_table) for whole-word masking: selection
    is drawn once per word, keyed by the word's first position, and every token of a selected word is
    selected; the 80/10/10 choice stays per token, as in BERT's whole-word-masking release.
    """
    _check_fracs(mask_prob, mask_token_frac, random_token_frac)
    return _mask(input_ids, instance_ids, epoch, seed, mask_prob, mask_token_frac, random_token_frac, ids, word_starts)


def mask_batch(input_ids: np.ndarray, instance_ids: np.ndarray, epoch: int, seed: int, spec: MaskingSpec,
               ids: SpecialIds, word_starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`mask_tokens` with a MaskingSpec (already checked when it was built): the data loaders' call."""
    return _mask(input_ids, instance_ids, epoch, seed, spec.mask_prob, spec.mask_token_frac,
                 spec.random_token_frac, ids, word_starts)


def _mask(input_ids, instance_ids, epoch, seed, mask_prob, mask_token_frac, random_token_frac, ids,
          word_starts):
    tokens = np.asarray(input_ids)
    rows = np.asarray(instance_ids)
    if tokens.ndim != 2 or rows.shape != (tokens.shape[0],):
        raise ValueError(f"input_ids must be [B, L] and instance_ids [B]; got {tokens.shape} and {rows.shape}")
    tokens = tokens.astype(np.int64, copy=False)
    is_candidate, pool = _vocab_tables(ids)
    try:
        # The table lookup doubles as the range check (an explicit min/max pass cost ~20% of a call).
        # Negative ids would wrap here, but the embedding lookup and the loss reject them.
        candidate = is_candidate[tokens]
    except IndexError:
        raise ValueError(f"input_ids must lie in [0, {ids.vocab_size}); got max {tokens.max()}") from None

    length = tokens.shape[1]
    keys = _row_keys(rows, epoch, seed)
    counters = _counters(length)

    select_draw = _draw(keys[:, None], counters[_SELECT][None, :])
    if word_starts is not None:
        word_starts = np.asarray(word_starts, dtype=bool)
        if word_starts.shape != (ids.vocab_size,):
            raise ValueError(f"word_starts must be bool[{ids.vocab_size}], got shape {word_starts.shape}")
        # Each token takes the selection draw of its word's first position (last start at or before it).
        starts = np.where(word_starts[tokens], np.arange(length), 0)
        np.maximum.accumulate(starts, axis=1, out=starts)
        select_draw = np.take_along_axis(select_draw, starts, axis=1)
    selected = select_draw < _below(mask_prob)
    selected &= candidate

    # Category and replacement draws only at the selected ~15%, on flat indices (1-D fancy indexing
    # is several times faster than 2-D). Each draw depends only on its own (row, position, stream).
    flat = np.flatnonzero(selected)
    sel_rows, sel_pos = np.divmod(flat, length)
    # Both per-token streams in one call: row 0 = category, row 1 = replacement choice (`take`:
    # 2-D fancy indexing here costs more than the whole hash).
    category, choice = _draw(keys[sel_rows], counters[_CATEGORY : _REPLACE + 1].take(sel_pos, axis=1))
    to_mask = category < _below(mask_token_frac)
    to_random = category < _below(mask_token_frac + random_token_frac)
    to_random ^= to_mask  # below both thresholds = [MASK]; between them = random token

    masked = tokens.copy(order="C")  # C order: the flat view below must alias it
    out = masked.reshape(-1)
    out[flat[to_mask]] = ids.mask
    # Multiply-shift maps the top 32 bits to [0, len(pool)); bias < len(pool) / 2^32 (~2e-6 at 8K).
    choice >>= _S32
    choice *= _u64(len(pool))
    choice >>= _S32
    out[flat[to_random]] = pool[choice[to_random]]

    labels = np.where(selected, tokens, -100)
    return masked, labels


def mask_epoch(strategy: str, epoch: int, dupe_factor: int | None) -> int:
    """The epoch number to mask with: the only difference between the two arms.

    static (BERT §3.1, RoBERTa §4.1): the data is kept as dupe_factor masked copies, so epoch e sees
    copy e % dupe_factor and over E epochs each copy is seen E / dupe_factor times (10 copies over
    40 epochs in RoBERTa). This is fairseq's view of static masking: the same code, epoch held to a
    copy index. dynamic (RoBERTa §4.1): a fresh mask every epoch.
    """
    _check_strategy(strategy, dupe_factor)
    return _copy_epoch(strategy, epoch, dupe_factor)


def _copy_epoch(strategy: str, epoch: int, dupe_factor: int | None) -> int:
    return int(epoch) % int(dupe_factor) if strategy == "static" else int(epoch)
