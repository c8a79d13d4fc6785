"""The embedded synthetic corpus and synthetic GLUE-format tasks (so `python run.py` needs no download).

A fixed "world" (built from `world_seed`) has topics grouped into 4 topic groups; each topic owns a
content vocabulary (nouns, adjectives and an *ordered* script of verbs) and each group owns place names.
A document picks one topic and a small cast of named entities, introduces them, then tells events whose
verbs follow the topic's script in order. So there is signal where BERT/RoBERTa look for it: words
predict their topic (MLM), the next sentence continues the cast, topic and script (NSP, SEGMENT-PAIR
vs FULL/DOC-SENTENCES, RoBERTa §4.2), and a role noun ("the trader") refers back to an entity named
earlier.

The GLUE-format tasks are drawn from the same world with fresh document seeds:
- SYN-TOPIC (SST-2 layout): label = topic group; dev sentences use the *other half* of each topic's
  words, unseen in the fine-tuning train set, so only word-topic associations learned in pretraining
  carry over.
- SYN-NEXT (RTE layout): is sentence2 the next sentence of sentence1, or the sentence at the same
  position of another document (half of those from the same topic)?
- SYN-SIM (STS-B layout): score = 5 x shared attributes (group, topic, entity, verb) / 4.
- SYN-ORDER (CoLA layout, Matthews correlation): is `{name} {verb} the {adj} {noun} near {place}.` in
  the corpus's word order, or have two words of different classes swapped places? Every row has the
  same words in both cases, and dev rows use only words the fine-tuning train set never shows, so
  the label is decidable exactly when the encoder knows each word's class (name, verb, adjective,
  noun, place) from pretraining. That is what MLM learns first: measured, a 1-layer encoder after
  ~1500 MLM steps (1.5M tokens, 50 s here) reaches MCC ~0.4 while random initialisation stays ~0
  (tests/test_glue_pipeline.py). SYN-TOPIC needs word-topic associations, which a tiny MLM had not
  learned after 4M tokens (its embeddings place unseen words in their topic group at chance).

Everything is cached on disk under a hash of the generator parameters and built atomically.
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

from robablate.io import atomic_dir, cache_key
from robablate.errors import ConfigError
from robablate.io import atomic_write_text

GENERATOR_VERSION = 1  # bump when the generated text changes, so old caches are not reused
SYNTHETIC_TASKS = ("SYN-TOPIC", "SYN-NEXT", "SYN-SIM", "SYN-ORDER")
N_GROUPS = 4  # SYN-TOPIC has 4 classes: the topic groups
WORLD_SEED = 0
FOCUS_NOUNS, FOCUS_ADJS = 8, 6  # per-document subsets of the topic's nouns / adjectives
DEFAULTS: dict[str, Any] = {
    "num_docs": 5000, "num_val_docs": 200, "seed": 0, "world_seed": WORLD_SEED, "num_topics": 24,
    "min_events": 4, "max_events": 14, "glue_train_rows": 400, "glue_dev_rows": 200,
}
# rng streams: documents are generated from default_rng([seed, stream, split, index]), so the corpus
# (streams 0/1), each task (stream 10 + task) and any prefix of them never share a document seed.
_TRAIN, _VAL, _TASK = 0, 1, 10

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
# The SYN-TOPIC / SYN-SIM sentence: event template 3 without a marker, so it reads like corpus text.
_TASK_SENTENCE = "{name} {verb} the {adj} {noun} near {place}."

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
        v = p[key]
        lo = 0 if key in ("seed", "world_seed") else 1
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ConfigError(f"corpus.{key}: expected an integer >= {lo}, got {v!r}.")
        p[key] = int(v)
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


def text_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The `corpus=text` config that reads a folder written by `ensure_corpus`."""
    return {"kind": "text", "name": "synthetic", "path": str(folder), "train_glob": "train.txt",
            "val_glob": "val.txt", "document_boundary": "blank_line", "split_sentences": False, "max_docs": None}


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


# ---------------------------------------------------------------- synthetic GLUE-format tasks

def _task_rng(seed: int, task: int, split: str, row: int, part: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _TASK + task, 0 if split == "train" else 1, row, part])


def _task_sentence(rng: np.random.Generator, world: World, topic: int, *, half: int | None = None,
                   name: int | None = None, verb: int | None = None) -> str:
    """`{name} {verb} the {adj} {noun} near {place}.` with the topic's words; `half` (0 or 1) keeps
    only every other word of each list, so train and dev content words are disjoint."""
    sl = slice(None) if half is None else slice(half, None, 2)
    nouns, adjs, verbs = world.nouns[topic][sl], world.adjs[topic][sl], world.verbs[topic][sl]
    places = world.places[world.group(topic)][sl]
    name = int(rng.integers(len(world.names))) if name is None else name
    verb = int(rng.integers(len(verbs))) if verb is None else verb
    return _TASK_SENTENCE.format(name=world.names[name], verb=verbs[verb], adj=adjs[rng.integers(len(adjs))],
                                 noun=nouns[rng.integers(len(nouns))], place=places[rng.integers(len(places))])


def topic_rows(world: World, seed: int, split: str, n: int) -> list[tuple[str, str]]:
    """SYN-TOPIC rows (sentence, label): label = topic group, balanced; train uses word half 0,
    dev half 1 (SST-2 layout)."""
    tpg = world.num_topics // N_GROUPS
    rows = []
    for r in range(n):
        rng = _task_rng(seed, 0, split, r)
        label = r % N_GROUPS
        topic = label * tpg + int(rng.integers(tpg))
        rows.append((_task_sentence(rng, world, topic, half=0 if split == "train" else 1), str(label)))
    order = np.random.default_rng([seed, _TASK, 9, split == "dev"]).permutation(n)
    return [rows[i] for i in order]


def next_rows(world: World, seed: int, split: str, n: int, min_events: int = 4,
              max_events: int = 14) -> list[tuple[str, str, str]]:
    """SYN-NEXT rows (sentence1, sentence2, label), balanced: entailment when sentence2 follows
    sentence1 in a document; otherwise sentence2 is the sentence at the same position of another
    document (same topic for half of them), so position cues ("first", "finally") do not give it away."""
    rows = []
    for r in range(n):
        rng = _task_rng(seed, 1, split, r)
        t, doc = generate_document(rng, world, min_events=min_events, max_events=max_events)
        i = int(rng.integers(len(doc) - 1))
        if r % 2 == 0:
            rows.append((doc[i], doc[i + 1], "entailment"))
            continue
        t_other = None if r % 4 == 1 else t  # r % 4 == 3: same topic, different cast and events
        _, other = generate_document(_task_rng(seed, 1, split, r, 1), world, topic=t_other,
                                     min_events=min_events, max_events=max_events)
        rows.append((doc[i], other[min(i + 1, len(other) - 1)], "not_entailment"))
    order = np.random.default_rng([seed, _TASK + 1, 9, split == "dev"]).permutation(n)
    return [rows[i] for i in order]


def sim_score(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """5 x the fraction of shared attributes (group, topic, entity, verb); a verb belongs to one topic,
    so the verb attribute is (topic, verb index)."""
    (ga, ta, na, va), (gb, tb, nb, vb) = a, b
    shared = (ga == gb) + (ta == tb) + (na == nb) + (ta == tb and va == vb)
    return 5.0 * shared / 4


def sim_rows(world: World, seed: int, split: str, n: int) -> list[tuple[str, str, float]]:
    """SYN-SIM rows (sentence1, sentence2, score); row r aims at r % 5 shared attributes, so the five
    score levels 0, 1.25, 2.5, 3.75, 5 are balanced."""
    T, tpg, n_names, n_verbs = world.num_topics, world.num_topics // N_GROUPS, len(world.names), len(world.verbs[0])
    rows = []
    for r in range(n):
        rng = _task_rng(seed, 2, split, r)
        level, variant = r % 5, int(rng.integers(2))
        t1, n1, v1 = int(rng.integers(T)), int(rng.integers(n_names)), int(rng.integers(n_verbs))
        g1 = world.group(t1)
        other_name = (n1 + 1 + int(rng.integers(n_names - 1))) % n_names
        other_verb = (v1 + 1 + int(rng.integers(n_verbs - 1))) % n_verbs
        same_group_topic = g1 * tpg + (t1 - g1 * tpg + 1 + int(rng.integers(tpg - 1))) % tpg
        other_group_topic = ((g1 + 1 + int(rng.integers(N_GROUPS - 1))) % N_GROUPS) * tpg + int(rng.integers(tpg))
        t2, n2, v2 = {  # (topic, name, verb) of sentence 2 for each level / variant
            (0, 0): (other_group_topic, other_name, v1), (0, 1): (other_group_topic, other_name, v1),
            (1, 0): (same_group_topic, other_name, v1), (1, 1): (other_group_topic, n1, v1),
            (2, 0): (t1, other_name, other_verb), (2, 1): (same_group_topic, n1, v1),
            (3, 0): (t1, other_name, v1), (3, 1): (t1, n1, other_verb),
            (4, 0): (t1, n1, v1), (4, 1): (t1, n1, v1),
        }[(level, variant)]
        s1 = _task_sentence(rng, world, t1, name=n1, verb=v1)
        s2 = _task_sentence(rng, world, t2, name=n2, verb=v2)
        rows.append((s1, s2, sim_score((g1, t1, n1, v1), (world.group(t2), t2, n2, v2))))
    order = np.random.default_rng([seed, _TASK + 2, 9, split == "dev"]).permutation(n)
    return [rows[i] for i in order]


ORDER_SLOTS = 5  # name, verb, adjective, noun, place: the word classes of _TASK_SENTENCE


def order_rows(world: World, seed: int, split: str, n: int) -> list[tuple[str, str]]:
    """SYN-ORDER rows (sentence, label "1" acceptable / "0" not), balanced: the task sentence with
    words from one half of every word list (train half 0, dev half 1, names included), and for the
    unacceptable half two of its five content words (of different classes) swapped."""
    h = 0 if split == "train" else 1
    rows = []
    for r in range(n):
        rng = _task_rng(seed, 3, split, r)
        t = int(rng.integers(world.num_topics))
        lists = (world.names, world.verbs[t], world.adjs[t], world.nouns[t], world.places[world.group(t)])
        u = rng.random(ORDER_SLOTS)
        words = [lst[h::2][int(x * len(lst[h::2]))] for lst, x in zip(lists, u)]
        label = "1" if r % 2 == 0 else "0"
        if label == "0":
            i, j = sorted(int(k) for k in rng.choice(ORDER_SLOTS, 2, replace=False))
            words[i], words[j] = words[j], words[i]
        rows.append((_TASK_SENTENCE.format(name=words[0], verb=words[1], adj=words[2], noun=words[3],
                                           place=words[4]), label))
    order = np.random.default_rng([seed, _TASK + 3, 9, split == "dev"]).permutation(n)
    return [rows[i] for i in order]


def write_synthetic_glue(out_dir: str | os.PathLike, seed: int = 0, *, world: World | None = None,
                         n_train: int = 400, n_dev: int = 200, min_events: int = 4, max_events: int = 14) -> Path:
    """Write SYN-TOPIC/ (SST-2 layout), SYN-NEXT/ (RTE layout), SYN-SIM/ (STS-B layout) and SYN-ORDER/
    (CoLA layout: no header), each with train.tsv and dev.tsv (UTF-8, LF, tab-separated, no quoting)."""
    world = world or make_world()
    out = Path(out_dir)
    for split, n in (("train", n_train), ("dev", n_dev)):
        topic = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in topic_rows(world, seed, split, n)]
        nxt = ["index\tsentence1\tsentence2\tlabel"] + [
            f"{i}\t{a}\t{b}\t{y}"
            for i, (a, b, y) in enumerate(next_rows(world, seed, split, n, min_events, max_events))]
        sim = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"] + [
            f"{i}\tsynthetic\tsyn-sim\t2024\t{i}\tnone\tnone\t{a}\t{b}\t{y:.3f}"
            for i, (a, b, y) in enumerate(sim_rows(world, seed, split, n))]
        order = [f"syn\t{y}\t{'' if y == '1' else '*'}\t{x}" for x, y in order_rows(world, seed, split, n)]
        for task, lines in zip(SYNTHETIC_TASKS, (topic, nxt, sim, order)):
            atomic_write_text(out / task / f"{split}.tsv", "\n".join(lines) + "\n")
    return out


def ensure_glue(cfg_corpus_or_seed: Mapping[str, Any] | int | None, cache_dir: str | os.PathLike) -> Path:
    """A GLUE data_dir holding the synthetic tasks, from the same world as the synthetic corpus
    config (or the default world for a plain seed / a non-synthetic corpus config)."""
    if isinstance(cfg_corpus_or_seed, Mapping) or hasattr(cfg_corpus_or_seed, "get"):
        cfg = cfg_corpus_or_seed
        kind = cfg.get("kind") or cfg.get("name")
        p = params(cfg) if kind == "synthetic" else {**DEFAULTS, "seed": int(cfg.get("seed") or 0)}
    else:
        p = {**DEFAULTS, "seed": int(cfg_corpus_or_seed or 0)}
    keys = ("seed", "world_seed", "num_topics", "min_events", "max_events", "glue_train_rows", "glue_dev_rows")
    key = cache_key("synthetic-glue", GENERATOR_VERSION, {**{k: p[k] for k in keys}, "tasks": SYNTHETIC_TASKS})
    final = Path(cache_dir) / "synthetic" / f"glue-{key}"
    world = make_world(p["num_topics"], p["world_seed"])
    atomic_dir(final, lambda tmp: write_synthetic_glue(
        tmp, p["seed"], world=world, n_train=p["glue_train_rows"], n_dev=p["glue_dev_rows"],
        min_events=p["min_events"], max_events=p["max_events"]))
    return final
