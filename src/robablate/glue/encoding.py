"""GLUE examples -> token ids, cached on disk: the input side of fine-tuning.

Inputs are `[CLS] a [SEP] b [SEP]` with token_type_ids 0 / 1 (BERT §3, Figure 2), built here from the
tokenizer's ids without special tokens, so any tokenizer (WordPiece or byte BPE, with or without a
post-processor) gets BERT's layout. Pair truncation and segment ids are the pretraining formats' own
(data.formats.truncation_counts, data.formats.token_type_ids): one implementation of BERT's rules.
Token ids are cached per (task, data, tokenizer, max_len, caps) under cache_dir/glue/.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robablate.data.formats import token_type_ids, truncation_counts
from robablate.glue.tasks import Split, TaskSpec, dev_splits, get_task, load_task, submission_splits
from robablate.glue.hub import load_task_hf
from robablate.data.tokenizer import special_ids, tokenizer_fingerprint
from robablate.errors import ConfigError
from robablate.io import atomic_dir, cache_key

CACHE_VERSION = 1  # bump when the encoding below changes: old caches are then ignored
SUBSET_SEED = 0    # max_*_examples draws the same rows for every arm and seed (paired comparisons)
SOURCES = ("local", "hf")  # glue.source: the official GLUE folder layout, or the Hugging Face hub


def check_source(source: Any) -> str:
    """glue.source (the one place it is checked)."""
    if source not in SOURCES:
        raise ConfigError(f"glue.source must be local or hf, got {source!r}")
    return str(source)


@dataclass
class EncodedSplit:
    """Token ids of one split, flat: example i = tokens[offsets[i]:offsets[i+1]] (with [CLS]/[SEP]);
    segment B (token type 1) starts at b_start[i] (== its length for single sentences)."""

    tokens: np.ndarray      # int32
    offsets: np.ndarray     # int64 [N + 1]
    b_start: np.ndarray     # int32 [N]
    labels: np.ndarray | None
    rows: np.ndarray        # int64 [N]: row of each example in the file (after any subsetting)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        """Dynamically padded batch (pad to the longest example, not to max_len)."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.offsets[idx + 1] - self.offsets[idx]
        L = int(lengths.max())
        ids = np.full((len(idx), L), pad_id, dtype=np.int64)
        for r, i in enumerate(idx):
            ids[r, :lengths[r]] = self.tokens[self.offsets[i]:self.offsets[i + 1]]
        pos = np.arange(L)[None, :]
        out = {"input_ids": torch.from_numpy(ids),
               "attention_mask": torch.from_numpy((pos < lengths[:, None]).astype(np.int64)),
               "token_type_ids": torch.from_numpy(token_type_ids(self.b_start[idx], lengths, L))}
        if self.labels is not None:
            out["labels"] = torch.from_numpy(self.labels[idx])
        return out



def encode_split(split: Split, tokenizer: Any, max_len: int) -> EncodedSplit:
    """`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, truncated to max_len (BERT's longest-first rule)."""
    ids = special_ids(tokenizer)
    cls, sep = ids.cls, ids.sep

    def ids_of(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"] if texts else []

    a = ids_of(split.texts_a)
    la = np.fromiter((len(x) for x in a), dtype=np.int64, count=len(a))
    if split.texts_b is None:
        ta, tb, b = np.minimum(la, max_len - 2), None, None
    else:
        b = ids_of(split.texts_b)
        lb = np.fromiter((len(x) for x in b), dtype=np.int64, count=len(b))
        cut_a, cut_b = truncation_counts(la, lb, np.full(len(la), max_len - 3))
        ta, tb = la - cut_a, lb - cut_b
    pieces: list[list[int]] = []
    b_start = np.empty(len(a), dtype=np.int32)
    for i in range(len(a)):
        seq = [cls, *a[i][:ta[i]], sep]
        b_start[i] = len(seq)
        if b is not None:
            seq += [*b[i][:tb[i]], sep]
        pieces.append(seq)
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32, count=int(offsets[-1]))
    return EncodedSplit(tokens, offsets, b_start, split.labels, np.arange(len(a), dtype=np.int64))



def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def subset(split: Split, n: int | None) -> tuple[Split, np.ndarray]:
    """At most n rows, drawn with a fixed seed (files can be sorted, e.g. CoLA by source), in file order."""
    rows = np.arange(len(split), dtype=np.int64)
    if n is not None and n < len(split):
        rows = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(split))[:n])
    if len(rows) == len(split):
        return split, rows
    pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
    labels = split.labels[rows] if split.labels is not None else None
    return Split(pick(split.texts_a), pick(split.texts_b) if split.texts_b is not None else None,
                 labels, split.n_skipped, split.path), rows


def test_splits_present(task: str | TaskSpec, data_dir: str | Path | None, source: str = "local") -> list[str]:
    """The task's test splits (GLUE-server submission) when all of its test files are there: local
    files under data_dir, or the hub's test splits; [] for the synthetic tasks."""
    spec = get_task(task)
    names = submission_splits(spec)
    if source == "hf":
        return names
    if not names or data_dir is None:
        return []
    return names if all((Path(data_dir) / spec.folder / f"{s}.tsv").is_file() for s in names) else []


def load_encoded(task: str | TaskSpec, data_dir: str | Path | None, tokenizer: Any, max_len: int,
                 cache_dir: str | Path | None = None, source: str = "local",
                 max_train: int | None = None, max_eval: int | None = None,
                 with_test: bool = False) -> dict[str, EncodedSplit]:
    """Train and dev splits of `task` (and its test splits with `with_test`, when present), tokenised
    once and cached under cache_dir/glue/. max_train / max_eval cap train / dev; test splits are never
    capped (a submission needs every row)."""
    spec = get_task(task)
    names = ["train", *dev_splits(spec), *(test_splits_present(spec, data_dir, source) if with_test else [])]
    source = check_source(source)
    caps = {s: (max_train if s == "train" else None if s.startswith("test") else max_eval) for s in names}
    if source == "local":
        if data_dir is None:
            raise ConfigError(f"glue.data_dir: {spec.name} needs a folder in the official GLUE layout "
                              f"(or glue.source=hf)")
        files = {s: Path(data_dir) / spec.folder / f"{s}.tsv" for s in names}
        data_id: Any = {s: _file_digest(p) if p.is_file() else str(p) for s, p in files.items()}
    else:
        data_id = ["nyu-mll/glue", spec.hf_config]

    def read_all() -> dict[str, EncodedSplit]:
        out = {}
        for s in names:
            split = load_task(data_dir, spec, s) if source == "local" else load_task_hf(spec, s)
            split, rows = subset(split, caps[s])
            enc = encode_split(split, tokenizer, max_len)
            enc.rows = rows
            out[s] = enc
        return out

    if cache_dir is None:
        return read_all()
    key = cache_key("glue", CACHE_VERSION, spec.name, data_id, tokenizer_fingerprint(tokenizer), max_len, caps)
    folder = Path(cache_dir) / "glue" / f"{spec.name}-{key}"

    def build(tmp: Path) -> None:
        for s, enc in read_all().items():
            arrays = {k: v for k, v in asdict(enc).items() if v is not None}
            np.savez(tmp / f"{s}.npz", **arrays)

    atomic_dir(folder, build)
    out = {}
    for s in names:
        with np.load(folder / f"{s}.npz") as z:
            out[s] = EncodedSplit(z["tokens"], z["offsets"], z["b_start"],
                                  z["labels"] if "labels" in z.files else None, z["rows"])
    return out


class PaddedBatches:
    """collate_fn: a list of example indices -> a padded batch (picklable, no lambda)."""

    def __init__(self, enc: EncodedSplit, pad_id: int):
        self.enc, self.pad_id = enc, pad_id

    def __call__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        return self.enc.batch(np.asarray(idx), self.pad_id)
