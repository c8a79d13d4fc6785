"""The embedded synthetic corpus (so `python run.py` needs no download).

A fixed "world" (built from `world_seed`) has topics grouped into 4 topic groups; each topic owns a
content vocabulary (nouns, adjectives and an *ordered* script of verbs) and each group owns place names.
A document picks one topic and a small cast of named entities, introduces them, then tells events whose
verbs follow the topic's script in order. So there is signal where BERT/RoBERTa look for it: words
predict their topic (MLM), the next sentence continues the cast, topic and script (NSP, SEGMENT-PAIR
vs FULL/DOC-SENTENCES, RoBERTa §4.2), and a role noun ("the trader") refers back to an entity named
earlier. The synthetic GLUE-format tasks are drawn from the same world (glue/synthetic_tasks.py).

The corpus is cached on disk under a hash of the generator parameters and built atomically.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robablate.io import atomic_dir, atomic_write_text, cache_key
from robablate.errors import ConfigError, int_at_least

GENERATOR_VERSION = 1  # bump when the generated text changes, so old caches are not reused
N_GROUPS = 4  # topic groups (the SYN-TOPIC classes)
WORLD_SEED = 0
FOCUS_NOUNS, FOCUS_ADJS = 8, 6  # per-document subsets of the topic's nouns / adjectives
DEFAULTS: dict[str, Any] = {
    "num_docs": 5000, "num_val_docs": 200, "seed": 0, "world_seed": WORLD_SEED, "num_topics": 24,
    "min_events": 4, "max_events": 14, "glue_train_rows": 400, "glue_dev_rows": 200,
}
# rng streams: documents are generated from default_rng([seed, stream, split, index]), so the corpus
# (streams 0/1), each synthetic task (stream TASK_STREAM + task) and any prefix of them never share a
# document seed.
_TRAIN, _VAL, TASK_STREAM = 0, 1, 10

# Template words (real English); they carry no topic, like function words in real text.
_FIRST, _LAST = "first, ", "finally, "
_MIDDLE = ("then ", "next, ", "later, ", "after that, ", "soon ", "")
_COMMON_ADJS = ("old", "new", "small", "large", "early", "late", "good", "quiet", "long", "great")
_COMMON_NOUNS = ("day", "year", "time", "place", "way", "people", "part", "world", "week", "story")
_INTROS = (
    "{name} was a {adj} {role} from {place}.",
    "there was a {role} named {name} in {place}.",
    "{name}, a {adj} {role}, lived near {place}.",
)
# {m} marker, {name}/{name2} cast members, {role} the subject's role noun (a back-reference to the
# entity introduced earlier), {verb} the current step of the topic's script.
_EVENTS = (
    "{m}{name} {verb} the {adj} {noun}.",
    "{m}the {role} {verb} a {noun} with {name2}.",
    "{m}{name} and {name2} {verb} the {noun} near {place}.",
    "{m}{name} {verb} the {adj} {noun} near {place}.",
    "{m}the {adj} {noun} was {verb} by the {role}.",
    "{m}it was a {cadj} {cnoun} for {name}, who {verb} the {noun}.",
)
_HAS_OBJECT = tuple("{name2}" in e for e in _EVENTS)

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gl", "kr", "pl", "st", "tr", "sk", "th", "sh", "ch")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "k", "nd", "st")


@dataclass(frozen=True)
class World:
    """Vocabulary of the synthetic language. Topic t belongs to group t // topics_per_group."""

    nouns: tuple[tuple[str, ...], ...]   # [topic] -> nouns
    adjs: tuple[tuple[str, ...], ...]    # [topic] -> adjectives
    verbs: tuple[tuple[str, ...], ...]   # [topic] -> the topic's script, in event order
    places: tuple[tuple[str, ...], ...]  # [group] -> place names
    names: tuple[str, ...]               # entity names (no topic)

    @property
    def num_topics(self) -> int:
        return len(self.nouns)

    def group(self, topic: int) -> int:
        return int(topic) // (self.num_topics // N_GROUPS)

    def topic_words(self, topic: int) -> set[str]:
        """Content words of a topic (and its group's places): what topic continuity is measured on."""
        return set(self.nouns[topic]) | set(self.adjs[topic]) | set(self.verbs[topic]) | set(
            self.places[self.group(topic)])


def _make_words(rng: np.random.Generator, n: int, exclude: set[str]) -> list[str]:
    """`n` distinct pronounceable lowercase words (2-3 consonant-vowel syllables + optional coda)."""
    words: list[str] = []
    seen = set(exclude)
    while len(words) < n:
        m = 2 * (n - len(words)) + 64
        syl = rng.integers(2, 4, size=m)
        on = rng.integers(len(_ONSETS), size=(m, 3))
        vo = rng.integers(len(_VOWELS), size=(m, 3))
        co = rng.integers(len(_CODAS), size=m)
        for i in range(m):
            w = "".join(_ONSETS[on[i, j]] + _VOWELS[vo[i, j]] for j in range(syl[i])) + _CODAS[co[i]]
            if w not in seen:
                seen.add(w)
                words.append(w)
    return words[:n]


@functools.lru_cache(maxsize=8)
def make_world(num_topics: int = 24, world_seed: int = WORLD_SEED, nouns_per_topic: int = 48,
               adjs_per_topic: int = 24, verbs_per_topic: int = 16, places_per_group: int = 32,
               num_names: int = 512) -> World:
    """The fixed vocabulary (~2.8k distinct words by default, so a 4k-8k WordPiece vocab holds them whole)."""
    if num_topics < 2 * N_GROUPS or num_topics % N_GROUPS:
        raise ConfigError(f"corpus.num_topics: expected a multiple of {N_GROUPS} that is >= {2 * N_GROUPS} "
                          f"(topics are split evenly into {N_GROUPS} groups), got {num_topics!r}.")
    rng = np.random.default_rng([world_seed, 7])
    template_words = {w.strip(",.") for t in _INTROS + _EVENTS + (_FIRST, _LAST) + _MIDDLE for w in t.split()}
    exclude = template_words | set(_COMMON_ADJS) | set(_COMMON_NOUNS)
    per_topic = nouns_per_topic + adjs_per_topic + verbs_per_topic
    words = _make_words(rng, num_topics * per_topic + N_GROUPS * places_per_group + num_names, exclude)
    it = iter(words)
    take = lambda k: tuple(next(it) for _ in range(k))  # noqa: E731
    nouns, adjs, verbs = zip(*[(take(nouns_per_topic), take(adjs_per_topic), take(verbs_per_topic))
                               for _ in range(num_topics)])
    places = tuple(take(places_per_group) for _ in range(N_GROUPS))
    return World(nouns=tuple(nouns), adjs=tuple(adjs), verbs=tuple(verbs), places=places, names=take(num_names))


def _distinct(idx: list[int], n: int) -> list[int]:
    """Make small index lists duplicate-free (cast members must differ) by stepping past collisions."""
    out: list[int] = []
    for i in idx:
        while i in out:
            i = (i + 1) % n
        out.append(i)
    return out


def generate_document(rng: np.random.Generator, world: World, *, topic: int | None = None,
                      min_events: int = 4, max_events: int = 14) -> tuple[int, list[str]]:
    """One document: (topic, sentences). All random draws come from three vectorised calls (floats
    scaled to index ranges); only the string formatting is per sentence."""
    h = rng.random(3 + 4 * 4)
    t = int(h[0] * world.num_topics) if topic is None else int(topic)
    verbs, places = world.verbs[t], world.places[world.group(t)]
    # A document keeps returning to a few of its topic's nouns and adjectives (as real documents do),
    # so neighbouring sentences share words; other documents of the topic use other subsets.
    f = rng.random(len(world.nouns[t]) + len(world.adjs[t]))
    nouns = [world.nouns[t][i] for i in np.argsort(f[:len(world.nouns[t])])[:FOCUS_NOUNS]]
    adjs = [world.adjs[t][i] for i in np.argsort(f[len(world.nouns[t]):])[:FOCUS_ADJS]]
    k = 2 + int(h[1] * 3)  # cast size 2..4
    n = min_events + int(h[2] * (max_events - min_events + 1))
    c = h[3:].reshape(4, 4)[:, :k]  # per cast member: name, intro adjective, place, intro template
    names = [world.names[i] for i in _distinct((c[0] * len(world.names)).astype(int).tolist(), len(world.names))]
    roles = nouns[:k]  # distinct role nouns: "the <role>" refers back to one entity
    intro_a, intro_p, intro_t = ((c[j] * size).astype(int).tolist()
                                 for j, size in ((1, len(adjs)), (2, len(places)), (3, len(_INTROS))))
    sents = [_INTROS[intro_t[e]].format(name=names[e], adj=adjs[intro_a[e]], role=roles[e], place=places[intro_p[e]])
             for e in range(k)]

    u = rng.random((11, max(n, len(verbs))))
    # Events follow the topic's script in order (sorted steps): sentence order carries signal.
    if n <= len(verbs):
        steps = np.sort(np.argsort(u[0, :len(verbs)])[:n])
    else:
        steps = np.sort((u[0, :n] * len(verbs)).astype(int))
    sizes = (k, k - 1, len(_EVENTS), len(_MIDDLE), len(nouns), len(adjs), len(places), len(_COMMON_ADJS),
             len(_COMMON_NOUNS))
    subj, obj, tmpl, mid, noun, adj, place, cadj, cnoun = (
        (u[j + 1, :n] * size).astype(int).tolist() for j, size in enumerate(sizes))
    stay = u[10, :n].tolist()
    prev_s = prev_o = k - 1  # the entity introduced last
    for i in range(n):
        # Local coherence: the subject usually stays on the previous sentence's subject or object.
        s = prev_s if stay[i] < 0.45 else prev_o if stay[i] < 0.7 else subj[i]
        o = (s + 1 + obj[i]) % k
        m = _FIRST if i == 0 else _LAST if i == n - 1 else _MIDDLE[mid[i]]
        sents.append(_EVENTS[tmpl[i]].format(
            m=m, name=names[s], name2=names[o], role=roles[s], verb=verbs[steps[i]],
            adj=adjs[adj[i]], noun=nouns[noun[i]], place=places[place[i]],
            cadj=_COMMON_ADJS[cadj[i]], cnoun=_COMMON_NOUNS[cnoun[i]]))
        prev_s, prev_o = s, o if _HAS_OBJECT[tmpl[i]] else s
    return t, sents


# ---------------------------------------------------------------- config and the pretraining corpus

def params(cfg_corpus: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The generator parameters of a corpus config (defaults filled in, validated): the cache key."""
    p = dict(DEFAULTS)
    for key in DEFAULTS:
        if cfg_corpus is not None and cfg_corpus.get(key) is not None:
            p[key] = cfg_corpus.get(key)
    for key in ("num_docs", "num_val_docs", "min_events", "max_events", "glue_train_rows", "glue_dev_rows",
                "seed", "world_seed", "num_topics"):
        p[key] = int_at_least(p[key], f"corpus.{key}", 0 if key in ("seed", "world_seed") else 1)
    if p["max_events"] < p["min_events"]:
        raise ConfigError(f"corpus.max_events: must be >= corpus.min_events ({p['min_events']}), "
                          f"got {p['max_events']}.")
    make_world(p["num_topics"], p["world_seed"])  # validates num_topics
    return p


def iter_synthetic(p: Mapping[str, Any], split: str) -> Iterator[list[str]]:
    """The corpus documents of a split straight from the generator (document i depends only on
    (seed, split, i), so a smaller num_docs gives a prefix of a larger one)."""
    world = make_world(p["num_topics"], p["world_seed"])
    stream, n = (_TRAIN, p["num_docs"]) if split == "train" else (_VAL, p["num_val_docs"])
    for i in range(n):
        rng = np.random.default_rng([p["seed"], stream, 0, i])
        yield generate_document(rng, world, min_events=p["min_events"], max_events=p["max_events"])[1]


def corpus_key(p: Mapping[str, Any]) -> str:
    keys = ("num_docs", "num_val_docs", "seed", "world_seed", "num_topics", "min_events", "max_events")
    return cache_key("synthetic-corpus", GENERATOR_VERSION, {k: p[k] for k in keys})


def ensure_corpus(cfg_corpus: Mapping[str, Any] | None, cache_dir: str | os.PathLike) -> Path:
    """Folder with train.txt and val.txt in the text-corpus layout (one sentence per line, blank line
    between documents), generated once per parameter set and shared by every arm of a sweep."""
    p = params(cfg_corpus)
    final = Path(cache_dir) / "synthetic" / f"corpus-{corpus_key(p)}"

    def build(tmp: Path) -> None:
        for split in ("train", "val"):
            with open(tmp / f"{split}.txt", "w", encoding="utf-8", newline="\n") as f:
                for doc in iter_synthetic(p, split):
                    f.write("\n".join(doc) + "\n\n")
        atomic_write_text(tmp / "meta.json", json.dumps({"generator_version": GENERATOR_VERSION, **p}, indent=2))

    atomic_dir(final, build)
    return final


def generator_params(cfg_corpus_or_seed: Mapping[str, Any] | int | None) -> dict[str, Any]:
    """The generator parameters a corpus config implies: a synthetic corpus's own, else the default
    world with the config's `seed` (or a plain seed). The synthetic GLUE tasks are drawn with them, so
    they share the synthetic corpus's world."""
    if isinstance(cfg_corpus_or_seed, Mapping) or hasattr(cfg_corpus_or_seed, "get"):
        cfg = cfg_corpus_or_seed
        if (cfg.get("kind") or cfg.get("name")) == "synthetic":
            return params(cfg)
        return {**DEFAULTS, "seed": int(cfg.get("seed") or 0)}
    return {**DEFAULTS, "seed": int(cfg_corpus_or_seed or 0)}
