"""Text -> documents: sentence splitting, WikiText headings, lines decoded with their positions, hub rows.

A document is a list of non-empty sentences; documents are never empty. These are pure functions of
their input (lines, a file, dataset rows), streamed: data/corpus.py decides which files or rows of a
corpus they read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from robablate.errors import ConfigError, DataError

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
