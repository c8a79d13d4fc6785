"""mask_tokens / mask_epoch: proportions (statistical, stated tolerances), specials, labels, static vs
dynamic, independence from batch composition and DataLoader workers, whole-word masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, Dataset

from robablate.data.batching import KEY_EPOCH, KEY_INDEX, BatchPlanSampler
from robablate.data.masking import MaskingSpec, mask_batch, mask_epoch, mask_tokens
from robablate.data.tokenizer import SpecialIds
from robablate.errors import ConfigError

IDS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=8192)
# BERT's released vocab puts the specials elsewhere (0, 100..103): nothing may assume 0..4.
BERT_IDS = SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103, vocab_size=30522)
P = 0.15


def make_batch(rng: np.random.Generator, n_rows: int, length: int, ids: SpecialIds = IDS) -> np.ndarray:
    """[CLS] text [SEP] text [SEP] PAD...: random real tokens with ~1% [UNK]/[MASK] inside the text."""
    pool = ids.non_special()
    tokens = pool[rng.integers(0, len(pool), size=(n_rows, length))]
    sprinkle = rng.random((n_rows, length))
    tokens[sprinkle < 0.005] = ids.unk
    tokens[sprinkle > 0.995] = ids.mask
    lengths = rng.integers(length // 2, length + 1, size=n_rows)
    mid = rng.integers(2, length // 2 - 1, size=n_rows)
    cols = np.arange(length)[None, :]
    tokens[:, 0] = ids.cls
    tokens[cols == mid[:, None]] = ids.sep
    tokens[cols == (lengths - 1)[:, None]] = ids.sep
    tokens[cols >= lengths[:, None]] = ids.pad
    return tokens


def run_mask(tokens: np.ndarray, rows: np.ndarray | None = None, epoch: int = 0, seed: int = 0, **kw):
    rows = np.arange(len(tokens)) if rows is None else rows
    kw.setdefault("ids", IDS)
    return mask_tokens(tokens, rows, epoch, seed, mask_prob=kw.pop("mask_prob", P), **kw)


@pytest.fixture(scope="module")
def big():
    """5 x [4096, 512] (different rows and epochs): ~7.8M non-special tokens, ~1.2M selected."""
    rng = np.random.default_rng(123)
    out = []
    for call in range(5):
        tokens = make_batch(rng, 4096, 512)
        masked, labels = run_mask(tokens, rows=np.arange(4096) + 4096 * call, epoch=call, seed=7)
        out.append((tokens, masked, labels))
    return out


def test_selection_rate_and_80_10_10(big):
    n_candidates = n_sel = n_mask = n_random = n_same = 0
    for tokens, masked, labels in big:
        special = np.isin(tokens, IDS.all())
        sel = labels != -100
        n_candidates += int((~special).sum())
        n_sel += int(sel.sum())
        n_mask += int((masked[sel] == IDS.mask).sum())
        n_same += int((masked[sel] == tokens[sel]).sum())
        n_random += int(((masked[sel] != IDS.mask) & (masked[sel] != tokens[sel])).sum())
    assert n_sel >= 1_000_000
    # Binomial std of the rate is ~0.013 points here, so +-0.1 points is ~8 sigma.
    assert abs(n_sel / n_candidates - P) < 0.001
    # Std ~0.04 points at 1.2M selected; +-0.3 points (docs/facts.md §2). A random draw equal to the original
    # counts as "unchanged" (1 in 8187 of the 10%): far below the tolerance.
    assert n_mask + n_random + n_same == n_sel
    assert abs(n_mask / n_sel - 0.8) < 0.003
    assert abs(n_random / n_sel - 0.1) < 0.003
    assert abs(n_same / n_sel - 0.1) < 0.003


def test_specials_never_selected_and_labels_exact(big):
    for tokens, masked, labels in big:
        special = np.isin(tokens, IDS.all())
        sel = labels != -100
        assert not (sel & special).any()
        assert (labels[sel] == tokens[sel]).all()
        assert (labels[~sel] == -100).all()
        assert (masked[~sel] == tokens[~sel]).all()
        assert masked.dtype == np.int64 and labels.dtype == np.int64


def test_replacements_are_real_tokens_spread_uniformly(big):
    drawn = []
    for tokens, masked, labels in big:
        sel = labels != -100
        changed = sel & (masked != tokens) & (masked != IDS.mask)
        drawn.append(masked[changed])
    drawn = np.concatenate(drawn)
    assert len(drawn) > 100_000
    assert not np.isin(drawn, IDS.all()).any()
    pool = IDS.non_special()
    counts = np.bincount(drawn, minlength=IDS.vocab_size)[pool]
    # ~15 expected per id: every id appears, and counts fit a uniform (chi-square, p > 1e-4).
    assert (counts > 0).all()
    assert stats.chisquare(counts).pvalue > 1e-4


def test_other_special_ids_and_int32_input():
    rng = np.random.default_rng(0)
    tokens = make_batch(rng, 512, 128, BERT_IDS).astype(np.int32)
    masked, labels = run_mask(tokens, ids=BERT_IDS)
    sel = labels != -100
    assert not (sel & np.isin(tokens, BERT_IDS.all())).any()
    assert (masked[sel] == BERT_IDS.mask).mean() > 0.75  # the [MASK] id comes from SpecialIds, not 4
    assert not (masked == 4).any() or (tokens == 4).any()
    replaced = sel & (masked != tokens) & (masked != BERT_IDS.mask)
    assert not np.isin(masked[replaced], BERT_IDS.all()).any()
    assert masked.dtype == np.int64 and masked.max() < BERT_IDS.vocab_size


def test_row_with_nothing_selectable_gets_no_labels():
    # The model's MLM loss averages over selected positions only and is 0 (not NaN) when there are
    # none (models/bert.py), so such rows and batches are allowed.
    tokens = np.array([[IDS.cls, IDS.sep] + [IDS.pad] * 14, [IDS.cls, IDS.unk, IDS.mask, IDS.sep] + [IDS.pad] * 12])
    for epoch in range(50):
        masked, labels = run_mask(tokens, epoch=epoch)
        assert (labels == -100).all()
        assert (masked == tokens).all()


def test_static_masking_gives_dupe_factor_copies_each_seen_equally():
    tokens = make_batch(np.random.default_rng(1), 64, 128)
    seen = [{} for _ in range(len(tokens))]
    for epoch in range(40):
        _, labels = run_mask(tokens, epoch=mask_epoch("static", epoch, 10))
        for row, pattern in enumerate(labels != -100):
            key = pattern.tobytes()
            seen[row][key] = seen[row].get(key, 0) + 1
    for counts in seen:
        assert len(counts) == 10
        assert sorted(counts.values()) == [4] * 10


def test_dynamic_masking_is_fresh_each_epoch():
    tokens = make_batch(np.random.default_rng(2), 64, 128)
    patterns = [run_mask(tokens, epoch=mask_epoch("dynamic", e, None))[1] != -100 for e in range(40)]
    for row in range(len(tokens)):
        assert len({p[row].tobytes() for p in patterns}) == 40
    # ...yet reproducible (numpy ints, as the sampler's keys hold, give the same mask as Python ints),
    # and a different seed gives a different mask.
    again = run_mask(tokens, epoch=np.int64(3), seed=np.int64(0))
    assert (again[1] != -100).tolist() == patterns[3].tolist()
    assert not ((run_mask(tokens, epoch=3, seed=1)[1] != -100) == patterns[3]).all()


def test_mask_depends_only_on_seed_epoch_and_instance_id():
    rng = np.random.default_rng(3)
    tokens = make_batch(rng, 96, 64)
    rows = rng.permutation(10_000)[:96]
    masked, labels = run_mask(tokens, rows, epoch=5, seed=11)
    perm = rng.permutation(96)
    m2, l2 = run_mask(tokens[perm], rows[perm], epoch=5, seed=11)
    assert (m2 == masked[perm]).all() and (l2 == labels[perm]).all()
    for part in np.array_split(np.arange(96), [10, 50]):
        m3, l3 = run_mask(tokens[part], rows[part], epoch=5, seed=11)
        assert (m3 == masked[part]).all() and (l3 == labels[part]).all()
    # Same row in a batch of other rows (and a different batch length is not allowed to matter either
    # for positions it shares): padding the batch wider keeps the row's mask.
    wide = np.full((96, 80), IDS.pad)
    wide[:, :64] = tokens
    m4, l4 = run_mask(wide, rows, epoch=5, seed=11)
    assert (m4[:, :64] == masked).all() and (l4[:, :64] == labels).all() and (l4[:, 64:] == -100).all()
    # The instance id does matter.
    assert not (run_mask(tokens, rows + 1, epoch=5, seed=11)[1] == labels).all()


class _MaskedDataset(Dataset):
    """A pretraining-style dataset: __getitem__ takes a key array and returns a masked batch."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, keys: np.ndarray):
        index, epoch = keys[:, KEY_INDEX], int(keys[0, KEY_EPOCH])
        masked, labels = run_mask(self.tokens[index], index, epoch=mask_epoch("dynamic", epoch, None), seed=5)
        return torch.from_numpy(masked), torch.from_numpy(labels)


def test_dataloader_workers_do_not_change_batches():
    tokens = make_batch(np.random.default_rng(4), 40, 32)
    lengths = np.full(40, 32)

    def batches(workers: int):
        sampler = BatchPlanSampler(lengths, seed=0, batch_size=8, tokens_per_batch=None, accumulate=1,
                                   world_size=1, rank=0, start_step=0, max_steps=12)
        loader = DataLoader(_MaskedDataset(tokens), sampler=sampler, batch_size=None, num_workers=workers)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 12
    for (m0, l0), (m1, l1) in zip(serial, parallel):
        assert torch.equal(m0, m1) and torch.equal(l0, l1)


def test_whole_word_masking_selects_whole_words():
    rng = np.random.default_rng(6)
    tokens = make_batch(rng, 2048, 128)
    word_starts = np.ones(IDS.vocab_size, dtype=bool)
    word_starts[1::3] = False  # every third id is a "##" continuation piece
    word_starts[IDS.all()] = True
    masked, labels = run_mask(tokens, word_starts=word_starts)
    sel = labels != -100
    special = np.isin(tokens, IDS.all())
    # Group real tokens by word (row, running count of word starts along the row); in every group the
    # number selected must be 0 or the group's size.
    word = np.cumsum(word_starts[tokens], axis=1) + np.arange(len(tokens))[:, None] * tokens.shape[1]
    real = ~special
    _, group = np.unique(word[real], return_inverse=True)
    size = np.bincount(group)
    chosen = np.bincount(group, weights=sel[real])
    assert ((chosen == 0) | (chosen == size)).all(), "a word was partly selected"
    n_words, n_selected_words = len(size), int((chosen > 0).sum())
    multi_token_selected = int(((chosen == size) & (size > 1)).sum())
    # Per-word Bernoulli(0.15): std ~0.1 points over ~150K words; tolerance 0.5 points.
    assert abs(n_selected_words / n_words - P) < 0.005
    assert multi_token_selected > 100
    # 80/10/10 stays per token: some selected words are partly [MASK], partly not, and the overall
    # [MASK] share is still ~80% (std ~0.15 points; tolerance 1 point).
    n_mask = np.bincount(group, weights=(masked == IDS.mask)[real])
    assert ((chosen == size) & (n_mask > 0) & (n_mask < size)).sum() > 10
    assert abs((masked[sel] == IDS.mask).mean() - 0.8) < 0.01
    # Token-level masking of the same batch selects differently (whole words are a real change).
    assert not ((run_mask(tokens)[1] != -100) == sel).all()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"mask_prob": 0.0}, "masking.mask_prob"),
        ({"mask_prob": 1.0}, "masking.mask_prob"),
        ({"mask_prob": float("nan")}, "masking.mask_prob"),
        ({"mask_token_frac": -0.1}, "masking.mask_token_frac"),
        ({"random_token_frac": 1.5}, "masking.random_token_frac"),
        ({"mask_token_frac": 0.8, "random_token_frac": 0.3}, "masking.mask_token_frac + masking.random_token_frac"),
    ],
)
def test_bad_fractions_raise_config_error(kwargs, key):
    tokens = make_batch(np.random.default_rng(0), 2, 16)
    with pytest.raises(ConfigError, match=key.replace("+", r"\+")):
        run_mask(tokens, **kwargs)


def test_mask_epoch():
    assert [mask_epoch("static", e, 10) for e in (0, 9, 10, 39)] == [0, 9, 0, 9]
    assert [mask_epoch("dynamic", e, None) for e in (0, 9, 10, 39)] == [0, 9, 10, 39]
    with pytest.raises(ConfigError, match="masking"):
        mask_epoch("sometimes", 0, 10)
    for bad in (None, 0, 2.5):
        with pytest.raises(ConfigError, match="masking.dupe_factor"):
            mask_epoch("static", 3, bad)


def test_masking_spec_is_checked_once_and_masks_like_mask_tokens():
    """The loaders take a MaskingSpec built (and checked) once from the config group; masking through
    it is the same function as the keyword API, and each arm's epoch rule comes with it."""
    with pytest.raises(ConfigError, match="dupe_factor"):
        MaskingSpec.from_config({"name": "static", "mask_prob": 0.15, "dupe_factor": 0})
    with pytest.raises(ConfigError, match="masking"):
        MaskingSpec.from_config({"name": "sometimes", "mask_prob": 0.15})
    spec = MaskingSpec.from_config({"name": "static", "mask_prob": 0.15, "dupe_factor": 10})
    assert MaskingSpec.of(spec) is spec
    tokens = make_batch(np.random.default_rng(5), 16, 64)
    rows = np.arange(16, dtype=np.int64)
    a = mask_batch(tokens, rows, 3, 7, spec, IDS)
    b = mask_tokens(tokens, rows, 3, 7, mask_prob=0.15, ids=IDS)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [spec.epoch(e) for e in (0, 9, 10, 23)] == [mask_epoch("static", e, 10) for e in (0, 9, 10, 23)] == [0, 9, 0, 3]
    assert MaskingSpec("dynamic", 0.15).epoch(23) == 23
