"""The synthetic GLUE-format tasks, drawn from the synthetic corpus's world (data/synthetic.py) with
fresh document seeds, so `python run.py` fine-tunes without a download:

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

The task files are cached on disk under a hash of the generator parameters and built atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robablate.data.synthetic import (GENERATOR_VERSION, N_GROUPS, TASK_STREAM, World, generate_document,
                                      generator_params, make_world)
from robablate.io import atomic_dir, atomic_write_text, cache_key

SYNTHETIC_TASKS = ("SYN-TOPIC", "SYN-NEXT", "SYN-SIM", "SYN-ORDER")
# The SYN-TOPIC / SYN-SIM / SYN-ORDER sentence: the corpus's event template 3 without a marker, so it
# reads like corpus text.
TASK_SENTENCE = "{name} {verb} the {adj} {noun} near {place}."


def _task_rng(seed: int, task: int, split: str, row: int, part: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, TASK_STREAM + task, 0 if split == "train" else 1, row, part])


def _task_sentence(rng: np.random.Generator, world: World, topic: int, *, half: int | None = None,
                   name: int | None = None, verb: int | None = None) -> str:
    """`{name} {verb} the {adj} {noun} near {place}.` with the topic's words; `half` (0 or 1) keeps
    only every other word of each list, so train and dev content words are disjoint."""
    sl = slice(None) if half is None else slice(half, None, 2)
    nouns, adjs, verbs = world.nouns[topic][sl], world.adjs[topic][sl], world.verbs[topic][sl]
    places = world.places[world.group(topic)][sl]
    name = int(rng.integers(len(world.names))) if name is None else name
    verb = int(rng.integers(len(verbs))) if verb is None else verb
    return TASK_SENTENCE.format(name=world.names[name], verb=verbs[verb], adj=adjs[rng.integers(len(adjs))],
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
    order = np.random.default_rng([seed, TASK_STREAM, 9, split == "dev"]).permutation(n)
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
    order = np.random.default_rng([seed, TASK_STREAM + 1, 9, split == "dev"]).permutation(n)
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
    order = np.random.default_rng([seed, TASK_STREAM + 2, 9, split == "dev"]).permutation(n)
    return [rows[i] for i in order]


ORDER_SLOTS = 5  # name, verb, adjective, noun, place: the word classes of TASK_SENTENCE


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
        rows.append((TASK_SENTENCE.format(name=words[0], verb=words[1], adj=words[2], noun=words[3],
                                           place=words[4]), label))
    order = np.random.default_rng([seed, TASK_STREAM + 3, 9, split == "dev"]).permutation(n)
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
    """A GLUE data_dir holding the synthetic tasks of the corpus config's world (generator_params)."""
    return glue_folder(generator_params(cfg_corpus_or_seed), cache_dir)


def glue_folder(p: Mapping[str, Any], cache_dir: str | os.PathLike) -> Path:
    """The synthetic tasks of generator parameters `p` (generator_params), written once and shared."""
    keys = ("seed", "world_seed", "num_topics", "min_events", "max_events", "glue_train_rows", "glue_dev_rows")
    key = cache_key("synthetic-glue", GENERATOR_VERSION, {**{k: p[k] for k in keys}, "tasks": SYNTHETIC_TASKS})
    final = Path(cache_dir) / "synthetic" / f"glue-{key}"
    world = make_world(p["num_topics"], p["world_seed"])
    atomic_dir(final, lambda tmp: write_synthetic_glue(
        tmp, p["seed"], world=world, n_train=p["glue_train_rows"], n_dev=p["glue_dev_rows"],
        min_events=p["min_events"], max_events=p["max_events"]))
    return final
