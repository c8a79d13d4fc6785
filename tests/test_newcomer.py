"""Issue 12 ("a newcomer's first hour"): inputs checked before compute, resume keeps what a run wrote,
arguments that cannot take effect are refused, the end-of-run summary, quiet output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import arm_cfg, compose_cfg
from robablate.pipeline import run

# --- 6. resume keeps the curve before the interruption: tests/test_pipeline.py
# test_resumed_run_equals_uninterrupted (metrics.csv rows and the validation history survive)

# --- 1. every input is validated before the first training step ------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"


def glue_copy(tmp_path: Path, task: str) -> Path:
    """A valid GLUE folder for `task` under tmp_path/glue: STS-B from tests/fixtures, RTE/MRPC written here."""
    import shutil

    dst = tmp_path / "glue"
    if task == "STS-B":
        shutil.copytree(FIXTURES / task, dst / task)
        return dst
    (dst / task).mkdir(parents=True)
    for split in ("train", "dev"):
        if task == "RTE":
            rows = ["index\tsentence1\tsentence2\tlabel"] + [
                f"{i}\tA man walks {i}.\tA person moves.\t{'entailment' if i % 2 else 'not_entailment'}"
                for i in range(8)]
        else:  # MRPC: Quality, #1 ID, #2 ID, #1 String, #2 String
            rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
                f"{i % 2}\t{i}\t{i + 100}\tThe cat sat {i}.\tA cat was sitting." for i in range(8)]
        (dst / task / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return dst


@pytest.mark.parametrize("task,split,line,bad,expected", [
    ("RTE", "dev.tsv", 3, lambda f: f[:-1] + ["maybe"], "unknown label 'maybe'"),
    ("STS-B", "dev.tsv", 2, lambda f: f[:-1] + ["high"], "not a finite number"),
    ("RTE", "dev.tsv", None, None, "no rows"),  # an empty dev file (header only)
])
def test_bad_glue_file_fails_before_any_training_step(tmp_path, cache_dir, task, split, line, bad, expected) -> None:
    # Before: found by the fine-tuning reader after pretraining had run (pretrain/ written); after:
    # refused by pipeline.check_inputs before the tokenizer, the corpus or the model are touched.
    data = glue_copy(tmp_path, task)
    path = data / task / split
    lines = path.read_text(encoding="utf-8").split("\n")
    if bad is None:
        lines = lines[:1]
    else:
        lines[line - 1] = "\t".join(bad(lines[line - 1].split("\t")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = arm_cfg(tmp_path, cache_dir, "glue=default", f"glue.data_dir={data}", f"glue.tasks=[{task}]", "glue.seeds=1",
                  logger="csv")
    from robablate.errors import DataError

    with pytest.raises(DataError) as e:
        run(cfg)
    msg = str(e.value)
    assert str(path) in msg and expected in msg
    if line is not None:
        assert f"line {line}" in msg
    assert not (tmp_path / "run" / "pretrain").exists()  # no step, no checkpoint, no metrics.csv


def test_every_bad_glue_file_is_listed_in_one_error(tmp_path) -> None:
    from robablate.errors import DataError
    from robablate.glue.readout import check_glue_files

    data = glue_copy(tmp_path, "RTE")
    glue_copy(tmp_path, "MRPC")
    for task in ("RTE", "MRPC"):
        p = data / task / "dev.tsv"
        p.write_text(p.read_text(encoding="utf-8").split("\n")[0] + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        check_glue_files({"tasks": ["RTE", "MRPC"], "data_dir": str(data), "source": "local", "seeds": 1})
    assert str(data / "RTE" / "dev.tsv") in str(e.value) and str(data / "MRPC" / "dev.tsv") in str(e.value)


# --- 3. every undecodable corpus file in one error; corpus.encoding / corpus.errors -----------------

def books(tmp_path: Path) -> Path:
    """A folder of 'Gutenberg books': three UTF-8, two Latin-1 (é as one byte 0xe9)."""
    folder = tmp_path / "books"
    folder.mkdir()
    for i in range(3):
        (folder / f"good{i}.txt").write_text("".join(f"Book {i} sentence {j} is here. It goes on.\n\n"
                                                     for j in range(30)), encoding="utf-8")
    for name in ("latin_a.txt", "latin_b.txt"):
        (folder / name).write_bytes("Un café au lait. Très bien.\n\nUne autre phrase ici.\n".encode("latin-1"))
    return folder


def corpus_cfg(folder: Path, **kw):
    return {"kind": "text", "name": "text", "path": str(folder), "train_glob": "*.txt", "val_glob": None,
            "val_fraction": 0.2, "document_boundary": "blank_line", "split_sentences": True, "max_docs": None, **kw}


def test_all_undecodable_corpus_files_in_one_error(tmp_path) -> None:
    # Before: the first Latin-1 file stopped the run; fixing it met the second one.
    from robablate.data import corpus
    from robablate.errors import DataError

    folder = books(tmp_path)
    with pytest.raises(DataError) as e:
        corpus.check_corpus(corpus_cfg(folder))
    msg = str(e.value)
    assert "latin_a.txt" in msg and "latin_b.txt" in msg and "good0.txt" not in msg
    assert "line 1" in msg and "corpus.encoding" in msg and "corpus.errors" in msg


def test_corpus_encoding_and_error_policies(tmp_path) -> None:
    from robablate.data import corpus
    from robablate.errors import ConfigError

    folder = books(tmp_path)
    text = lambda **kw: " ".join(s for split in ("train", "val")  # noqa: E731
                                 for d in corpus.iter_documents(corpus_cfg(folder, **kw), split) for s in d)
    assert "café" in text(encoding="latin-1")  # every file decodes as Latin-1 (ASCII is a subset)
    assert "caf\ufffd" in text(errors="replace")
    with pytest.warns(UserWarning, match="latin_a.txt.*latin_b.txt|latin_b.txt.*latin_a.txt"):
        skipped = text(errors="skip")
    assert "caf" not in skipped and "Book 0" in skipped
    with pytest.raises(ConfigError, match="corpus.errors"):
        corpus.check_corpus(corpus_cfg(folder, errors="ignore"))
    with pytest.raises(ConfigError, match="corpus.encoding"):
        corpus.check_corpus(corpus_cfg(folder, encoding="utf-16"))


def test_text_corpus_exposes_encoding_keys() -> None:
    cfg = compose_cfg(["corpus=text", "corpus.path=/tmp", "corpus.encoding=latin-1", "corpus.errors=skip"])
    assert cfg.corpus.encoding == "latin-1" and cfg.corpus.errors == "skip"


# --- 2. arguments that cannot take effect are refused ------------------------------------------------

@pytest.mark.parametrize("overrides,match", [
    (["+foo=1"], "no part of robablate reads `foo`"),
    (["+train.tokns=5"], "Did you mean train.tokens"),
    (["+corpus.path=/tmp"], "corpus=text"),
    (["glue.seeds=0"], "glue=none"),
    (["glue=none", "glue.seeds=3"], "no fine-tuning tasks"),
    (["glue.data_dir=/a/missing/folder"], "glue.data_dir` is not read"),
    (["optimizer.lr=1e-4"], "batch.lr"),
    (["train.max_steps=10", "train.tokens=1000"], "train.max_steps"),
    (["masking=dynamic", "masking.dupe_factor=3"], "masking=dynamic"),
    (["glue.grid={lr:[1e-4]}", "glue.lr=1e-3"], "glue.grid"),
    (["stage=pretrain", "glue.seeds=2"], "stage=pretrain"),
    (["stage=finetune", "resume=true"], "resume=true"),
    (["corpus=wikitext2", "corpus.val_fraction=0.1"], "corpus.val_glob"),
])
def test_arguments_that_do_nothing_are_refused(overrides, match) -> None:
    from robablate.config import validate
    from robablate.errors import ConfigError
    from robablate.overrides import check_arguments

    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError, match=match):
        check_arguments(cfg, overrides, validate(cfg).total_steps)


@pytest.mark.parametrize("overrides", [
    [], ["glue=none"], ["glue.seeds=2", "glue.tasks=[SYN-TOPIC]"], ["batch.lr=null", "optimizer.lr=1e-4"],
    ["masking=static", "masking.dupe_factor=3"], ["++train.tokens=1000"], ["experiment=smoke"],
    ["glue=cpu_real"],
])
def test_arguments_that_take_effect_pass(overrides) -> None:
    from robablate.config import validate
    from robablate.overrides import check_arguments

    cfg = compose_cfg(overrides)
    check_arguments(cfg, overrides, validate(cfg).total_steps)


def test_unknown_added_key_refused_by_the_cli_before_compute(tmp_path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "run.py", "experiment=smoke", "+train.typo=1", f"run_dir={tmp_path}"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "train.typo" in proc.stderr and not (tmp_path / "pretrain").exists()


# --- 5. progress in steps and tokens; third-party deprecation noise filtered at the source ---------

def test_progress_text_reads_steps_and_tokens() -> None:
    from robablate.progress import progress_text

    assert progress_text(120, 489, 512_000, 2_000_000) == "step 120/489 · tokens 512.0k/2.0M"


def test_third_party_noise_filtered_but_own_warnings_kept() -> None:
    import warnings

    from lightning.pytorch.utilities._pytree import _tree_flatten

    from robablate.quiet import quiet_third_party

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        quiet_third_party()
        _tree_flatten(1)  # Lightning builds torch's deprecated LeafSpec here (once per fine-tuning Trainer)
        warnings.warn("robablate: a warning of our own", UserWarning)
        warnings.warn("robablate: a deprecation of our own is deprecated", FutureWarning)
    messages = [str(w.message) for w in rec]
    assert not any("LeafSpec" in m for m in messages), messages
    assert sum(m.startswith("robablate:") for m in messages) == 2


@pytest.mark.slow
def test_run_shows_steps_not_epochs_no_leafspec_and_ends_with_a_summary(tmp_path, cache_dir, capsys) -> None:
    # Items 4 and 5 on one real run (python run.py calls pipeline.main): before, the bar read
    # `Epoch 0/-2`, LeafSpec warned once per fine-tuning run and the run ended with a path only.
    import warnings

    from robablate.pipeline import main

    cfg = arm_cfg(tmp_path, cache_dir, "trainer.enable_progress_bar=true", "glue=default", "glue.tasks=[SYN-TOPIC]",
                  "glue.seeds=1", "glue.epochs=1", "glue.max_train_examples=32", "glue.max_eval_examples=32",
                  logger="csv")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert main(cfg) == 0
    out = "".join(capsys.readouterr())  # Lightning's bars write to stdout
    assert "step 8/8" in out and "Epoch 0/-2" not in out and "Writing model shards" not in out
    assert not any("LeafSpec" in str(w.message) for w in rec)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    summary = out[out.index("[robablate] complete"):]
    assert f"MLM loss {res['pretrain']['val_mlm_loss']:.4f} (perplexity {res['pretrain']['val_mlm_ppl']:.2f})" in summary
    assert f"SYN-TOPIC  acc {res['glue']['tasks']['SYN-TOPIC']['median_metrics']['acc']:.4f}" in summary
    assert "tokens seen" in summary and "pretraining" in summary and "fine-tuning" in summary
    assert str(tmp_path / "run" / "results.json") in summary and "pretrain/metrics.csv" in summary


def test_summary_names_metrics_scores_conventions_and_blimp() -> None:
    from robablate.glue.metrics import glue_score
    from robablate.summary import format_summary, summary_line

    med = {"MRPC": {"f1": 0.81, "acc": 0.72}, "RTE": {"acc": 0.55}, "SYN-TOPIC": {"acc": 0.9}}
    results = {"status": "complete", "run_dir": "/r", "experiment": "x", "axes": {"masking": "dynamic", "nsp": False},
               "seed": 0, "pretrain": {"val_mlm_loss": 2.0, "val_mlm_ppl": 7.389, "val_mlm_acc": 0.5, "steps": 10,
                                       "planned_steps": 10, "tokens_seen": 2_000_000, "train_loss": 2.1},
               "glue": {"seeds": 5, "tasks": {t: {"median_metrics": m} for t, m in med.items()},
                        "score": glue_score(med)},
               "blimp": {"overall": 0.61, "n_pairs": 6700},
               "timings": {"pretrain_s": 10.0, "finetune_s": 5.0, "blimp_s": 2.0, "total_s": 18.0}}
    text = format_summary(results)
    for expected in ("MLM loss 2.0000 (perplexity 7.39)", "MRPC       f1 0.8100 / acc 0.7200", "RTE        acc 0.5500",
                     "GLUE score    0.6575 (GLUE benchmark convention", "2 of 9 tasks: MRPC, RTE",
                     "BERT paper convention", "synthetic     0.9000", "BLiMP         0.6100", "2.0M tokens seen",
                     "pretraining 10.0 s", "fine-tuning 5.0 s", "BLiMP 2.0 s", "/r/results.json"):
        assert expected in text, expected
    line = summary_line(results)
    assert "\n" not in line and "masking=dynamic nsp=false seed=0" in line and "GLUE 0.6575" in line


# --- 7. corpus=wikitext2 works without ../shared/data ------------------------------------------------

WIKI_ROWS = [" = Alpha = \n", " The first article starts here . It has two sentences . \n", " \n",
             " = = Section = = \n", " More text of the first article . \n", " = Beta = \n",
             " The second article . Also short . \n"]


def wikitext2_missing(tmp_path):
    return compose_cfg(["corpus=wikitext2", f"corpus.path={tmp_path / 'absent'}"]).corpus


def test_wikitext2_falls_back_to_the_hub_when_the_local_copy_is_absent(tmp_path, monkeypatch) -> None:
    # Before: `corpus.path: ... is not a folder`; after: the same text from `wikitext`/`wikitext-2-v1`.
    import datasets

    from robablate.data import corpus

    calls = []

    def fake_load(name, config=None, split=None, **kw):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"text": WIKI_ROWS})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    cfg = wikitext2_missing(tmp_path)
    corpus.check_corpus(cfg)
    docs = list(corpus.iter_documents(cfg, "train"))
    assert ("wikitext", "wikitext-2-v1", "train") in calls
    assert docs == [["The first article starts here .", "It has two sentences .", "More text of the first article ."],
                    ["The second article .", "Also short ."]]
    list(corpus.iter_documents(cfg, "val"))
    assert ("wikitext", "wikitext-2-v1", "validation") in calls


def test_wikitext2_offline_error_names_both_ways(tmp_path, monkeypatch) -> None:
    import datasets

    from robablate.data import corpus
    from robablate.errors import DataError

    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach 'wikitext' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as e:
        corpus.check_corpus(wikitext2_missing(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "absent") in msg and "ROBABLATE_SHARED_DATA" in msg and "corpus.path" in msg
    assert "wikitext/wikitext-2-v1" in msg and "hub" in msg


def test_wikitext2_local_copy_is_used_when_present(tmp_path, monkeypatch) -> None:
    import datasets

    from robablate.data import corpus

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub was used"))
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(WIKI_ROWS), encoding="utf-8")
    (folder / "valid.txt").write_text("".join(WIKI_ROWS[:3]), encoding="utf-8")
    cfg = compose_cfg(["corpus=wikitext2", f"corpus.path={folder}"]).corpus
    corpus.check_corpus(cfg)
    assert len(list(corpus.iter_documents(cfg, "train"))) == 2


def test_no_citation_of_documents_outside_the_repository() -> None:
    # Before: 15 comments/configs cited "SPEC §..." or "PITFALLS", which a clone does not have; the
    # facts now live in docs/facts.md and the papers / upstream issues are cited directly.
    import re

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"\bSPEC\b|\bPITFALLS\b")
    files = [p for d in ("src", "conf", "tests", "docs", "experiments", "notebooks") for p in (root / d).rglob("*")
             if p.suffix in (".py", ".yaml", ".md", ".ipynb", ".sh") and p.name != Path(__file__).name]
    files += [root / "README.md", root / "benchmarks.md", root / "Makefile"]
    hits = [f"{p.relative_to(root)}:{i}" for p in files if p.is_file()
            for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if pattern.search(line)]
    assert hits == []
    assert (root / "docs" / "facts.md").is_file()


def test_in_a_sweep_a_setting_moot_for_this_arm_warns_and_glue_seeds_0_still_fails() -> None:
    # `-m masking=static,dynamic masking.dupe_factor=20`: the value matters for the static arm only.
    from robablate.errors import ConfigError
    from robablate.overrides import check_arguments

    overrides = ["masking=dynamic", "masking.dupe_factor=20"]
    with pytest.warns(UserWarning, match="masking.dupe_factor"):
        check_arguments(compose_cfg(overrides), overrides, sweep=True)
    with pytest.raises(ConfigError, match="glue=none"):
        check_arguments(compose_cfg(["glue.seeds=0"]), ["glue.seeds=0"], sweep=True)


def test_summary_of_the_random_init_control_says_nothing_was_trained() -> None:
    from robablate.summary import format_summary

    results = {"status": "complete", "run_dir": "/r", "experiment": "x", "axes": {}, "seed": 0, "init": "random",
               "pretrain": {"val_mlm_loss": 9.0, "val_mlm_ppl": 8103.0, "val_mlm_acc": 0.0, "steps": 0,
                            "planned_steps": 245, "tokens_seen": 0, "train_loss": float("nan")}}
    text = format_summary(results)
    assert "random-initialisation control" in text and "0/245 steps" not in text and "MLM loss 9.0000" in text
