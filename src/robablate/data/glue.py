"""GLUE task registry and readers for the official TSV layouts (and for `glue.source=hf`).

One place for each GLUE fact: folder and file names, which columns hold the texts and the label,
the label order, the metrics, the GLUE-server submission names. Everything else (metrics.py,
data/glue_encoding.py, readouts/glue.py, the report) asks `get_task(name)`.

Label orders follow the GLUE/Hugging Face *processors* (transformers' `glue_processors`), which are
also what the label strings in the TSV files and the GLUE server use:
  CoLA/SST-2/MRPC/QQP/WNLI ("0", "1"); QNLI/RTE ("entailment", "not_entailment");
  MNLI ("contradiction", "entailment", "neutral").
HF *datasets* order MNLI differently (entailment, neutral, contradiction) and names the binary classes
(e.g. "unacceptable"/"acceptable"); `split_from_hf` maps those to our order through `hf_labels`, so a
class index means the same thing whichever source the data came from (docs/facts.md §3).

Readers split on "\\t" only, never with CSV quoting: MNLI, QQP and QNLI hold unbalanced `"`, and a
CSV reader silently glues the following rows into one field (QNLI dev then has fewer than 5,463 rows).
Files are read as bytes and split on b"\\n" only: str.splitlines() would also break lines at
\\x0b, \\x1c, U+2028 and friends that occur inside real sentences.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robablate.errors import ConfigError, DataError


@dataclass(frozen=True)
class Layout:
    """Columns of one TSV layout (0-based; label -1 = last column, None = no label column)."""

    header: bool
    text_a: int
    text_b: int | None
    label: int | None

    @property
    def min_fields(self) -> int:
        """Fields a row needs; with the label in the last column it must come after the texts."""
        cols = [c for c in (self.text_a, self.text_b, self.label) if c is not None and c >= 0]
        return max(cols) + 1 + (1 if self.label == -1 else 0)


@dataclass(frozen=True)
class TaskSpec:
    """Everything robablate needs to know about one fine-tuning task."""

    name: str
    folder: str                      # folder under glue.data_dir (official release names)
    layout: Layout                   # train and dev files
    test_layout: Layout | None       # test files (no labels); None when the task has no test files
    labels: tuple[str, ...]          # label strings as in the TSV, in our class-index order; () = regression
    metrics: tuple[str, ...]         # metric names as task_metrics returns them
    main_metric: str                 # the one a table shows (the BERT-paper column)
    dev_files: tuple[str, ...] = ("dev.tsv",)
    test_files: tuple[str, ...] = ("test.tsv",)
    submission_files: tuple[str, ...] = ()  # GLUE-server file per test file (same order)
    hf_config: str | None = None     # config of the hub dataset nyu-mll/glue
    hf_columns: tuple[str, str | None] = ("sentence", None)
    hf_labels: tuple[tuple[str, str], ...] = ()  # (HF ClassLabel name, our label) in HF's index order
    synthetic: bool = False          # robablate's synthetic tasks: never part of a GLUE score

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        """Output units of the head: 1 for regression (MSE), else the number of classes."""
        return 1 if self.is_regression else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return self.layout.text_b is not None

    @property
    def submission_labels(self) -> tuple[str, ...]:
        """Label strings the GLUE server expects per class index: the TSV's own strings."""
        return self.labels


# --- the registry ---------------------------------------------------------------------------------

_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_NLI2_HF = (("entailment", "entailment"), ("not_entailment", "not_entailment"))
_PAIR = Layout(header=True, text_a=1, text_b=2, label=3)        # QNLI / RTE / WNLI train+dev
_PAIR_TEST = Layout(header=True, text_a=1, text_b=2, label=None)  # index, text_a, text_b
_STSB = Layout(header=True, text_a=7, text_b=8, label=9)
_STSB_TEST = Layout(header=True, text_a=7, text_b=8, label=None)
_SINGLE = Layout(header=True, text_a=0, text_b=None, label=1)   # SST-2: sentence, label
_SINGLE_TEST = Layout(header=True, text_a=1, text_b=None, label=None)  # CoLA / SST-2 test: index, sentence

GLUE_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("CoLA", "CoLA",
             # no header: source, label, original judgement, sentence
             layout=Layout(header=False, text_a=3, text_b=None, label=1),
             test_layout=_SINGLE_TEST,
             labels=_BIN, metrics=("mcc",), main_metric="mcc",
             submission_files=("CoLA.tsv",), hf_config="cola", hf_columns=("sentence", None),
             hf_labels=(("unacceptable", "0"), ("acceptable", "1"))),
    TaskSpec("SST-2", "SST-2", layout=_SINGLE,
             test_layout=_SINGLE_TEST,
             labels=_BIN, metrics=("acc",), main_metric="acc",
             submission_files=("SST-2.tsv",), hf_config="sst2", hf_columns=("sentence", None),
             hf_labels=(("negative", "0"), ("positive", "1"))),
    TaskSpec("MRPC", "MRPC",
             # Quality, #1 ID, #2 ID, #1 String, #2 String (train/dev start with a UTF-8 BOM)
             layout=Layout(header=True, text_a=3, text_b=4, label=0),
             test_layout=Layout(header=True, text_a=3, text_b=4, label=None),  # index, #1 ID, #2 ID, ...
             labels=_BIN, metrics=("f1", "acc"), main_metric="f1",
             submission_files=("MRPC.tsv",), hf_config="mrpc", hf_columns=("sentence1", "sentence2"),
             hf_labels=(("not_equivalent", "0"), ("equivalent", "1"))),
    TaskSpec("STS-B", "STS-B", layout=_STSB, test_layout=_STSB_TEST,  # score 0..5 in column 9
             labels=(), metrics=("pearson", "spearman"), main_metric="spearman",
             submission_files=("STS-B.tsv",), hf_config="stsb", hf_columns=("sentence1", "sentence2")),
    TaskSpec("QQP", "QQP",
             # id, qid1, qid2, question1, question2, is_duplicate
             layout=Layout(header=True, text_a=3, text_b=4, label=5),
             test_layout=Layout(header=True, text_a=1, text_b=2, label=None),  # id, question1, question2
             labels=_BIN, metrics=("f1", "acc"), main_metric="f1",
             submission_files=("QQP.tsv",), hf_config="qqp", hf_columns=("question1", "question2"),
             hf_labels=(("not_duplicate", "0"), ("duplicate", "1"))),
    TaskSpec("MNLI", "MNLI",
             # index, promptID, pairID, genre, 4 parses, sentence1, sentence2, label1[..label5], gold_label
             layout=Layout(header=True, text_a=8, text_b=9, label=-1),
             test_layout=Layout(header=True, text_a=8, text_b=9, label=None),
             labels=("contradiction", "entailment", "neutral"), metrics=("acc_m", "acc_mm"),
             main_metric="acc_m",
             dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
             test_files=("test_matched.tsv", "test_mismatched.tsv"),
             submission_files=("MNLI-m.tsv", "MNLI-mm.tsv"), hf_config="mnli",
             hf_columns=("premise", "hypothesis"),
             hf_labels=(("entailment", "entailment"), ("neutral", "neutral"),
                        ("contradiction", "contradiction"))),
    TaskSpec("QNLI", "QNLI", layout=_PAIR, test_layout=_PAIR_TEST,  # index, question, sentence, label
             labels=_NLI2, metrics=("acc",), main_metric="acc",
             submission_files=("QNLI.tsv",), hf_config="qnli", hf_columns=("question", "sentence"),
             hf_labels=_NLI2_HF),
    TaskSpec("RTE", "RTE", layout=_PAIR, test_layout=_PAIR_TEST,  # index, sentence1, sentence2, label
             labels=_NLI2, metrics=("acc",), main_metric="acc",
             submission_files=("RTE.tsv",), hf_config="rte", hf_columns=("sentence1", "sentence2"),
             hf_labels=_NLI2_HF),
    TaskSpec("WNLI", "WNLI", layout=_PAIR, test_layout=_PAIR_TEST,  # label 1 = entailment
             labels=_BIN, metrics=("acc",), main_metric="acc",
             submission_files=("WNLI.tsv",), hf_config="wnli", hf_columns=("sentence1", "sentence2"),
             hf_labels=(("not_entailment", "0"), ("entailment", "1"))),
)

# Synthetic tasks written by robablate.data.synthetic in the layouts named (train.tsv + dev.tsv only).
SYNTHETIC_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("SYN-TOPIC", "SYN-TOPIC", layout=_SINGLE, test_layout=None,  # SST-2 layout
             labels=("0", "1", "2", "3"), metrics=("acc",), main_metric="acc",
             test_files=(), synthetic=True),
    TaskSpec("SYN-NEXT", "SYN-NEXT", layout=_PAIR, test_layout=None,  # RTE layout
             labels=_NLI2, metrics=("acc",), main_metric="acc", test_files=(), synthetic=True),
    TaskSpec("SYN-SIM", "SYN-SIM", layout=_STSB, test_layout=None,  # STS-B layout, regression
             labels=(), metrics=("pearson", "spearman"), main_metric="spearman",
             test_files=(), synthetic=True),
    TaskSpec("SYN-ORDER", "SYN-ORDER",  # CoLA layout (no header), Matthews correlation
             layout=Layout(header=False, text_a=3, text_b=None, label=1), test_layout=None,
             labels=_BIN, metrics=("mcc",), main_metric="mcc", test_files=(), synthetic=True),
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in GLUE_TASKS + SYNTHETIC_TASKS}
GLUE_TASK_NAMES: tuple[str, ...] = tuple(t.name for t in GLUE_TASKS)


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The task called `name` (exact, or case/hyphen-insensitive: "sst2", "sts-b", "mnli")."""
    if isinstance(name, TaskSpec):
        return name
    if name in TASKS:
        return TASKS[name]
    by_norm = {_norm(k): v for k, v in TASKS.items()}
    if isinstance(name, str) and _norm(name) in by_norm:
        return by_norm[_norm(name)]
    raise ConfigError(f"glue.tasks: unknown task {name!r}; valid tasks: {', '.join(TASKS)}")


# --- splits ---------------------------------------------------------------------------------------

def _stem(filename: str) -> str:
    return filename.removesuffix(".tsv")


def dev_splits(task: str | TaskSpec) -> list[str]:
    """Dev split names: ["dev"], or for MNLI ["dev_matched", "dev_mismatched"]."""
    return [_stem(f) for f in get_task(task).dev_files]


def submission_splits(task: str | TaskSpec) -> list[str]:
    """Test split names (unlabelled, for the GLUE server): ["test"], MNLI ["test_matched",
    "test_mismatched"], synthetic []."""
    return [_stem(f) for f in get_task(task).test_files]


def splits(task: str | TaskSpec) -> list[str]:
    return ["train", *dev_splits(task), *submission_splits(task)]


def split_file(task: str | TaskSpec, split: str) -> str:
    """File name of `split` (ConfigError listing the valid splits for this task otherwise)."""
    spec = get_task(task)
    valid = splits(spec)
    if split not in valid:
        raise ConfigError(f"GLUE split {split!r} does not exist for {spec.name}; valid splits: {', '.join(valid)}")
    return f"{split}.tsv"


# --- reading TSV files ----------------------------------------------------------------------------

@dataclass
class Split:
    """One split of a task: texts, labels (int64 class index / float32 score / None for test)."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray | None
    n_skipped: int
    path: Path

    def __len__(self) -> int:
        return len(self.texts_a)


def iter_rows(path: Path):
    """Yield (line number, fields) of every non-blank line of a TSV file: bytes split on b"\\n" only,
    UTF-8, a leading BOM stripped (MRPC's header starts with one), trailing "\\r" dropped."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {lineno} (byte offset {offset + e.start}) is not valid UTF-8") from None
            offset += len(raw)
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            line = line.rstrip("\r\n")
            if line:  # a blank line (e.g. a trailing empty line) carries no row
                yield lineno, line.split("\t")


def read_tsv(path: Path, spec: TaskSpec, layout: Layout, *, skip_malformed: bool = False) -> Split:
    """Read one file in `layout`; short rows raise DataError, or with skip_malformed are counted,
    skipped and reported in a warning (QQP's known malformed rows)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: GLUE file not found ({spec.name} needs {spec.folder}/{path.name})")
    label_ix = {s: i for i, s in enumerate(spec.labels)}
    need = layout.min_fields
    texts_a: list[str] = []
    texts_b: list[str] = []
    labels: list[Any] = []
    skipped: list[int] = []
    rows = iter_rows(path)
    if layout.header:
        # A header with too few fields means a file in another layout (e.g. a test file saved as
        # dev.tsv): say so here rather than on the first data row.
        lineno, fields = next(rows, (1, None))
        if fields is not None and len(fields) < need:
            raise DataError(f"{path}: header (line {lineno}) has {len(fields)} tab-separated fields, "
                            f"expected at least {need} ({spec.name} layout)")
    for lineno, fields in rows:
        if len(fields) < need:
            if skip_malformed:
                skipped.append(lineno)
                continue
            raise DataError(f"{path}: line {lineno} has {len(fields)} tab-separated fields, "
                            f"expected at least {need} ({spec.name} layout)")
        texts_a.append(fields[layout.text_a])
        if layout.text_b is not None:
            texts_b.append(fields[layout.text_b])
        if layout.label is not None:
            value = fields[layout.label].strip()
            if spec.is_regression:
                try:
                    score = float(value)
                except ValueError:
                    score = float("nan")
                if not np.isfinite(score):  # a NaN target would turn the MSE loss into NaN
                    raise DataError(f"{path}: line {lineno}: score {value!r} is not a finite number "
                                    f"({spec.name} is a regression task)")
                labels.append(score)
            elif value in label_ix:
                labels.append(label_ix[value])
            else:
                raise DataError(f"{path}: line {lineno}: unknown label {value!r} for {spec.name}; "
                                f"allowed labels: {', '.join(spec.labels)}")
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"{path}: skipped {len(skipped)} malformed rows with fewer than {need} "
                      f"tab-separated fields (lines {shown})", stacklevel=2)
    if not texts_a:
        raise DataError(f"{path}: no rows (an empty {spec.name} split cannot be trained or evaluated)")
    y = None
    if layout.label is not None:
        y = np.asarray(labels, dtype=np.float32 if spec.is_regression else np.int64)
    return Split(texts_a, texts_b if layout.text_b is not None else None, y, len(skipped), path)


def load_task(data_dir: str | Path, task: str | TaskSpec, split: str) -> Split:
    """Read `split` (train / dev / dev_matched / dev_mismatched / test / test_matched / ...) of `task`
    from `data_dir/<folder>/<split>.tsv` in the official layout."""
    spec = get_task(task)
    filename = split_file(spec, split)
    folder = Path(data_dir) / spec.folder
    if not folder.is_dir():
        raise DataError(f"glue.data_dir: task folder {folder} not found (folders are named as in the "
                        f"official GLUE release: {' '.join(GLUE_TASK_NAMES)})")
    is_test = split.startswith("test")
    layout = spec.test_layout if is_test else spec.layout
    assert layout is not None  # split_file refused test splits of tasks without test files
    # QQP is the one task whose official files hold malformed short rows; elsewhere they are errors.
    return read_tsv(folder / filename, spec, layout, skip_malformed=spec.name == "QQP")


# --- GLUE from the Hugging Face hub (glue.source=hf) ------------------------------------------------

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


# --- GLUE-server submission files -------------------------------------------------------------------

def submission_text(task: str | TaskSpec, preds: np.ndarray) -> str:
    """Body of a GLUE-server file: "index\\tprediction" with the TSV label strings (STS-B: the
    score clipped to the 0..5 range the server accepts)."""
    spec = get_task(task)
    preds = np.asarray(preds)
    if spec.is_regression:
        values = [f"{v:.3f}" for v in np.clip(preds.astype(np.float64).reshape(-1), 0.0, 5.0)]
    else:
        values = [spec.submission_labels[int(p)] for p in preds.reshape(-1)]
    return "index\tprediction\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values))
