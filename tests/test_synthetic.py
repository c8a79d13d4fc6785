"""The synthetic corpus generator and the synthetic GLUE-format tasks."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from robablate.data import corpus, synthetic
from robablate.glue import synthetic_tasks
from robablate.errors import ConfigError

SMALL = {"kind": "synthetic", "name": "synthetic", "num_docs": 300, "num_val_docs": 20, "seed": 0}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text))


def _content(world: synthetic.World) -> set[str]:
    return set().union(*(world.topic_words(t) for t in range(world.num_topics)))


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", f"{path} must end with a newline"
    rows = [line.split("\t") for line in lines[1:-1]]
    return lines[0].split("\t"), rows


def test_corpus_is_deterministic_and_seed_dependent(tmp_path):
    a = synthetic.ensure_corpus(SMALL, tmp_path / "a")
    b = synthetic.ensure_corpus(SMALL, tmp_path / "b")
    c = synthetic.ensure_corpus({**SMALL, "seed": 1}, tmp_path / "a")
    for split in ("train.txt", "val.txt"):
        assert (a / split).read_bytes() == (b / split).read_bytes()
        assert (a / split).read_bytes() != (c / split).read_bytes()
    assert a.name == b.name != c.name  # the cache key follows the generator config
    # Train and validation documents come from separate seed streams: no shared document.
    train = (a / "train.txt").read_text().split("\n\n")
    val = (a / "val.txt").read_text().split("\n\n")
    assert not (set(train) & set(val)) - {""}


def test_smaller_num_docs_is_a_prefix():
    p_small, p_big = synthetic.params({**SMALL, "num_docs": 50}), synthetic.params({**SMALL, "num_docs": 80})
    assert list(synthetic.iter_synthetic(p_small, "train")) == list(synthetic.iter_synthetic(p_big, "train"))[:50]


def test_corpus_read_back_through_the_text_reader_is_identical(tmp_path):
    docs = list(corpus.iter_documents(SMALL, "train", cache_dir=tmp_path))
    assert docs == list(synthetic.iter_synthetic(synthetic.params(SMALL), "train"))
    assert len(list(corpus.iter_documents(SMALL, "val", cache_dir=tmp_path))) == SMALL["num_val_docs"]
    assert all(doc and all(s.strip() == s and s for s in doc) for doc in docs)


def test_topic_continuity_within_documents():
    """Two sentences of one document share a topic content word far more often than two sentences
    of different documents (measured: ~26% vs ~0.5%; required: >= 15% and >= 5x)."""
    world = synthetic.make_world()
    content = _content(world)
    docs = list(synthetic.iter_synthetic(synthetic.params(SMALL), "train"))
    sets = [[_words(s) & content for s in doc] for doc in docs]
    within = np.mean([bool(a & b) for doc in sets for a, b in itertools.combinations(doc, 2)])
    rng = np.random.default_rng(0)
    pairs = rng.integers(len(docs), size=(20000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    between = np.mean([bool(sets[i][rng.integers(len(sets[i]))] & sets[j][rng.integers(len(sets[j]))])
                       for i, j in pairs])
    assert within >= 0.15 and within >= 5 * between, (within, between)


def test_documents_follow_the_topic_script_and_keep_their_cast():
    world = synthetic.make_world()
    names = set(world.names)
    for i in range(200):
        topic, doc = synthetic.generate_document(np.random.default_rng([5, i]), world)
        verb_pos = {v: j for j, v in enumerate(world.verbs[topic])}
        steps = [verb_pos[w] for s in doc for w in re.findall(r"[a-z]+", s) if w in verb_pos]
        assert steps == sorted(steps) and len(steps) >= 4  # events in script order: order carries signal
        other_topics = _content(world) - world.topic_words(topic)
        assert not any(_words(s) & other_topics for s in doc)
        first = next(j for j, s in enumerate(doc) if s.startswith("first, "))
        cast = set().union(*(_words(s) & names for s in doc[:first]))
        assert 2 <= len(cast) <= 4 and first == len(cast)  # one introduction per entity, then the events
        assert set().union(*(_words(s) & names for s in doc[first:])) <= cast  # later mentions: the same cast


def test_generation_is_fast():
    p = synthetic.params({**SMALL, "num_docs": 1000})
    t = time.perf_counter()
    size = sum(len(s) + 1 for doc in synthetic.iter_synthetic(p, "train") for s in doc)
    elapsed = time.perf_counter() - t
    # ~0.7 MB in ~0.3 s on an idle core (default 5000 docs: ~3.4 MB in ~1.1 s); generous for a busy CI box.
    assert size > 500_000 and elapsed < 5.0, (size, elapsed)


def test_bad_generator_config_names_the_key():
    with pytest.raises(ConfigError, match="corpus.num_topics"):
        synthetic.params({**SMALL, "num_topics": 10})
    with pytest.raises(ConfigError, match="corpus.num_docs"):
        synthetic.params({**SMALL, "num_docs": 0})
    with pytest.raises(ConfigError, match="corpus.max_events"):
        synthetic.params({**SMALL, "min_events": 5, "max_events": 3})


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    return synthetic_tasks.write_synthetic_glue(tmp_path_factory.mktemp("glue"), seed=0, n_train=400, n_dev=200)


def test_glue_files_parse_in_their_layouts(glue_dir):
    for split, n in (("train", 400), ("dev", 200)):
        header, rows = _read_tsv(glue_dir / "SYN-TOPIC" / f"{split}.tsv")
        assert header == ["sentence", "label"] and len(rows) == n and all(len(r) == 2 for r in rows)
        assert Counter(r[1] for r in rows) == {str(k): n // 4 for k in range(4)}

        header, rows = _read_tsv(glue_dir / "SYN-NEXT" / f"{split}.tsv")
        assert header == ["index", "sentence1", "sentence2", "label"] and len(rows) == n
        assert all(len(r) == 4 for r in rows) and [int(r[0]) for r in rows] == list(range(n))
        assert Counter(r[3] for r in rows) == {"entailment": n // 2, "not_entailment": n // 2}

        header, rows = _read_tsv(glue_dir / "SYN-SIM" / f"{split}.tsv")
        assert len(header) == 10 and header[7:] == ["sentence1", "sentence2", "score"] and len(rows) == n
        assert all(len(r) == 10 for r in rows)
        scores = [float(r[9]) for r in rows]
        assert Counter(scores) == {s: n // 5 for s in (0.0, 1.25, 2.5, 3.75, 5.0)}


def test_syn_topic_dev_words_are_unseen_in_train_but_tied_to_the_topic_in_pretraining(glue_dir):
    world = synthetic.make_world()
    content = _content(world)
    _, train = _read_tsv(glue_dir / "SYN-TOPIC" / "train.tsv")
    _, dev = _read_tsv(glue_dir / "SYN-TOPIC" / "dev.tsv")
    train_words = set().union(*(_words(s) for s, _ in train))
    dev_content = [(w, int(y)) for s, y in dev for w in _words(s) & content]
    assert len(dev_content) >= 3 * len(dev)
    assert not {w for w, _ in dev_content} & train_words  # fine-tuning never shows a dev content word
    # ... but the pretraining corpus does, inside documents of the label's topic group.
    groups: dict[str, Counter] = {}
    for doc in synthetic.iter_synthetic(synthetic.params({**SMALL, "num_docs": 600}), "train"):
        words = set().union(*(_words(s) for s in doc)) & content
        topic = next(t for t in range(world.num_topics) if words <= world.topic_words(t))
        for w in words:
            groups.setdefault(w, Counter())[world.group(topic)] += 1
    seen = [(w, y) for w, y in dev_content if w in groups]
    assert len(seen) >= 0.95 * len(dev_content)
    assert all(groups[w].most_common(1)[0][0] == y for w, y in seen)


def test_syn_next_positives_continue_the_document(glue_dir):
    """A true next sentence shares a name or topic word (cast, role noun, focus words) with sentence1
    far more often than the same-position sentence of another document, half of which share the
    topic (measured: ~55% vs ~6%)."""
    world = synthetic.make_world()
    vocab = set(world.names) | _content(world)
    _, rows = _read_tsv(glue_dir / "SYN-NEXT" / "train.tsv")
    share = {lab: np.mean([bool(_words(a) & _words(b) & vocab) for _, a, b, y in rows if y == lab])
             for lab in ("entailment", "not_entailment")}
    assert share["entailment"] > 0.4 and share["entailment"] > 4 * share["not_entailment"], share


def test_syn_order_swaps_two_word_classes_with_unseen_dev_words(glue_dir):
    """CoLA layout (no header; source, label, mark, sentence), balanced; an acceptable row has its five
    content words in the template's class order (name verb the adj noun near place), an unacceptable
    row exactly two of them swapped, so both labels have the same words; dev words never occur in train."""
    world = synthetic.make_world()
    cls = {**{w: 0 for w in world.names}, **{w: 1 for v in world.verbs for w in v},
           **{w: 2 for a in world.adjs for w in a}, **{w: 3 for n in world.nouns for w in n},
           **{w: 4 for p in world.places for w in p}}
    words = {}
    for split, n in (("train", 400), ("dev", 200)):
        lines = (glue_dir / "SYN-ORDER" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        rows = [line.split("\t") for line in lines]
        assert len(rows) == n and all(len(r) == 4 and r[0] == "syn" for r in rows)
        assert Counter(r[1] for r in rows) == {"0": n // 2, "1": n // 2}
        assert all((r[2] == "*") == (r[1] == "0") for r in rows)  # CoLA's original-judgement mark
        for r in rows:
            toks = r[3].rstrip(".").split()
            assert toks[2] == "the" and toks[5] == "near" and len(toks) == 7
            order = [cls[w] for w in (toks[0], toks[1], toks[3], toks[4], toks[6])]
            moved = [i for i, c in enumerate(order) if c != i]
            assert sorted(order) == [0, 1, 2, 3, 4]
            assert moved == [] if r[1] == "1" else len(moved) == 2
        words[split] = set().union(*(_words(r[3]) for r in rows)) - {"the", "near"}
    assert not words["train"] & words["dev"]


def test_syn_sim_score_tracks_shared_attributes(glue_dir):
    assert synthetic_tasks.sim_score((0, 1, 7, 3), (0, 1, 7, 3)) == 5.0
    assert synthetic_tasks.sim_score((0, 1, 7, 3), (1, 5, 8, 3)) == 0.0  # same verb index, other topic: not shared
    assert synthetic_tasks.sim_score((0, 1, 7, 3), (0, 2, 7, 3)) == 2.5
    _, rows = _read_tsv(glue_dir / "SYN-SIM" / "train.tsv")
    overlap = [len(_words(r[7]) & _words(r[8])) for r in rows]
    rho = spearmanr([float(r[9]) for r in rows], overlap).statistic
    assert rho > 0.5, rho


def test_ensure_glue_is_cached_and_shared_by_seed_and_config(tmp_path):
    a = synthetic_tasks.ensure_glue(0, tmp_path)
    mtime = (a / "SYN-TOPIC" / "train.tsv").stat().st_mtime_ns
    b = synthetic_tasks.ensure_glue({"kind": "synthetic", "name": "synthetic", "seed": 0}, tmp_path)
    assert a == b and (b / "SYN-TOPIC" / "train.tsv").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in a.iterdir()) == sorted(synthetic_tasks.SYNTHETIC_TASKS)
    c = synthetic_tasks.ensure_glue({**SMALL, "world_seed": 3}, tmp_path)
    assert c != a
    world3 = synthetic.make_world(24, 3)
    _, rows = _read_tsv(c / "SYN-TOPIC" / "dev.tsv")
    assert all(_words(s) & _content(world3) for s, _ in rows)  # tasks follow the corpus's world
    assert not list(tmp_path.glob("synthetic/.*tmp-*"))  # no temp folder left behind
