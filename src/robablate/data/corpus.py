"""Corpus: documents as iterators of sentence lists, from the synthetic generator, a text folder or HF.

A document is a list of non-empty sentences; documents are never empty. Every source streams (files
are read line by line), so the corpus is never held in memory as Python strings. The synthetic corpus
is written once as a text folder and read by the text reader: one code path for both.

Config (`corpus` group), dispatched on `kind`:
  synthetic: num_docs, num_val_docs, seed, ... (see data/synthetic.py)
  text:      path, train_glob, val_glob, val_fraction, document_boundary, split_sentences, max_docs,
             encoding (default utf-8), errors (strict | replace | skip: what an undecodable file does)
  hf:        name, config, split, val_split, text_column, document_boundary, split_sentences, max_docs
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from robablate.data import synthetic
from robablate.io import cache_key
from robablate.errors import ConfigError, DataError, positive_int_or_none
from robablate.settings import setting

CORPUS_KINDS = ("synthetic", "text", "hf")
# blank_line: a blank line ends a document (BERT's create_pretraining_data.py input format).
# heading: a WikiText top-level heading ` = Title = ` starts a new document (one Wikipedia article).
# row (hf only): each dataset row is one document.
DOCUMENT_BOUNDARIES = ("blank_line", "heading", "row")
SPLITS = ("train", "val")
_BOM = b"\xef\xbb\xbf"

# A sentence ends at . ! or ? followed by whitespace and an upper-case letter, a digit, or an opening
# quote/bracket. Works for normal text ("end. Next") and WikiText's tokenized style ("end . Next").
# Decimals ("3.5", WikiText "3 @.@ 5") have no space after the dot, so they never split.
_SENT_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?\s?[A-Z0-9À-ÖØ-Þ])")
# WikiText headings: "= Title =" (level 1), "= = Section = =" (level 2), ...
_HEADING = re.compile(r"^(=(?: =)*) (.*\S) \1$")


def split_sentences(line: str) -> list[str]:
    """Split one line of text into sentences (a simple regex, no abbreviation list)."""
    return [s for s in (p.strip() for p in _SENT_BOUNDARY.split(line.strip())) if s]


_split_line = split_sentences  # hf_documents takes a `split_sentences` flag that shadows the name


def heading_level(line: str) -> int:
    """1 for ` = Title = `, 2 for ` = = Section = = `, ...; 0 if the line is not a WikiText heading."""
    m = _HEADING.match(line.strip())
    return m.group(1).count("=") if m else 0


def documents_from_lines(lines: Iterable[str], document_boundary: str = "blank_line",
                         split: bool = True) -> Iterator[list[str]]:
    """Group lines into documents. In `heading` mode heading lines are dropped (BERT §3.1 keeps only
    text passages of Wikipedia, not headers) and blank lines only separate paragraphs."""
    doc: list[str] = []
    for line in lines:
        s = line.strip()
        if document_boundary == "heading":
            level = heading_level(s) if s.startswith("=") else 0
            if level:
                if level == 1 and doc:
                    yield doc
                    doc = []
                continue
        elif not s and doc:
            yield doc
            doc = []
        if s:
            doc.extend(split_sentences(s) if split else [s])
    if doc:
        yield doc


# ---------------------------------------------------------------- config access

def _get(cfg: Mapping[str, Any], key: str, default: Any = None, *, required: bool = False) -> Any:
    return setting(cfg, key, default, section="corpus", required=required)


def corpus_kind(cfg: Mapping[str, Any]) -> str:
    kind = _get(cfg, "kind") or _get(cfg, "name")
    if kind not in CORPUS_KINDS:
        raise ConfigError(f"corpus.kind: expected one of {list(CORPUS_KINDS)}, got {kind!r}.")
    return kind


def _reader_options(cfg: Mapping[str, Any], kind: str) -> tuple[str, bool, int | None, float]:
    boundary = _get(cfg, "document_boundary", "blank_line")
    allowed = DOCUMENT_BOUNDARIES if kind == "hf" else DOCUMENT_BOUNDARIES[:2]
    if boundary not in allowed:
        raise ConfigError(f"corpus.document_boundary: expected one of {list(allowed)}, got {boundary!r}.")
    max_docs = positive_int_or_none(_get(cfg, "max_docs"), "corpus.max_docs")
    frac = _get(cfg, "val_fraction", 0.05)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise ConfigError(f"corpus.val_fraction: expected a fraction in (0, 1), got {frac!r}.")
    return boundary, bool(_get(cfg, "split_sentences", True)), max_docs, float(frac)


def default_cache_dir() -> Path:
    """Where generated data lives when the caller passes no cache_dir (same default as conf's cache_dir)."""
    return Path(os.environ.get("ROBABLATE_CACHE", ".cache"))


# ---------------------------------------------------------------- text folders

ERROR_POLICIES = ("strict", "replace", "skip")


def decoding(cfg: Mapping[str, Any]) -> tuple[str, str]:
    """(corpus.encoding, corpus.errors), checked: an ASCII-compatible codec (lines are split on b"\\n"
    before decoding, which UTF-16/32 would break) and one of ERROR_POLICIES."""
    import codecs

    encoding, errors = str(_get(cfg, "encoding", "utf-8") or "utf-8"), str(_get(cfg, "errors", "strict"))
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"corpus.encoding: unknown codec {encoding!r} (e.g. utf-8, latin-1, cp1252).") from None
    if "\n".encode(info.name) != b"\n":
        raise ConfigError(f"corpus.encoding: {encoding!r} does not encode a line end as one byte b'\\n'; "
                          f"convert the files to UTF-8 (or an ASCII-compatible codec such as latin-1).")
    if errors not in ERROR_POLICIES:
        raise ConfigError(f"corpus.errors: expected one of {list(ERROR_POLICIES)}, got {errors!r}.")
    return info.name, errors


def _raw_lines(path: Path, utf8: bool) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, raw bytes without a leading UTF-8 BOM) of every line of `path`."""
    with open(path, "rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            start = offset
            offset += len(raw)
            if utf8 and lineno == 1 and raw.startswith(_BOM):
                raw, start = raw[3:], start + 3
            yield lineno, start, raw


def _is_utf8(encoding: str) -> bool:
    return encoding.replace("_", "-").lower() in ("utf-8", "utf8")


def first_decode_error(path: Path, encoding: str = "utf-8") -> str | None:
    """Where `path` first fails to decode ("line L, byte offset B: reason"), or None if it decodes."""
    for lineno, start, raw in _raw_lines(path, _is_utf8(encoding)):
        try:
            raw.decode(encoding)
        except UnicodeDecodeError as e:
            return f"line {lineno}, byte offset {start + e.start}: {e.reason}"
    return None


def read_lines(path: Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
    """Lines of a text file without line ends (LF or CRLF), a leading UTF-8 BOM removed. Undecodable
    bytes raise DataError naming the file, line and byte offset (errors="replace" puts U+FFFD
    instead)."""
    for lineno, start, raw in _raw_lines(path, _is_utf8(encoding)):
        try:
            text = raw.decode(encoding, "replace" if errors == "replace" else "strict")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid {encoding} at byte offset {start + e.start} (line {lineno}): "
                            f"{e.reason}; set corpus.encoding (e.g. latin-1) or corpus.errors=replace|skip.") from None
        yield text.rstrip("\r\n")


def _glob(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def text_files(cfg: Mapping[str, Any]) -> tuple[Path, list[Path], list[Path] | None]:
    """(folder, train files, val files or None). Train files exclude any file matched by val_glob."""
    folder = Path(os.path.expanduser(str(_get(cfg, "path", required=True))))
    if not folder.is_dir():
        raise DataError(f"corpus.path: {folder} is not a folder (expected a folder of text files).")
    train_glob, val_glob = _get(cfg, "train_glob", "**/*.txt"), _get(cfg, "val_glob")
    val = _glob(folder, val_glob) if val_glob else None
    train = [p for p in _glob(folder, train_glob) if not val or p not in set(val)]
    for files, pattern, key in ((train, train_glob, "train_glob"), (val, val_glob, "val_glob")):
        if files is None:
            continue
        if not files:
            raise DataError(f"{folder}: no files match corpus.{key}={pattern!r}.")
        if all(p.stat().st_size == 0 for p in files):
            raise DataError(f"{folder}: every file matching corpus.{key}={pattern!r} is empty.")
    return folder, train, val


_USABLE: dict[str, tuple[Path, list[Path], list[Path] | None]] = {}


def usable_text_files(cfg: Mapping[str, Any]) -> tuple[Path, list[Path], list[Path] | None]:
    """text_files(cfg) after decoding every file once with corpus.encoding: under corpus.errors=strict
    one DataError lists every undecodable file (not only the first, so one rerun fixes them all);
    under skip those files are dropped with a warning naming them; under replace all are kept.
    Memoised per corpus fingerprint (the scan reads the whole corpus)."""
    key = fingerprint(cfg)
    if key in _USABLE:
        return _USABLE[key]
    folder, train, val = text_files(cfg)
    encoding, errors = decoding(cfg)
    if errors != "replace":
        bad = {p: err for p in dict.fromkeys(train + (val or [])) if (err := first_decode_error(p, encoding))}
        if bad and errors == "strict":
            listing = "\n".join(f"  {p}: {err}" for p, err in bad.items())
            raise DataError(f"corpus.path {folder}: {len(bad)} file(s) are not valid {encoding}:\n{listing}\n"
                            f"Set corpus.encoding=... (e.g. latin-1 for Western European books), "
                            f"corpus.errors=replace (undecodable bytes become U+FFFD) or corpus.errors=skip "
                            f"(leave these files out).")
        if bad:
            import warnings

            warnings.warn(f"corpus.errors=skip: leaving out {len(bad)} file(s) that are not valid {encoding}: "
                          + ", ".join(str(p) for p in bad), stacklevel=2)
            train = [p for p in train if p not in bad]
            val = [p for p in val if p not in bad] if val is not None else None
            for files, name in ((train, "train_glob"), (val, "val_glob")):
                if files is not None and not files:
                    raise DataError(f"{folder}: no file matching corpus.{name} is left after corpus.errors=skip.")
    _USABLE[key] = (folder, train, val)
    return _USABLE[key]


def resolve_source(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """A text corpus with `hf_fallback` (corpus=wikitext2) whose local folder is absent reads the same
    text from the Hugging Face hub instead: the fallback's name/config/split/val_split with this
    corpus's reader options. Anything else is returned unchanged."""
    fallback = _get(cfg, "hf_fallback") if corpus_kind(cfg) == "text" else None
    if not fallback:
        return cfg
    path = _get(cfg, "path")
    if path not in (None, "???", "") and Path(os.path.expanduser(str(path))).is_dir():
        return cfg
    fb = dict(fallback.items())
    keys = ("document_boundary", "split_sentences", "max_docs", "val_fraction")
    return {"kind": "hf", "name": fb["name"], "config": fb.get("config"), "split": fb.get("split", "train"),
            "val_split": fb.get("val_split"), "text_column": fb.get("text_column", "text"),
            **{k: _get(cfg, k) for k in keys}, "local_path": str(path)}


def check_corpus(cfg_corpus: Mapping[str, Any]) -> None:
    """Everything about the corpus that can be checked before any compute: the keys, and for a text
    folder that the files exist and decode (usable_text_files). Synthetic text is generated by
    robablate; a hub dataset is loaded here only when it replaces an absent local copy (so that an
    offline machine learns it before any compute, with both ways to get the data)."""
    kind = corpus_kind(cfg_corpus)
    if kind == "synthetic":
        return
    resolved = resolve_source(cfg_corpus)
    kind = corpus_kind(resolved)
    _reader_options(resolved, kind)
    if kind == "text":
        usable_text_files(resolved)
    elif resolved is not cfg_corpus:
        _load_hf(resolved, _get(resolved, "split", "train"))


def _file_documents(files: list[Path], boundary: str, split: bool, encoding: str = "utf-8",
                    errors: str = "strict") -> Iterator[list[str]]:
    for path in files:  # a file boundary always ends a document
        yield from documents_from_lines(read_lines(path, encoding, errors), boundary, split)


# ---------------------------------------------------------------- Hugging Face datasets

def hf_documents(dataset: Iterable[Any], text_column: str = "text", document_boundary: str = "heading",
                 split_sentences: bool = True) -> Iterator[list[str]]:
    """Documents from any iterable of rows (dicts) or a `datasets.Dataset`; each row's text may hold
    one line (WikiText) or many. Works offline on `datasets.Dataset.from_dict(...)`."""
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_column not in columns:
        raise ConfigError(f"corpus.text_column: {text_column!r} is not a column of the dataset "
                          f"(columns: {list(columns)}).")

    def texts() -> Iterator[str | None]:
        if columns is not None and hasattr(dataset, "iter"):  # Arrow batches: ~100x faster than rows
            for batch in dataset.iter(batch_size=1000):
                yield from batch[text_column]
        else:
            for i, row in enumerate(dataset):
                if text_column not in row:
                    raise ConfigError(f"corpus.text_column: row {i} has no column {text_column!r}.")
                yield row[text_column]

    if document_boundary == "row":
        for text in texts():
            doc = [s for line in (text or "").splitlines() for s in
                   (_split_line(line) if split_sentences else [line.strip()]) if s]
            if doc:
                yield doc
        return
    lines = (line for text in texts() for line in ((text or "").splitlines() or [""]))
    yield from documents_from_lines(lines, document_boundary, split_sentences)


def _load_hf(cfg: Mapping[str, Any], split_name: str):
    name, config = _get(cfg, "name", required=True), _get(cfg, "config")
    try:
        import datasets
        return datasets.load_dataset(name, config, split=split_name)
    except Exception as e:  # offline, unknown dataset/config/split: say which keys to check
        local = _get(cfg, "local_path")
        if local is not None:  # the hub was the fallback for a missing local copy: name both ways
            raise DataError(
                f"corpus: the local copy {local} is not a folder, and the Hugging Face hub fallback "
                f"({name}/{config}, split {split_name!r}) could not be loaded ({type(e).__name__}: {e}). Either "
                f"put the text files there (set ROBABLATE_SHARED_DATA to the folder holding "
                f"corpus/wikitext-2/, or corpus.path=DIR), or connect to the hub once so `datasets` caches "
                f"{name}/{config} (HF_DATASETS_OFFLINE=1 then reads the cache).") from e
        raise DataError(f"corpus=hf: cannot load dataset corpus.name={name!r} corpus.config={config!r} "
                        f"split={split_name!r}: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- the public entry points

def _holdout(factory: Callable[[], Iterator[list[str]]], count: Callable[[], int], split: str,
             frac: float, where: str) -> Iterator[list[str]]:
    """The last `frac` of the documents (at least one) are validation, the rest train."""
    n = count()
    n_val = max(1, round(n * frac))
    if n - n_val < 1:
        raise DataError(f"{where}: found {n} document(s); at least 2 are needed to hold out validation "
                        f"documents (set corpus.val_glob / corpus.val_split, or add documents).")
    docs = factory()
    return itertools.islice(docs, n - n_val) if split == "train" else itertools.islice(docs, n - n_val, None)


_COUNTS: dict[str, int] = {}


def _counted(key: str, factory: Callable[[], Iterator[Any]]) -> Callable[[], int]:
    def count() -> int:
        if key not in _COUNTS:
            _COUNTS[key] = sum(1 for _ in factory())
        return _COUNTS[key]
    return count


def _nonempty(docs: Iterable[list[str]], where: str) -> Iterator[list[str]]:
    empty = True
    for doc in docs:
        empty = False
        yield doc
    if empty:
        raise DataError(f"{where}: no documents (every line is blank or a heading).")


def iter_documents(cfg_corpus: Mapping[str, Any], split: str, *,
                   cache_dir: str | os.PathLike | None = None) -> Iterator[list[str]]:
    """Stream the documents of `split` ("train" or "val"): each a non-empty list of non-empty sentences.
    `cache_dir` holds the generated synthetic corpus (default: $ROBABLATE_CACHE or .cache)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cfg_corpus = resolve_source(cfg_corpus)
    kind = corpus_kind(cfg_corpus)
    if kind == "synthetic":
        folder = synthetic.ensure_corpus(cfg_corpus, cache_dir or default_cache_dir())
        return iter_documents(synthetic.text_config(folder), split)
    boundary, split_sents, max_docs, frac = _reader_options(cfg_corpus, kind)
    cap = (lambda it: itertools.islice(it, max_docs)) if max_docs else (lambda it: it)

    if kind == "text":
        folder, train, val = usable_text_files(cfg_corpus)
        dec = decoding(cfg_corpus)
        where = f"{folder} (corpus.{'val_glob' if split == 'val' and val else 'train_glob'})"
        if val is not None:
            return _nonempty(cap(_file_documents(train if split == "train" else val, boundary, split_sents, *dec)),
                             where)
        factory = lambda: cap(_file_documents(train, boundary, split_sents, *dec))  # noqa: E731
        # Counting needs no sentence splitting: a document is non-empty either way.
        count = _counted(fingerprint(cfg_corpus), lambda: cap(_file_documents(train, boundary, False, *dec)))
        return _nonempty(_holdout(factory, count, split, frac, str(folder)), where)

    column = _get(cfg_corpus, "text_column", "text")
    val_split = _get(cfg_corpus, "val_split")
    where = f"hf dataset {_get(cfg_corpus, 'name')}/{_get(cfg_corpus, 'config')}"
    if val_split:
        ds = _load_hf(cfg_corpus, _get(cfg_corpus, "split", "train") if split == "train" else val_split)
        return _nonempty(cap(hf_documents(ds, column, boundary, split_sents)), where)
    train_split = _get(cfg_corpus, "split", "train")
    factory = lambda: cap(hf_documents(_load_hf(cfg_corpus, train_split), column, boundary, split_sents))  # noqa: E731
    count = _counted(fingerprint(cfg_corpus), factory)
    return _nonempty(_holdout(factory, count, split, frac, where), where)


def fingerprint(cfg_corpus: Mapping[str, Any]) -> str:
    """A stable hash of what the documents depend on, cheap to compute:
    synthetic: the generator parameters (the text is a pure function of them);
    text: reader options + each file's path relative to the folder, size and mtime_ns (no content read;
          an edit that keeps both size and mtime would be missed, copying the folder only costs a rebuild);
    hf: dataset name/config/splits + reader options (the hub data itself is not hashed)."""
    cfg_corpus = resolve_source(cfg_corpus)
    kind = corpus_kind(cfg_corpus)
    if kind == "synthetic":
        return cache_key("corpus", kind, synthetic.GENERATOR_VERSION, synthetic.params(cfg_corpus))
    options = _reader_options(cfg_corpus, kind)
    if kind == "text":
        folder, train, val = text_files(cfg_corpus)
        stat = lambda files: [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)  # noqa: E731
                              for p in files]
        # The decoding joins the key only when it is not the default, so existing caches stay valid.
        dec = decoding(cfg_corpus)
        extra = [dec] if dec != ("utf-8", "strict") else []
        return cache_key("corpus", kind, options, stat(train), stat(val) if val is not None else None, *extra)
    keys = ("name", "config", "split", "val_split", "text_column")
    return cache_key("corpus", kind, options, {k: _get(cfg_corpus, k) for k in keys})
