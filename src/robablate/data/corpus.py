"""Corpus: documents as iterators of sentence lists, from the synthetic generator, a text folder or HF.

Every source streams (files are read line by line; data/documents.py turns lines into documents), so
the corpus is never held in memory as Python strings. The synthetic corpus is written once as a text
folder and read by the text reader: one code path for both.

`CorpusSpec.from_config` checks the `corpus` group once, dispatched on `kind`:
  synthetic: num_docs, num_val_docs, seed, ... (see data/synthetic.py)
  text:      path, train_glob, val_glob, val_fraction, document_boundary, split_sentences, max_docs,
             encoding (default utf-8), errors (strict | replace | skip: what an undecodable file does),
             hf_fallback (the same text on the hub, read when `path` is not a folder)
  hf:        name, config, split, val_split, text_column, document_boundary, split_sentences, max_docs
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robablate.data import synthetic
from robablate.data.documents import documents_from_lines, first_decode_error, hf_documents, read_lines
from robablate.io import cache_key
from robablate.errors import ConfigError, DataError, positive_int_or_none
from robablate.settings import Spec, setting

CORPUS_KINDS = ("synthetic", "text", "hf")
# blank_line: a blank line ends a document (BERT's create_pretraining_data.py input format).
# heading: a WikiText top-level heading ` = Title = ` starts a new document (one Wikipedia article).
# row (hf only): each dataset row is one document.
DOCUMENT_BOUNDARIES = ("blank_line", "heading", "row")
SPLITS = ("train", "val")

# ---------------------------------------------------------------- the corpus group, checked

def _get(cfg: Mapping[str, Any], key: str, default: Any = None, *, required: bool = False) -> Any:
    return setting(cfg, key, default, section="corpus", required=required)


@dataclass(frozen=True)
class CorpusSpec(Spec):
    """The `corpus` group, checked once by `from_config` (config.validate calls it; no file is read):
    which documents to read and how. Every reader below takes it."""

    kind: str                            # synthetic | text | hf
    name: str | None = None              # the corpus's name; for kind hf, the hub dataset
    # synthetic: the generator's parameters (data/synthetic.params); for other kinds only the
    # synthetic GLUE tasks use them (the default world with corpus.seed)
    generator: Mapping[str, Any] = field(default_factory=dict)
    # text and hf: how lines become documents, and the validation hold-out
    document_boundary: str = "blank_line"
    split_sentences: bool = True
    max_docs: int | None = None
    val_fraction: float = 0.05
    # text: the folder, its files and their decoding
    path: str | None = None
    train_glob: str = "**/*.txt"
    val_glob: str | None = None
    encoding: str = "utf-8"
    errors: str = "strict"
    fallback: CorpusSpec | None = None   # the same text on the hub, read when `path` is not a folder
    # hf: the hub dataset (split / text_column as written, None when absent: the cache key hashes them)
    config: str | None = None
    split: str | None = None
    val_split: str | None = None
    text_column: str | None = None
    local_path: str | None = None        # a fallback's absent local folder (named in its errors)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "CorpusSpec":
        """Every `corpus` rule that needs no file: the kind, the synthetic generator's parameters, the
        reader options, the decoding, the required keys of a folder or a hub dataset."""
        kind = _get(cfg, "kind") or _get(cfg, "name")
        if kind not in CORPUS_KINDS:
            raise ConfigError(f"corpus.kind: expected one of {list(CORPUS_KINDS)}, got {kind!r}.")
        generator = synthetic.generator_params(cfg)
        if kind == "synthetic":
            return cls(kind=kind, name=_get(cfg, "name"), generator=generator)
        options = _reader_options(cfg, kind)
        if kind == "hf":
            return cls(kind=kind, name=_get(cfg, "name", required=True), generator=generator, **options,
                       **{k: _get(cfg, k) for k in ("config", "split", "val_split", "text_column", "local_path")})
        path, fallback = _get(cfg, "path"), _get(cfg, "hf_fallback")
        if not fallback:
            path = _get(cfg, "path", required=True)
        encoding, errors = decoding(_get(cfg, "encoding", "utf-8"), _get(cfg, "errors", "strict"))
        spec = cls(kind=kind, name=_get(cfg, "name"), generator=generator, **options,
                   path=None if path is None else str(path), train_glob=_get(cfg, "train_glob", "**/*.txt"),
                   val_glob=_get(cfg, "val_glob"), encoding=encoding, errors=errors)
        if not fallback:
            return spec
        hub = {k: setting(fallback, k, d, section="corpus.hf_fallback", required=k == "name")
               for k, d in (("name", None), ("config", None), ("split", "train"), ("val_split", None),
                            ("text_column", "text"))}
        return replace(spec, fallback=cls(kind="hf", generator=generator, **options, **hub, local_path=str(path)))

    def source(self) -> CorpusSpec:
        """What to read: this corpus, or its hub copy (`hf_fallback`, corpus=wikitext2) when the
        local folder is absent."""
        if self.fallback is None:
            return self
        if self.path not in (None, "???", "") and Path(os.path.expanduser(self.path)).is_dir():
            return self
        return self.fallback


def _reader_options(cfg: Mapping[str, Any], kind: str) -> dict[str, Any]:
    boundary = _get(cfg, "document_boundary", "blank_line")
    allowed = DOCUMENT_BOUNDARIES if kind == "hf" else DOCUMENT_BOUNDARIES[:2]
    if boundary not in allowed:
        raise ConfigError(f"corpus.document_boundary: expected one of {list(allowed)}, got {boundary!r}.")
    max_docs = positive_int_or_none(_get(cfg, "max_docs"), "corpus.max_docs")
    frac = _get(cfg, "val_fraction", 0.05)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise ConfigError(f"corpus.val_fraction: expected a fraction in (0, 1), got {frac!r}.")
    return {"document_boundary": boundary, "split_sentences": bool(_get(cfg, "split_sentences", True)),
            "max_docs": max_docs, "val_fraction": float(frac)}


def _options(spec: CorpusSpec) -> tuple[str, bool, int | None, float]:
    return spec.document_boundary, spec.split_sentences, spec.max_docs, spec.val_fraction


def default_cache_dir() -> Path:
    """Where generated data lives when the caller passes no cache_dir (same default as conf's cache_dir)."""
    return Path(os.environ.get("ROBABLATE_CACHE", ".cache"))


# ---------------------------------------------------------------- text folders

ERROR_POLICIES = ("strict", "replace", "skip")


def decoding(encoding: Any, errors: Any) -> tuple[str, str]:
    """(corpus.encoding, corpus.errors), checked: an ASCII-compatible codec (lines are split on b"\\n"
    before decoding, which UTF-16/32 would break) and one of ERROR_POLICIES."""
    import codecs

    encoding, errors = str(encoding or "utf-8"), str(errors)
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


def _glob(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def text_files(spec: "CorpusSpec | Mapping[str, Any]") -> tuple[Path, list[Path], list[Path] | None]:
    """(folder, train files, val files or None). Train files exclude any file matched by val_glob."""
    spec = CorpusSpec.of(spec)
    folder = Path(os.path.expanduser(str(spec.path)))
    if not folder.is_dir():
        raise DataError(f"corpus.path: {folder} is not a folder (expected a folder of text files).")
    val = _glob(folder, spec.val_glob) if spec.val_glob else None
    train = [p for p in _glob(folder, spec.train_glob) if not val or p not in set(val)]
    for files, pattern, key in ((train, spec.train_glob, "train_glob"), (val, spec.val_glob, "val_glob")):
        if files is None:
            continue
        if not files:
            raise DataError(f"{folder}: no files match corpus.{key}={pattern!r}.")
        if all(p.stat().st_size == 0 for p in files):
            raise DataError(f"{folder}: every file matching corpus.{key}={pattern!r} is empty.")
    return folder, train, val


_USABLE: dict[str, tuple[Path, list[Path], list[Path] | None]] = {}


def usable_text_files(spec: "CorpusSpec | Mapping[str, Any]") -> tuple[Path, list[Path], list[Path] | None]:
    """text_files(spec) after decoding every file once with corpus.encoding: under corpus.errors=strict
    one DataError lists every undecodable file (not only the first, so one rerun fixes them all);
    under skip those files are dropped with a warning naming them; under replace all are kept.
    Memoised per corpus fingerprint (the scan reads the whole corpus)."""
    spec = CorpusSpec.of(spec)
    key = fingerprint(spec)
    if key in _USABLE:
        return _USABLE[key]
    folder, train, val = text_files(spec)
    encoding, errors = spec.encoding, spec.errors
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


def check_corpus(spec: "CorpusSpec | Mapping[str, Any]") -> None:
    """Everything about the corpus that needs its files, before any compute: for a text folder that
    the files exist and decode (usable_text_files). Synthetic text is generated by robablate; a hub
    dataset is loaded here only when it replaces an absent local copy (so that an offline machine
    learns it before any compute, with both ways to get the data)."""
    spec = CorpusSpec.of(spec)
    source = spec.source()
    if source.kind == "text":
        usable_text_files(source)
    elif source is not spec:
        _load_hf(source, source.split or "train")


def _file_documents(files: list[Path], boundary: str, split: bool, encoding: str = "utf-8",
                    errors: str = "strict") -> Iterator[list[str]]:
    for path in files:  # a file boundary always ends a document
        yield from documents_from_lines(read_lines(path, encoding, errors), boundary, split)


# ---------------------------------------------------------------- Hugging Face datasets

def _load_hf(spec: CorpusSpec, split_name: str):
    name, config = spec.name, spec.config
    try:
        import datasets
        return datasets.load_dataset(name, config, split=split_name)
    except Exception as e:  # offline, unknown dataset/config/split: say which keys to check
        if spec.local_path is not None:  # the hub was the fallback for a missing local copy: name both ways
            raise DataError(
                f"corpus: the local copy {spec.local_path} is not a folder, and the Hugging Face hub fallback "
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


def iter_documents(spec: "CorpusSpec | Mapping[str, Any]", split: str, *,
                   cache_dir: str | os.PathLike | None = None) -> Iterator[list[str]]:
    """Stream the documents of `split` ("train" or "val"): each a non-empty list of non-empty sentences.
    `spec` is a CorpusSpec (a mapping is checked into one). `cache_dir` holds the generated synthetic
    corpus (default: $ROBABLATE_CACHE or .cache)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = CorpusSpec.of(spec).source()
    if spec.kind == "synthetic":
        folder = synthetic.ensure_corpus(spec.generator, cache_dir or default_cache_dir())
        # Written once as a text folder, read by the text reader: one code path for both.
        return iter_documents(CorpusSpec(kind="text", name="synthetic", path=str(folder), train_glob="train.txt",
                                         val_glob="val.txt", split_sentences=False), split)
    boundary, split_sents, max_docs, frac = _options(spec)
    cap = (lambda it: itertools.islice(it, max_docs)) if max_docs else (lambda it: it)

    if spec.kind == "text":
        folder, train, val = usable_text_files(spec)
        dec = spec.encoding, spec.errors
        where = f"{folder} (corpus.{'val_glob' if split == 'val' and val else 'train_glob'})"
        if val is not None:
            return _nonempty(cap(_file_documents(train if split == "train" else val, boundary, split_sents, *dec)),
                             where)
        factory = lambda: cap(_file_documents(train, boundary, split_sents, *dec))  # noqa: E731
        # Counting needs no sentence splitting: a document is non-empty either way.
        count = _counted(fingerprint(spec), lambda: cap(_file_documents(train, boundary, False, *dec)))
        return _nonempty(_holdout(factory, count, split, frac, str(folder)), where)

    column = spec.text_column or "text"
    where = f"hf dataset {spec.name}/{spec.config}"
    if spec.val_split:
        ds = _load_hf(spec, (spec.split or "train") if split == "train" else spec.val_split)
        return _nonempty(cap(hf_documents(ds, column, boundary, split_sents)), where)
    factory = lambda: cap(hf_documents(_load_hf(spec, spec.split or "train"), column, boundary, split_sents))  # noqa: E731
    count = _counted(fingerprint(spec), factory)
    return _nonempty(_holdout(factory, count, split, frac, where), where)


def fingerprint(spec: "CorpusSpec | Mapping[str, Any]") -> str:
    """A stable hash of what the documents depend on, cheap to compute:
    synthetic: the generator parameters (the text is a pure function of them);
    text: reader options + each file's path relative to the folder, size and mtime_ns (no content read;
          an edit that keeps both size and mtime would be missed, copying the folder only costs a rebuild);
    hf: dataset name/config/splits + reader options (the hub data itself is not hashed)."""
    spec = CorpusSpec.of(spec).source()
    if spec.kind == "synthetic":
        return cache_key("corpus", spec.kind, synthetic.GENERATOR_VERSION, dict(spec.generator))
    if spec.kind == "text":
        folder, train, val = text_files(spec)
        stat = lambda files: [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)  # noqa: E731
                              for p in files]
        # The decoding joins the key only when it is not the default, so existing caches stay valid.
        dec = (spec.encoding, spec.errors)
        extra = [dec] if dec != ("utf-8", "strict") else []
        return cache_key("corpus", spec.kind, _options(spec), stat(train), stat(val) if val is not None else None,
                         *extra)
    hub = {"name": spec.name, "config": spec.config, "split": spec.split, "val_split": spec.val_split,
           "text_column": spec.text_column}
    return cache_key("corpus", spec.kind, _options(spec), hub)
