"""Deterministic WordPiece training (the same algorithm as tokenizers' WordPieceTrainer, reproducible).

tokenizers' WordPieceTrainer is BPE with a "##" continuing-subword prefix, and it returns a different
vocabulary from one run to the next on the same text: the "##" tokens get their ids in hash-map order,
and those ids break ties between equally frequent merges (huggingface/tokenizers#1794; fix proposed in
#2066). Measured here on the smoke corpus: 3 trainings, 3 vocabularies, 4 tokens apart, 107 ids moved.
So an arm re-run from a fresh cache would not reproduce its numbers.

Its plain BPE trainer is deterministic (the alphabet is sorted and every other token comes from a
merge, ties broken by those ids). So the same algorithm runs through it: every non-initial character
of a word is written as its own private-use code point (a distinct symbol, as "##c" is for
WordPiece), BPE learns the merges, and the tokens are mapped back to WordPiece's "##" form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from robablate.errors import DataError

# Supplementary Private Use Areas A and B: code points no text in a corpus is expected to use (any
# that does is skipped), one per distinct continuation character.
_PRIVATE = (range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))
_CHUNK = 8192  # words per string handed to the trainer


def word_counts(sentences: Iterable[list[str]] | Iterable[str], normalizer, pre_tokenizer) -> Counter:
    """Counts of the pre-tokenized words of `sentences` (strings or batches of strings)."""
    counts: Counter = Counter()
    for item in sentences:
        # One call per batch: sentences joined by a newline split into the same words as one by one
        # (the pre-tokenizer splits on whitespace), at a fraction of the Python overhead.
        text = item if isinstance(item, str) else "\n".join(item)
        counts.update([w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))])
    return counts


def _continuation_symbols(counts: Counter, alphabet: set[str]) -> dict[str, str]:
    """A private-use code point (not in `alphabet`, the corpus's characters) for every character that
    occurs after the first of a word."""
    chars = sorted(set().union(*(set(w[1:]) for w in counts)) if counts else set())
    free = (chr(c) for area in _PRIVATE for c in area if chr(c) not in alphabet)
    try:
        return {c: next(free) for c in chars}
    except StopIteration:
        raise DataError(f"the corpus has {len(chars)} distinct characters inside words, more than the "
                        f"private-use code points the WordPiece trainer can map them to") from None


def train_wordpiece_vocab(counts: Counter, vocab_size: int, min_frequency: int,
                          special_tokens: list[str], prefix: str = "##") -> dict[str, int]:
    """WordPiece vocabulary (token -> id, special tokens first) from word counts, deterministically."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    alphabet = set().union(*map(set, counts)) if counts else set()
    cont = _continuation_symbols(counts, alphabet)
    back = {v: k for k, v in cont.items()}

    def mapped_words():
        for w, n in sorted(counts.items()):  # sorted: the stream itself is reproducible
            m = w[0] + "".join(cont[c] for c in w[1:])
            for k in range(0, n, _CHUNK):
                yield " ".join([m] * min(_CHUNK, n - k))

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Every character also stands alone at a word start (as in WordPieceTrainer's alphabet), so no
    # word of a known alphabet becomes [UNK] for starting with a letter seen only inside words.
    bpe.train_from_iterator(mapped_words(), trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(special_tokens),
        initial_alphabet=sorted(alphabet), show_progress=False))
    vocab = {}
    for token, i in bpe.get_vocab().items():
        if token in special_tokens:
            vocab[token] = i
        elif token[0] in back:  # starts inside a word: "##" + the characters
            vocab[prefix + "".join(back[c] for c in token)] = i
        else:  # starts a word: the first character as is, the rest were continuation symbols
            vocab[token[0] + "".join(back.get(c, c) for c in token[1:])] = i
    return vocab
