"""GLUE readers: the real files in ../shared/data, hand-made fixtures for the rest, and bad input."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from robablate.glue import hub as glue_hub, tasks as glue
from robablate.errors import ConfigError, DataError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"
SHARED = Path(os.environ.get("ROBABLATE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
REAL_GLUE = SHARED / "glue"

needs_real = pytest.mark.skipif(not REAL_GLUE.is_dir(),
                                reason=f"real GLUE files not found at {REAL_GLUE} (set ROBABLATE_SHARED_DATA)")


def label_counts(task: str, split: glue.Split) -> dict[str, int]:
    spec = glue.get_task(task)
    return {spec.labels[i]: n for i, n in Counter(split.labels.tolist()).items()}


# --- registry --------------------------------------------------------------------------------------

def test_registry_order_and_facts():
    assert glue.GLUE_TASK_NAMES == ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")
    assert set(glue.TASKS) == set(glue.GLUE_TASK_NAMES) | {"SYN-TOPIC", "SYN-NEXT", "SYN-SIM", "SYN-ORDER"}
    assert glue.get_task("MNLI").labels == ("contradiction", "entailment", "neutral")
    assert glue.dev_splits("MNLI") == ["dev_matched", "dev_mismatched"]
    assert glue.dev_splits("RTE") == ["dev"]
    assert glue.submission_splits("MNLI") == ["test_matched", "test_mismatched"]
    assert glue.submission_splits("SYN-SIM") == [] and glue.splits("CoLA") == ["train", "dev", "test"]
    assert glue.get_task("STS-B").is_regression and glue.get_task("STS-B").num_labels == 1
    assert glue.get_task("SYN-TOPIC").num_labels == 4
    assert glue.get_task("SYN-ORDER").metrics == ("mcc",) and glue.get_task("SYN-ORDER").synthetic
    assert glue.get_task("sst2").name == "SST-2" and glue.get_task("mnli").name == "MNLI"
    assert [t.submission_files for t in glue.GLUE_TASKS] == [
        ("CoLA.tsv",), ("SST-2.tsv",), ("MRPC.tsv",), ("STS-B.tsv",), ("QQP.tsv",),
        ("MNLI-m.tsv", "MNLI-mm.tsv"), ("QNLI.tsv",), ("RTE.tsv",), ("WNLI.tsv",)]
    for t in glue.TASKS.values():  # the main metric is one of the task's metrics
        assert t.main_metric in t.metrics


def test_unknown_task_names_key_and_lists_valid():
    with pytest.raises(ConfigError) as e:
        glue.get_task("SQuAD")
    msg = str(e.value)
    assert "glue.tasks" in msg and "SQuAD" in msg and "CoLA" in msg and "WNLI" in msg


def test_unknown_split_lists_valid_ones():
    with pytest.raises(ConfigError, match="dev_matched, dev_mismatched"):
        glue.load_task(FIXTURES, "MNLI", "dev")
    with pytest.raises(ConfigError, match="SYN-NEXT"):
        glue.load_task(FIXTURES, "SYN-NEXT", "test")


# --- the real files -----------------------------------------------------------------------------------

REAL_COUNTS = [  # from shared/data/MANIFEST.md
    ("CoLA", "train", 8551, {"1": 6023, "0": 2528}),
    ("CoLA", "dev", 1043, {"1": 721, "0": 322}),
    ("SST-2", "train", 67349, {"0": 29780, "1": 37569}),
    ("SST-2", "dev", 872, {"1": 444, "0": 428}),
    ("MRPC", "train", 3668, {"1": 2474, "0": 1194}),
    ("MRPC", "dev", 408, {"1": 279, "0": 129}),
    ("RTE", "train", 2490, {"not_entailment": 1241, "entailment": 1249}),
    ("RTE", "dev", 277, {"not_entailment": 131, "entailment": 146}),
    ("QNLI", "dev", 5463, {"entailment": 2702, "not_entailment": 2761}),
]


@pytest.mark.shared_data
@needs_real
@pytest.mark.parametrize("task,split,rows,labels", REAL_COUNTS, ids=[f"{t}-{s}" for t, s, *_ in REAL_COUNTS])
def test_real_files_counts(task, split, rows, labels):
    s = glue.load_task(REAL_GLUE, task, split)
    assert len(s.texts_a) == rows and s.labels.shape == (rows,) and s.labels.dtype == np.int64
    assert (s.texts_b is None) == (not glue.get_task(task).is_pair)
    if s.texts_b is not None:
        assert len(s.texts_b) == rows
    assert s.n_skipped == 0
    assert label_counts(task, s) == labels


@pytest.mark.shared_data
@needs_real
def test_real_cola_and_sst2_columns():
    cola = glue.load_task(REAL_GLUE, "CoLA", "train")  # no header: the first line is a row
    assert cola.texts_a[0] == "Our friends won't buy this analysis, let alone the next one we propose."
    sst = glue.load_task(REAL_GLUE, "SST-2", "dev")
    assert sst.texts_a[0] == "it 's a charming and often affecting journey . " and sst.labels[0] == 1


@pytest.mark.shared_data
@needs_real
def test_real_mrpc_bom_is_stripped():
    raw = (REAL_GLUE / "MRPC" / "train.tsv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the test is meaningful only while the BOM is there
    s = glue.load_task(REAL_GLUE, "MRPC", "train")
    assert s.texts_a[0].startswith("Amrozi accused his brother")
    assert s.texts_b[0].startswith('Referring to him as only "the witness"')
    assert s.labels[0] == 1
    assert not any("\ufeff" in t or "Quality" == t for t in s.texts_a + s.texts_b)
    assert next(glue.iter_rows(REAL_GLUE / "MRPC" / "train.tsv"))[1][0] == "Quality"  # not "\ufeffQuality"


@pytest.mark.shared_data
@needs_real
def test_real_qnli_unbalanced_quote_row_stays_one_row():
    s = glue.load_task(REAL_GLUE, "QNLI", "dev")
    # index 694: the sentence starts with a lone `"`; a CSV reader would swallow the following rows
    assert s.texts_a[694] == "Who discovered the Compton Effect?"
    assert s.texts_b[694].startswith('" Luis Walter Alvarez') and s.texts_b[694].count('"') == 1
    assert glue.get_task("QNLI").labels[s.labels[694]] == "not_entailment"
    assert s.texts_a[695] != s.texts_a[694]


# --- fixtures in the official layouts -------------------------------------------------------------------

def test_stsb_fixture():
    s = glue.load_task(FIXTURES, "STS-B", "train")
    assert s.labels.dtype == np.float32
    np.testing.assert_allclose(s.labels, [5.0, 3.8, 0.0, 2.5], rtol=1e-6)
    assert s.texts_a[1] == "A man is playing a large flute." and s.texts_b[1] == "A man is playing a flute."
    assert s.texts_a[3] == 'He said "no way.'
    t = glue.load_task(FIXTURES, "STS-B", "test")
    assert t.labels is None and t.texts_b == ["A girl is brushing her hair.", "Northern areas may see rain."]


def test_qqp_fixture_counts_and_reports_malformed_row():
    with pytest.warns(UserWarning, match=r"QQP.*train\.tsv.*skipped 1 malformed"):
        s = glue.load_task(FIXTURES, "QQP", "train")
    assert s.n_skipped == 1
    assert len(s.texts_a) == 3 and s.labels.tolist() == [1, 0, 1]
    assert s.texts_b[1] == 'What is "dark matter?'  # unbalanced quote kept verbatim
    assert s.texts_a[2] == "Is coffee bad for you?"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file warns about nothing
        d = glue.load_task(FIXTURES, "QQP", "dev")
    assert d.n_skipped == 0 and d.labels.tolist() == [1, 0]
    t = glue.load_task(FIXTURES, "QQP", "test")
    assert t.texts_a == ["How do I cook rice?", "What is love?"] and t.labels is None


def test_mnli_fixture_string_labels_and_two_dev_sets():
    spec = glue.get_task("MNLI")
    tr = glue.load_task(FIXTURES, "MNLI", "train")
    assert [spec.labels[i] for i in tr.labels] == ["neutral", "entailment", "contradiction"]
    assert tr.texts_b[2] == 'A member of my team will "execute your orders.'
    m = glue.load_task(FIXTURES, "MNLI", "dev_matched")  # 16 columns: gold_label last, not label1
    assert [spec.labels[i] for i in m.labels] == ["neutral", "contradiction"]
    assert m.texts_a[0] == "The new rights are nice enough"
    mm = glue.load_task(FIXTURES, "MNLI", "dev_mismatched")
    assert [spec.labels[i] for i in mm.labels] == ["contradiction", "entailment", "entailment"]
    assert len(glue.load_task(FIXTURES, "MNLI", "test_matched")) == 1
    tm = glue.load_task(FIXTURES, "MNLI", "test_mismatched")
    assert tm.labels is None and tm.texts_b == ["So what's your decision?", "What is your choice?"]


def test_wnli_fixture():
    s = glue.load_task(FIXTURES, "WNLI", "dev")
    assert s.labels.tolist() == [0, 1, 0] and s.texts_b[1] == "Susan did not answer."
    assert glue.load_task(FIXTURES, "WNLI", "test").texts_b == ["Horses ran away when Maude and Dora came into sight."]


@pytest.mark.parametrize("task,first_a,first_b", [
    ("CoLA", "Bill whistled past the house.", None),
    ("SST-2", "uneasy mishmash of styles and genres .", None),
    ("MRPC", "PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief financial "
             "officer , will report directly to Mr So .", "Current Chief Operating Officer Mike Butcher"),
    ("QNLI", "What organization is devoted to Jihad against Israel?", "For some decades prior"),
    ("RTE", "Mangla was summoned after Madhumita's sister Nidhi Shukla, who was the first witness in the case.",
     "Shukla is related to Mangla."),
])
def test_test_files_have_no_labels(task, first_a, first_b):
    s = glue.load_task(FIXTURES, task, "test")
    assert s.labels is None and s.texts_a[0] == first_a
    if first_b is None:
        assert s.texts_b is None
    else:
        assert s.texts_b[0].startswith(first_b)


def test_submission_text_uses_label_strings():
    assert glue.submission_text("RTE", np.array([1, 0])) == "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
    assert glue.submission_text("STS-B", np.array([5.7, 2.25])).splitlines()[1:] == ["0\t5.000", "1\t2.250"]


# --- bad input ----------------------------------------------------------------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(DataError, match=r"glue\.data_dir.*RTE"):
        glue.load_task(tmp_path, "RTE", "train")
    write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError) as e:
        glue.load_task(tmp_path, "RTE", "dev")
    assert str(tmp_path / "RTE" / "dev.tsv") in str(e.value)


def stsb_rows(score: str) -> str:
    """An STS-B file whose second row has the score `score`."""
    return "\n".join(["\t".join(["h"] * 10), *("\t".join(["0"] * 7 + ["a", "b", s]) for s in ("1.5", score))]) + "\n"


BAD_FILES = [  # (task, split, file text, what the error must say besides the file's path)
    ("RTE", "dev", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly one text\n",
     ["line 3", "2 tab-separated fields", "at least 4"]),
    ("MNLI", "dev_matched", "\t".join(["h"] * 16) + "\n" + "\t".join(["x"] * 15 + ["neutral"]) + "\n"
     + "\t".join(["x"] * 15 + ["maybe"]) + "\n", ["line 3", "'maybe'", "contradiction, entailment, neutral"]),
    ("STS-B", "train", stsb_rows("high"), ["line 3", "'high'", "not a finite number"]),
    ("STS-B", "train", stsb_rows("nan"), ["line 3", "'nan'", "not a finite number"]),
    # a test file (no label column) saved as dev.tsv
    ("RTE", "dev", "index\tsentence1\tsentence2\n0\ta\tb\n", ["header (line 1) has 3"]),
    ("SST-2", "dev", "sentence\tlabel\n", ["no rows"]),
]


@pytest.mark.parametrize("task,split,text,says", BAD_FILES,
                         ids=["short row", "unknown label", "score high", "score nan", "test layout", "empty"])
def test_bad_file_is_named_with_line_and_expectation(tmp_path, task, split, text, says):
    p = write(tmp_path / task / f"{split}.tsv", text)
    with pytest.raises(DataError) as e:
        glue.load_task(tmp_path, task, split)
    msg = str(e.value)
    assert str(p) in msg and all(x in msg for x in says), msg


def test_undecodable_bytes_name_line_and_offset(tmp_path):
    p = tmp_path / "SST-2" / "train.tsv"
    p.parent.mkdir()
    p.write_bytes(b"sentence\tlabel\nok\t1\nbad \xff\t0\n")
    with pytest.raises(DataError, match=r"line 3 \(byte offset 24\)"):
        glue.load_task(tmp_path, "SST-2", "train")


def test_line_separators_inside_text_do_not_split_rows(tmp_path):
    # str.splitlines() would break this row at U+2028 and \x1c; only "\n" ends a row
    write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\na\u2028b\x1cc\t1\r\nd\t0")
    s = glue.load_task(tmp_path, "SST-2", "train")
    assert s.texts_a == ["a\u2028b\x1cc", "d"] and s.labels.tolist() == [1, 0]


# --- Hugging Face datasets (offline, from_dict) ----------------------------------------------------------

def test_hf_mnli_default_order_is_remapped():
    from datasets import Dataset

    ds = Dataset.from_dict({"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"],
                            "label": [0, 1, 2], "idx": [0, 1, 2]})
    s = glue_hub.load_task_hf("MNLI", "dev_matched", dataset=ds)
    spec = glue.get_task("MNLI")
    # HF's order is entailment, neutral, contradiction
    assert [spec.labels[i] for i in s.labels] == ["entailment", "neutral", "contradiction"]
    assert s.texts_a == ["p0", "p1", "p2"] and s.texts_b == ["h0", "h1", "h2"]


def test_hf_class_label_names_are_used_when_present():
    from datasets import ClassLabel, Dataset, Features, Value

    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["acceptable", "unacceptable"])})
    ds = Dataset.from_dict({"sentence": ["good", "bad"], "label": [0, 1]}, features=feats)
    s = glue_hub.split_from_hf("CoLA", ds)
    assert s.labels.tolist() == [1, 0] and s.texts_b is None  # "acceptable" is our "1"
    feats = Features({"question": Value("string"), "sentence": Value("string"),
                      "label": ClassLabel(names=["entailment", "not_entailment"])})
    ds = Dataset.from_dict({"question": ["q"], "sentence": ["s"], "label": [1]}, features=feats)
    assert glue_hub.split_from_hf("QNLI", ds).labels.tolist() == [1]


def test_hf_test_split_and_regression():
    from datasets import Dataset

    ds = Dataset.from_dict({"question1": ["a", "b"], "question2": ["c", "d"], "label": [-1, -1]})
    assert glue_hub.split_from_hf("QQP", ds).labels is None
    ds = Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [3.25]})
    s = glue_hub.split_from_hf("STS-B", ds)
    assert s.labels.dtype == np.float32 and s.labels.tolist() == [3.25]
    with pytest.raises(DataError, match="text columns"):
        glue_hub.split_from_hf("RTE", Dataset.from_dict({"text": ["a"], "label": [0]}))
    assert glue_hub.hf_split_name("dev_mismatched") == "validation_mismatched"
