"""GLUE from the Hugging Face hub (`glue.source=hf`): the hub's columns and label orders mapped onto
the registry's (glue/tasks.py), so a class index means the same thing whichever source the data came
from (docs/facts.md §3).

HF *datasets* order MNLI differently (entailment, neutral, contradiction) and names the binary classes
(e.g. "unacceptable"/"acceptable"); `split_from_hf` maps those to our order through `TaskSpec.hf_labels`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robablate.glue.tasks import Split, TaskSpec, get_task, split_file
from robablate.errors import ConfigError, DataError

_HF_TEXT_COLUMNS = (("premise", "hypothesis"), ("question1", "question2"), ("question", "sentence"),
                    ("sentence1", "sentence2"), ("sentence", None))


def hf_split_name(split: str) -> str:
    """Our split name -> the hub's: dev -> validation, dev_matched -> validation_matched, ..."""
    return split.replace("dev", "validation", 1) if split.startswith("dev") else split


def _hf_label_table(spec: TaskSpec, names: list[str] | None) -> np.ndarray:
    """HF class index -> our class index, from the dataset's ClassLabel names when it has them, else
    from HF's documented order for the task (spec.hf_labels)."""
    alias = dict(spec.hf_labels)
    if names is None:
        names = [n for n, _ in spec.hf_labels] or list(spec.labels)
    table = []
    for n in names:
        ours = alias.get(n, n)
        if ours not in spec.labels:
            raise DataError(f"hf dataset for {spec.name}: label name {n!r} has no counterpart among "
                            f"{', '.join(spec.labels)}")
        table.append(spec.labels.index(ours))
    return np.asarray(table, dtype=np.int64)


def split_from_hf(task: str | TaskSpec, dataset: Any, name: str = "hf") -> Split:
    """Convert a `datasets.Dataset` with GLUE's hub columns (sentence / sentence1,sentence2 / question,
    sentence / question1,question2 / premise,hypothesis; `label` in HF's order) to a Split in our
    label order. Test splits (all labels -1) get labels=None."""
    spec = get_task(task)
    cols = set(dataset.column_names)
    candidates = [spec.hf_columns, *_HF_TEXT_COLUMNS]
    chosen = next((c for c in candidates
                   if (c[1] is None) != spec.is_pair and c[0] in cols and (c[1] is None or c[1] in cols)), None)
    if chosen is None:
        raise DataError(f"{name}: no text columns for {spec.name} among {sorted(cols)} "
                        f"(expected {spec.hf_columns})")
    texts_a = list(dataset[chosen[0]])
    texts_b = list(dataset[chosen[1]]) if chosen[1] else None
    labels = None
    if "label" in cols:
        raw = np.asarray(dataset["label"])
        if spec.is_regression:
            labels = raw.astype(np.float32)
        elif not (raw == -1).all():  # GLUE test splits on the hub carry label -1
            if (raw < 0).any():
                raise DataError(f"{name}: {int((raw < 0).sum())} rows of {spec.name} have label -1 "
                                f"among labelled rows")
            feature = dataset.features.get("label")
            names = list(feature.names) if getattr(feature, "names", None) else None
            table = _hf_label_table(spec, names)
            if raw.max() >= len(table):
                raise DataError(f"{name}: label {int(raw.max())} out of range for {spec.name} "
                                f"({len(table)} classes)")
            labels = table[raw.astype(np.int64)]
    if not texts_a:
        raise DataError(f"{name}: no rows for {spec.name}")
    return Split(texts_a, texts_b, labels, 0, Path(name))


def load_task_hf(task: str | TaskSpec, split: str, dataset: Any = None) -> Split:
    """`glue.source=hf`: load `split` of `task` from the hub dataset nyu-mll/glue (or convert the
    given `dataset`, which tests pass to stay offline)."""
    spec = get_task(task)
    split_file(spec, split)  # validates the split name
    name = f"hf:nyu-mll/glue/{spec.hf_config}/{hf_split_name(split)}"
    if dataset is None:
        if spec.hf_config is None:
            raise ConfigError(f"glue.source: {spec.name} is not on the hub; use glue.source=local")
        from datasets import load_dataset

        try:
            dataset = load_dataset("nyu-mll/glue", spec.hf_config, split=hf_split_name(split))
        except Exception as e:  # offline, renamed dataset, ...: say what was asked for
            raise DataError(f"{name}: could not load from the Hugging Face hub ({type(e).__name__}: {e})") from e
    return split_from_hf(spec, dataset, name)
