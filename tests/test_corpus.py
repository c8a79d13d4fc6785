"""Corpus readers: text folders (UTF-8, BOM, CRLF, errors), WikiText headings, HF rows, hold-out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from robablate.data import corpus, documents
from robablate.errors import ConfigError, DataError


def shared_data() -> Path:
    return Path(os.environ.get("ROBABLATE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def text_cfg(path, **kw):
    return {"kind": "text", "name": "text", "path": str(path), "train_glob": "**/*.txt", "val_glob": None,
            "val_fraction": 0.05, "document_boundary": "blank_line", "split_sentences": True, "max_docs": None, **kw}


WIKI_LINES = [
    " ",
    " = Valkyria Chronicles III = ",
    " ",
    " Senjō no Valkyria 3 is a game . It was released in 2011 .",
    " ",
    " = = Gameplay = = ",
    " ",
    " The game costs 3 @.@ 5 dollars . Players fight .",
    " = Tower Building = ",
    " ",
    " The building is old .",
    " ",
]
WIKI_DOCS = [
    ["Senjō no Valkyria 3 is a game .", "It was released in 2011 .", "The game costs 3 @.@ 5 dollars .",
     "Players fight ."],
    ["The building is old ."],
]


@pytest.mark.parametrize("line, expected", [
    ("Hello there. This is it! Is it? Yes.", ["Hello there.", "This is it!", "Is it?", "Yes."]),
    (" The game began in 2010 . It cost 3 @.@ 5 million . ", ["The game began in 2010 .", "It cost 3 @.@ 5 million ."]),
    ("It rose 3.5 percent. \"Quoted\" text follows.", ["It rose 3.5 percent.", "\"Quoted\" text follows."]),
    ("no capital. so no split here", ["no capital. so no split here"]),
    ("   ", []),
])
def test_split_sentences(line, expected):
    assert documents.split_sentences(line) == expected


def test_heading_boundaries_start_documents_and_drop_headings():
    assert list(documents.documents_from_lines(WIKI_LINES, "heading", split=True)) == WIKI_DOCS
    assert documents.heading_level(" = = Gameplay = = ") == 2 and documents.heading_level(" = A = B") == 0
    # In blank_line mode the same lines give one document per paragraph, headings kept as text.
    blank = list(documents.documents_from_lines(WIKI_LINES, "blank_line", split=False))
    assert len(blank) == 5 and blank[0] == ["= Valkyria Chronicles III ="]


def test_bom_and_crlf_are_handled(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfFirst line. Second one.\r\nThird.\r\n\r\nNext doc.\r\n")
    docs = list(corpus.iter_documents(text_cfg(tmp_path), "train"))
    assert docs == [["First line.", "Second one.", "Third."]]  # the last document is held out
    assert list(corpus.iter_documents(text_cfg(tmp_path), "val")) == [["Next doc."]]


def test_non_utf8_file_names_file_and_byte_offset(tmp_path):
    (tmp_path / "good.txt").write_text("fine text.\n\nmore.\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"ok line\ncaf\xc3\xa9 \xff end\n")
    with pytest.raises(DataError) as e:
        list(corpus.iter_documents(text_cfg(tmp_path), "train"))
    msg = str(e.value)
    assert "bad.txt" in msg and "byte offset 14" in msg and "line 2" in msg  # 8 + 6 bytes of "café "


def test_empty_or_unmatched_folders_raise_data_error(tmp_path):
    with pytest.raises(DataError, match=r"no files match corpus.train_glob='\*\*/\*.txt'") as e:
        list(corpus.iter_documents(text_cfg(tmp_path), "train"))
    assert str(tmp_path) in str(e.value)
    (tmp_path / "notes.md").write_text("text\n")
    with pytest.raises(DataError, match="no files match"):
        corpus.fingerprint(text_cfg(tmp_path))
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match=r"every file matching corpus.train_glob='\*\*/\*.txt' is empty"):
        list(corpus.iter_documents(text_cfg(tmp_path), "train"))
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="document"):
        list(corpus.iter_documents(text_cfg(tmp_path), "train"))
    with pytest.raises(DataError, match="is not a folder"):
        list(corpus.iter_documents(text_cfg(tmp_path / "missing"), "train"))


def test_missing_path_and_bad_options_are_config_errors(tmp_path):
    cfg = OmegaConf.create(text_cfg("???"))
    with pytest.raises(ConfigError, match="corpus.path"):
        corpus.iter_documents(cfg, "train")
    (tmp_path / "a.txt").write_text("x.\n")
    with pytest.raises(ConfigError, match="corpus.document_boundary"):
        corpus.iter_documents(text_cfg(tmp_path, document_boundary="page"), "train")
    with pytest.raises(ConfigError, match="corpus.val_fraction"):
        corpus.iter_documents(text_cfg(tmp_path, val_fraction=1.5), "train")
    with pytest.raises(ConfigError, match="corpus.kind"):
        corpus.iter_documents({"kind": "web"}, "train")


def _write_docs(folder: Path, n: int, per_file: int = 5) -> list[list[str]]:
    docs = [[f"Doc {i} sentence one.", f"Doc {i} sentence two."] for i in range(n)]
    for f in range(0, n, per_file):
        (folder / f"part{f // per_file:03d}.txt").write_text(
            "\n\n".join(" ".join(d) for d in docs[f:f + per_file]) + "\n", encoding="utf-8")
    return docs


def test_validation_holdout_and_val_glob(tmp_path):
    docs = _write_docs(tmp_path, 40)
    cfg = text_cfg(tmp_path, val_fraction=0.1)
    train, val = list(corpus.iter_documents(cfg, "train")), list(corpus.iter_documents(cfg, "val"))
    assert train == docs[:36] and val == docs[36:]
    capped = text_cfg(tmp_path, val_fraction=0.1, max_docs=20)
    assert list(corpus.iter_documents(capped, "val")) == docs[18:20]
    # With val_glob, those files are validation and are excluded from training.
    globbed = text_cfg(tmp_path, val_glob="part007.txt")
    assert list(corpus.iter_documents(globbed, "val")) == docs[35:]
    assert list(corpus.iter_documents(globbed, "train")) == docs[:35]
    # One document cannot be split into train and validation.
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.txt").write_text("Only one.\n")
    with pytest.raises(DataError, match="at least 2"):
        list(corpus.iter_documents(text_cfg(one), "train"))


def test_documents_stream_lazily(tmp_path):
    _write_docs(tmp_path, 10)
    it = corpus.iter_documents(text_cfg(tmp_path, val_glob="part001.txt"), "train")
    assert iter(it) is it and next(it) == ["Doc 0 sentence one.", "Doc 0 sentence two."]


def test_fingerprint_is_stable_and_follows_the_files(tmp_path):
    _write_docs(tmp_path, 10)
    cfg = text_cfg(tmp_path)
    fp = corpus.fingerprint(cfg)
    assert fp == corpus.fingerprint(dict(cfg))
    assert corpus.fingerprint(text_cfg(tmp_path, split_sentences=False)) != fp
    with open(tmp_path / "part000.txt", "a", encoding="utf-8") as f:
        f.write("Appended.\n")
    assert corpus.fingerprint(cfg) != fp
    syn = {"kind": "synthetic", "name": "synthetic", "num_docs": 10}
    assert corpus.fingerprint(syn) == corpus.fingerprint(syn) != corpus.fingerprint({**syn, "seed": 1})


def test_hf_documents_on_a_dataset_and_on_plain_rows():
    datasets = pytest.importorskip("datasets")
    rows = [line + "\n" for line in WIKI_LINES]
    ds = datasets.Dataset.from_dict({"text": rows, "id": list(range(len(rows)))})
    assert list(documents.hf_documents(ds, "text", "heading", True)) == WIKI_DOCS
    assert list(documents.hf_documents([{"text": r} for r in rows], "text", "heading", True)) == WIKI_DOCS
    paragraphs = datasets.Dataset.from_dict({"body": ["A one. A two.\n\nA three.", "", "B one."]})
    assert list(documents.hf_documents(paragraphs, "body", "row", True)) == [["A one.", "A two.", "A three."], ["B one."]]
    with pytest.raises(ConfigError, match="corpus.text_column"):
        list(documents.hf_documents(ds, "content", "heading", True))


@pytest.mark.shared_data
def test_wikitext2_train_has_about_600_articles():
    folder = shared_data() / "corpus" / "wikitext-2"
    if not (folder / "train.txt").is_file():
        pytest.skip(f"shared data not found at {folder} (set ROBABLATE_SHARED_DATA)")
    cfg = text_cfg(folder, train_glob="train.txt", val_glob="valid.txt", document_boundary="heading")
    n_docs = n_sents = 0
    for doc in corpus.iter_documents(cfg, "train"):
        n_docs += 1
        n_sents += len(doc)
        assert not any(s.startswith("= ") and s.endswith(" =") for s in doc)  # headings dropped
    assert 500 <= n_docs <= 700, n_docs  # 600 articles (a few " = X = " lines inside articles split them)
    assert 60_000 <= n_sents <= 120_000, n_sents
