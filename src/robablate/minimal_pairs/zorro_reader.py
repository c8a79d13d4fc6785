"""Zorro minimal pairs (Huebner et al., "BabyBERTa: Learning More Grammar With Small-Scale
Child-Directed Language", CoNLL 2021; github.com/phueb/Zorro, MIT) in the release's layout.

The release (sentences/babyberta/) is a folder of 23 `<paradigm>.txt` files of 2,000 pairs each, one
sentence per line: lines 1, 3, 5, ... (odd, counting from 1) are ungrammatical, lines 2, 4, 6, ... are
grammatical, and lines 2k-1 and 2k form a pair. The file name is the paradigm; it starts with its
phenomenon (`agreement_subject_verb-across_relative_clause`, `island-effects-adjunct_island`), and two
phenomena have a hyphen in their own name, so the phenomena are listed (the 13 of the paper's Table 2).
Pairs are `blimp_reader.MinimalPair`s: `uid` the paradigm, `term` its phenomenon, `field` "zorro".
"""

from __future__ import annotations

from pathlib import Path

from robablate.minimal_pairs.blimp_reader import MinimalPair, paradigm_files
from robablate.errors import DataError

# Zorro's phenomena, as its paradigm files spell them (phueb/Zorro, sentences/babyberta/).
PHENOMENA = ("agreement_determiner_noun", "agreement_subject_verb", "anaphor_agreement", "argument_structure",
             "binding", "case", "ellipsis", "filler-gap", "irregular", "island-effects", "local_attractor",
             "npi_licensing", "quantifiers")
FIELD = "zorro"


def phenomenon(paradigm: str) -> str:
    """The phenomenon a paradigm file belongs to: the listed one its name starts with, else the text
    before the first hyphen (a paradigm a later release adds)."""
    known = [p for p in PHENOMENA if paradigm.startswith(p + "-")]
    return max(known, key=len) if known else paradigm.split("-", 1)[0]


def read_paradigm(path: str | Path, max_pairs: int | None = None) -> list[MinimalPair]:
    """The pairs of one `<paradigm>.txt` (the first `max_pairs` if given): DataError naming the file
    and line for an empty line, an odd number of lines or an unreadable file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read Zorro file ({e})") from e
    while lines and not lines[-1].strip():
        lines.pop()  # a trailing blank line is not a sentence
    if not lines:
        raise DataError(f"{path}: no Zorro pairs (empty file)")
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}:{lineno}: empty line; a Zorro file has one sentence per line "
                            f"(odd lines ungrammatical, even lines grammatical)")
    if len(lines) % 2:
        raise DataError(f"{path}:{len(lines)}: odd number of lines ({len(lines)}); lines 2k-1 (ungrammatical) "
                        f"and 2k (grammatical) form a pair")
    uid = path.stem
    pairs = [MinimalPair(good=lines[k + 1].strip(), bad=lines[k].strip(), uid=uid, term=phenomenon(uid),
                         field=FIELD, pair_id=str(k // 2)) for k in range(0, len(lines), 2)]
    return pairs[:max_pairs] if max_pairs is not None else pairs


def read_zorro(data_dir: str | Path, max_pairs: int | None = None) -> list[MinimalPair]:
    """All pairs of a Zorro folder, paradigm files in name order; DataError if the folder is missing
    or holds no `*.txt` paradigm file (LICENSE and other files are ignored)."""
    files = paradigm_files(data_dir, ".txt", "Zorro", "github.com/phueb/Zorro sentences/babyberta/")
    return [pair for f in files for pair in read_paradigm(f, max_pairs)]
