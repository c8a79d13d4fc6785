"""GLUE task registry and readers for the official TSV layouts (and for `glue.source=hf`).

One place for each GLUE fact: folder and file names, which columns hold the texts and the label,
the label order, the metrics, the GLUE-server submission names. Everything else (glue/metrics.py,
glue/encoding.py, glue/readout.py, the report) asks `get_task(name)`.

Label orders follow the GLUE/Hugging Face *processors* (transformers' `glue_processors`), which are
also what the label strings in the TSV files and the GLUE server use:
  CoLA/SST-2/MRPC/QQP/WNLI ("0", "1"); QNLI/RTE ("entailment", "not_entailment");
  MNLI ("contradiction", "entailment", "neutral").
HF *datasets* order MNLI differently (entailment, neutral, contradiction) and names the binary classes
(e.g. "unacceptable"/"acceptable"); glue/hub.py maps those to our order through `hf_labels`, so a
class index means the same thing whichever source the data came from (docs/facts.md §3).

Readers split on "\\t" only, never with CSV quoting: MNLI, QQP and QNLI hold unbalanced `"`, and a
CSV reader silently glues the following rows into one field (QNLI dev then has fewer than 5,463 rows).
Files are read as bytes and split on b"\\n" only: str.splitlines() would also break lines at
\\x0b, \\x1c, U+2028 and friends that occur inside real sentences.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
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

    def unlabelled(self) -> "Layout":
        """The same columns without the label: most test files (those that add an index column say so)."""
        return replace(self, label=None)


@dataclass(frozen=True)
class TaskSpec:
    """Everything robablate needs to know about one fine-tuning task."""

    name: str                        # also its folder under glue.data_dir (official release names)
    layout: Layout                   # train and dev files
    labels: tuple[str, ...]          # label strings as in the TSV, in our class-index order; () = regression
    metrics: tuple[str, ...]         # metric names as task_metrics returns them
    main_metric: str = ""            # the one a table shows (the BERT-paper column); "" = the first metric
    test_layout: Layout | None = None  # test files (no labels); None = layout.unlabelled() (no test files: None)
    dev_files: tuple[str, ...] = ("dev.tsv",)
    test_files: tuple[str, ...] = ("test.tsv",)
    submission_files: tuple[str, ...] = ()  # GLUE-server file per test file (same order); () = <name>.tsv
    hf_config: str | None = None     # config of the hub dataset nyu-mll/glue
    hf_columns: tuple[str, str | None] = ("sentence", None)
    hf_labels: tuple[tuple[str, str], ...] = ()  # (HF ClassLabel name, our label) in HF's index order
    synthetic: bool = False          # robablate's synthetic tasks: never part of a GLUE score

    def __post_init__(self) -> None:
        derived = {"main_metric": self.main_metric or self.metrics[0],
                   "test_layout": self.test_layout or (self.layout.unlabelled() if self.test_files else None),
                   "submission_files": self.submission_files or tuple(f"{self.name}.tsv" for _ in self.test_files)}
        for key, value in derived.items():
            object.__setattr__(self, key, value)

    @property
    def folder(self) -> str:
        return self.name

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
_PAIR = Layout(header=True, text_a=1, text_b=2, label=3)          # QNLI / RTE / WNLI: index, a, b, label
_SINGLE_TEST = Layout(header=True, text_a=1, text_b=None, label=None)  # CoLA / SST-2 test: index, sentence


def _binary(negative: str, positive: str) -> tuple[tuple[str, str], ...]:
    """hf_labels of a ("0", "1") task whose hub ClassLabel names the two classes."""
    return ((negative, "0"), (positive, "1"))


GLUE_TASKS: tuple[TaskSpec, ...] = (
    # no header: source, label, original judgement, sentence
    TaskSpec("CoLA", Layout(header=False, text_a=3, text_b=None, label=1), _BIN, ("mcc",), test_layout=_SINGLE_TEST,
             hf_config="cola", hf_labels=_binary("unacceptable", "acceptable")),
    TaskSpec("SST-2", Layout(header=True, text_a=0, text_b=None, label=1), _BIN, ("acc",), test_layout=_SINGLE_TEST,
             hf_config="sst2", hf_labels=_binary("negative", "positive")),
    # Quality, #1 ID, #2 ID, #1 String, #2 String (train/dev start with a UTF-8 BOM); test: index, #1 ID, ...
    TaskSpec("MRPC", Layout(header=True, text_a=3, text_b=4, label=0), _BIN, ("f1", "acc"),
             hf_config="mrpc", hf_columns=("sentence1", "sentence2"), hf_labels=_binary("not_equivalent", "equivalent")),
    # score 0..5 in column 9
    TaskSpec("STS-B", Layout(header=True, text_a=7, text_b=8, label=9), (), ("pearson", "spearman"),
             main_metric="spearman", hf_config="stsb", hf_columns=("sentence1", "sentence2")),
    # id, qid1, qid2, question1, question2, is_duplicate; test: id, question1, question2
    TaskSpec("QQP", Layout(header=True, text_a=3, text_b=4, label=5), _BIN, ("f1", "acc"),
             test_layout=Layout(header=True, text_a=1, text_b=2, label=None),
             hf_config="qqp", hf_columns=("question1", "question2"), hf_labels=_binary("not_duplicate", "duplicate")),
    # index, promptID, pairID, genre, 4 parses, sentence1, sentence2, label1[..label5], gold_label
    TaskSpec("MNLI", Layout(header=True, text_a=8, text_b=9, label=-1), ("contradiction", "entailment", "neutral"),
             ("acc_m", "acc_mm"), dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
             test_files=("test_matched.tsv", "test_mismatched.tsv"), submission_files=("MNLI-m.tsv", "MNLI-mm.tsv"),
             hf_config="mnli", hf_columns=("premise", "hypothesis"),
             hf_labels=tuple((c, c) for c in ("entailment", "neutral", "contradiction"))),
    TaskSpec("QNLI", _PAIR, _NLI2, ("acc",), hf_config="qnli", hf_columns=("question", "sentence"),
             hf_labels=tuple((c, c) for c in _NLI2)),
    TaskSpec("RTE", _PAIR, _NLI2, ("acc",), hf_config="rte", hf_columns=("sentence1", "sentence2"),
             hf_labels=tuple((c, c) for c in _NLI2)),
    # label 1 = entailment
    TaskSpec("WNLI", _PAIR, _BIN, ("acc",), hf_config="wnli", hf_columns=("sentence1", "sentence2"),
             hf_labels=_binary("not_entailment", "entailment")),
)


def _synthetic(name: str, like: str, labels: tuple[str, ...] = ()) -> TaskSpec:
    """A synthetic task written by glue/synthetic_tasks.py in the layout of the GLUE task `like`, with
    its metrics and (unless given) its labels; train.tsv + dev.tsv only."""
    base = next(t for t in GLUE_TASKS if t.name == like)
    return TaskSpec(name, base.layout, labels or base.labels, base.metrics, base.main_metric, test_files=(),
                    synthetic=True)


SYNTHETIC_TASKS: tuple[TaskSpec, ...] = (
    _synthetic("SYN-TOPIC", "SST-2", labels=("0", "1", "2", "3")),
    _synthetic("SYN-NEXT", "RTE"),
    _synthetic("SYN-SIM", "STS-B"),     # regression: labels () as STS-B
    _synthetic("SYN-ORDER", "CoLA"),    # Matthews correlation
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
