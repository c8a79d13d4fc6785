"""BLiMP minimal pairs (Warstadt et al., TACL 2020) in the official layout.

The release (github.com/alexwarstadt/blimp, data/) is a folder of 67 `<UID>.jsonl` files, one JSON
object per line with `sentence_good`, `sentence_bad`, `field`, `linguistics_term`, `UID`, `pairID`
(and flags the reader ignores). Any folder in that layout reads, including a cut of the files.

Field spelling: the upstream files write the syntax-semantics field two ways (`syntax_semantics`
and `syntax/semantics`); `normalize_field` maps both to `syntax_semantics` (any `/`, `-` or space
becomes `_`), so per-field accuracies do not split one field in two.

Terms: `linguistics_term` is kept as the files spell it. The release has 13: the paper's 12 phenomena
plus `s-selection` for the two animate_subject paradigms, which the paper's tables count under
argument structure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from robablate.errors import DataError

REQUIRED_KEYS = ("sentence_good", "sentence_bad", "field", "linguistics_term", "UID", "pairID")


@dataclass(frozen=True)
class MinimalPair:
    good: str
    bad: str
    uid: str        # the paradigm (e.g. adjunct_island)
    term: str       # linguistics_term: one of the paper's 12 phenomena (e.g. island_effects)
    field: str      # normalised: syntax, morphology, semantics, syntax_semantics
    pair_id: str


# The four fields of the BLiMP release, as normalize_field writes them (results["blimp"]["by_field"] keys).
FIELDS = ("morphology", "syntax", "semantics", "syntax_semantics")


def normalize_field(field: str) -> str:
    """`syntax/semantics` and `syntax_semantics` (both upstream spellings) -> `syntax_semantics`."""
    return re.sub(r"[/\- ]+", "_", field.strip().lower())


def _parse_line(path: Path, lineno: int, line: str) -> MinimalPair:
    where = f"{path}:{lineno}"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); expected one BLiMP "
                        f"pair object per line") from e
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with keys {', '.join(REQUIRED_KEYS)}, "
                        f"got {type(obj).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)} (a BLiMP line needs "
                        f"{', '.join(REQUIRED_KEYS)})")
    for k in ("sentence_good", "sentence_bad", "field", "linguistics_term", "UID"):
        if not isinstance(obj[k], str) or not obj[k].strip():
            raise DataError(f"{where}: `{k}` must be a non-empty string, got {obj[k]!r}")
    if not isinstance(obj["pairID"], (str, int)) or isinstance(obj["pairID"], bool):
        raise DataError(f"{where}: `pairID` must be a string or integer, got {obj['pairID']!r}")
    return MinimalPair(good=obj["sentence_good"].strip(), bad=obj["sentence_bad"].strip(),
                       uid=obj["UID"].strip(), term=obj["linguistics_term"].strip(),
                       field=normalize_field(obj["field"]), pair_id=str(obj["pairID"]))


def read_paradigm(path: str | Path, max_pairs: int | None = None) -> list[MinimalPair]:
    """The pairs of one `<UID>.jsonl` file (the first `max_pairs` if given); blank lines are skipped.

    Raises DataError naming the file and line for malformed JSON, missing keys, empty sentences, or a
    line whose UID / linguistics_term / field differs from the file's first line (one paradigm a file).
    """
    path = Path(path)
    pairs: list[MinimalPair] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read BLiMP file ({e})") from e
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if max_pairs is not None and len(pairs) >= max_pairs:
            break
        pair = _parse_line(path, lineno, line)
        if pairs:
            first = pairs[0]
            for name, a, b in (("UID", first.uid, pair.uid), ("linguistics_term", first.term, pair.term),
                               ("field", first.field, pair.field)):
                if a != b:
                    raise DataError(f"{path}:{lineno}: `{name}` is {b!r} but earlier lines of this file "
                                    f"have {a!r} (one paradigm per file)")
        pairs.append(pair)
    if not pairs:
        raise DataError(f"{path}: no BLiMP pairs (empty file)")
    return pairs


def paradigm_files(data_dir: str | Path, suffix: str = ".jsonl", suite: str = "BLiMP",
                   layout: str = "github.com/alexwarstadt/blimp data/") -> list[Path]:
    """The sorted `*<suffix>` files of a minimal-pairs folder (one paradigm a file: BLiMP, Zorro);
    DataError if the folder is missing or has none."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"{suite} folder {d} does not exist (expected a folder of <paradigm>{suffix} files, "
                        f"the layout of {layout})")
    files = sorted(p for p in d.glob(f"*{suffix}") if p.is_file())
    if not files:
        raise DataError(f"{suite} folder {d} has no *{suffix} files (expected one <paradigm>{suffix} per paradigm)")
    return files


def read_blimp(data_dir: str | Path, max_pairs: int | None = None) -> list[MinimalPair]:
    """All pairs of a BLiMP folder, paradigm files in name order; DataError if two files share a UID."""
    pairs: list[MinimalPair] = []
    seen: dict[str, Path] = {}
    for f in paradigm_files(data_dir):
        ps = read_paradigm(f, max_pairs)
        uid = ps[0].uid
        if uid in seen:
            raise DataError(f"{f}: paradigm UID {uid!r} also comes from {seen[uid]}")
        seen[uid] = f
        pairs.extend(ps)
    return pairs
