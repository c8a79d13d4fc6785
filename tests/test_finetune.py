"""Fine-tuning: input encoding, caching, and small end-to-end runs that must learn a learnable task."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from robablate.glue import finetune as ft
from robablate.glue import encoding as ge, tasks as glue
from robablate.data.formats import truncation_counts
from robablate.errors import ConfigError, DataError
from robablate.models.bert import BertConfig, BertForPretraining
from robablate.optim import OptimizerSpec
from robablate.glue import readout as rg

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "glue"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KEYWORDS = [["apple", "pear", "plum"], ["red", "blue", "green"], ["cat", "dog", "cow"], ["run", "jump", "swim"]]
FILLER = [f"w{i}" for i in range(40)]


def make_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def tokenizer():
    words = FILLER + [w for ws in KEYWORDS for w in ws] + ["a", "b", "c", "d", "e", "f", "g", "h"]
    return make_tokenizer([" ".join(words)])


def tiny_config(vocab_size: int) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64)


def write_topic_task(root: Path, n_train: int = 320, n_dev: int = 160) -> Path:
    """SYN-TOPIC layout (sentence, label): the label is the class of the one keyword among filler."""
    rng = np.random.default_rng(123)
    for split, n in (("train", n_train), ("dev", n_dev)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            y = i % 4
            words = list(rng.choice(FILLER, size=int(rng.integers(3, 9))))
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(KEYWORDS[y])))
            lines.append(f"{' '.join(words)}\t{y}")
        (root / "SYN-TOPIC").mkdir(parents=True, exist_ok=True)
        (root / "SYN-TOPIC" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


# --- encoding ------------------------------------------------------------------------------------------

def truncate_by_popping(la: int, lb: int, budget: int) -> tuple[int, int]:
    """BERT's create_pretraining_data / run_classifier `_truncate_seq_pair`, literally."""
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def test_truncate_pair_matches_berts_loop():
    """GLUE pairs use the pretraining formats' truncation (one implementation); here with empty sides
    and the tiny budgets a short glue.max_len gives."""
    la, lb = np.meshgrid(np.arange(0, 20), np.arange(0, 20), indexing="ij")
    for budget in (1, 6, 7, 13):
        cut_a, cut_b = truncation_counts(la.ravel(), lb.ravel(), np.full(la.size, budget))
        ta, tb = la.ravel() - cut_a, lb.ravel() - cut_b
        expected = np.array([truncate_by_popping(a, b, budget) for a, b in zip(la.ravel(), lb.ravel())])
        np.testing.assert_array_equal(np.stack([ta, tb], 1), expected)


def test_encode_pair_layout_token_types_and_truncation(tokenizer):
    split = glue.Split(["a b c d e f", "a"], ["g h", "b c"], np.array([0, 1]), 0, Path("x"))
    enc = ge.encode_split(split, tokenizer, max_len=7)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("[CLS]", "[SEP]", "[PAD]", "a", "b", "c", "d", "g", "h")}
    first = enc.tokens[enc.offsets[0]:enc.offsets[1]].tolist()
    # budget 7 - 3 = 4: a keeps 2 of 6 tokens, b keeps its 2
    assert first == [ids["[CLS]"], ids["a"], ids["b"], ids["[SEP]"], ids["g"], ids["h"], ids["[SEP]"]]
    batch = enc.batch(np.array([1, 0]), pad_id=ids["[PAD]"])
    assert batch["input_ids"].shape == (2, 7)
    assert batch["input_ids"][0].tolist() == [ids["[CLS]"], ids["a"], ids["[SEP]"], ids["b"], ids["c"], ids["[SEP]"],
                                              ids["[PAD]"]]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert batch["labels"].tolist() == [1, 0]


def test_encode_single_sentence(tokenizer):
    enc = ge.encode_split(glue.Split(["a b c d e"], None, None, 0, Path("x")), tokenizer, max_len=4)
    assert enc.tokens.tolist() == [tokenizer.convert_tokens_to_ids(t) for t in ("[CLS]", "a", "b", "[SEP]")]
    assert enc.batch(np.array([0]), 0)["token_type_ids"].tolist() == [[0, 0, 0, 0]] and enc.labels is None


def test_cache_is_reused_and_keyed(tmp_path, tokenizer):
    data = write_topic_task(tmp_path / "data", 40, 20)
    cache = tmp_path / "cache"
    a = ge.load_encoded("SYN-TOPIC", data, tokenizer, 16, cache)
    folders = sorted((cache / "glue").glob("SYN-TOPIC-*[!k]"))
    assert len(folders) == 1 and {p.name for p in folders[0].iterdir()} == {"train.npz", "dev.npz"}
    b = ge.load_encoded("SYN-TOPIC", data, tokenizer, 16, cache)
    np.testing.assert_array_equal(a["train"].tokens, b["train"].tokens)
    np.testing.assert_array_equal(a["dev"].labels, b["dev"].labels)
    ge.load_encoded("SYN-TOPIC", data, tokenizer, 12, cache)  # another max_len: another entry
    with open(data / "SYN-TOPIC" / "dev.tsv", "a") as f:
        f.write("apple w1\t0\n")  # changed data: another entry, never a stale cache
    c = ge.load_encoded("SYN-TOPIC", data, tokenizer, 16, cache)
    assert len(c["dev"]) == 21 and len(list((cache / "glue").glob("SYN-TOPIC-*[!k]"))) == 3


def test_subset_is_fixed_and_capped(tmp_path, tokenizer):
    data = write_topic_task(tmp_path, 40, 20)
    a = ge.load_encoded("SYN-TOPIC", data, tokenizer, 16, max_train=10, max_eval=5)
    b = ge.load_encoded("SYN-TOPIC", data, tokenizer, 16, max_train=10, max_eval=5)
    assert len(a["train"]) == 10 and len(a["dev"]) == 5
    np.testing.assert_array_equal(a["train"].rows, b["train"].rows)
    assert not np.array_equal(a["train"].rows, np.arange(10))  # a random draw, not the first rows


# --- training -----------------------------------------------------------------------------------------

CFG = {"max_len": 32, "epochs": 4, "batch_size": 16, "lr": 5e-3, "warmup_fraction": 0.06,
       "weight_decay": 0.01, "dropout": 0.1}


def test_learns_a_learnable_task_and_writes_outputs(tmp_path, tokenizer):
    data = write_topic_task(tmp_path / "data")
    out = tmp_path / "out"
    r = rg.finetune_task(None, tiny_config(len(tokenizer)), tokenizer, "SYN-TOPIC", data, 0, CFG, out)
    # 4 balanced classes: chance is 0.25 (sd of a chance accuracy on 160 rows ~ 0.034); the keyword
    # decides the label, so even a randomly initialised 1-layer encoder must get far above chance.
    assert r["metrics"]["acc"] > 0.6, r
    assert r["score"] == r["metrics"]["acc"]
    assert len(r["epochs"]) == CFG["epochs"]
    assert r["best_epoch"] == max(r["epochs"], key=lambda h: h["score"])["epoch"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    dev_rows = [x for x in rows if x.get("dev/acc")]
    assert len(dev_rows) == CFG["epochs"] and any(x.get("train/loss") for x in rows)
    preds = list(csv.DictReader(open(out / "dev_predictions.tsv"), delimiter="\t"))
    assert len(preds) == 160 and set(preds[0]) == {"split", "row", "prediction", "label"}
    acc = np.mean([p["prediction"] == p["label"] for p in preds])
    assert acc == pytest.approx(r["metrics"]["acc"])  # the file holds the selected epoch


def test_same_seed_same_result_other_seed_differs(tmp_path, tokenizer):
    data = write_topic_task(tmp_path / "data", 64, 32)
    cfg = {**CFG, "epochs": 2}
    cfgm = tiny_config(len(tokenizer))
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        rg.finetune_task(None, cfgm, tokenizer, "SYN-TOPIC", data, seed, cfg, tmp_path / name)

    def losses(d: Path) -> list[str]:
        return [r["train/loss"] for r in csv.DictReader(open(d / "metrics.csv")) if r.get("train/loss")]

    assert losses(tmp_path / "a") and losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")  # the seed sets head init, dropout, order
    assert (tmp_path / "a" / "dev_predictions.tsv").read_text() == (tmp_path / "b" / "dev_predictions.tsv").read_text()


def test_mnli_two_dev_sets_and_regression(tmp_path):
    texts = []
    for task in ("MNLI", "STS-B"):
        for s in ["train", *glue.dev_splits(task)]:
            sp = glue.load_task(FIXTURES, task, s)
            texts += sp.texts_a + sp.texts_b
    tok = make_tokenizer(texts)
    cfg = {**CFG, "epochs": 2, "batch_size": 2}
    r = rg.finetune_task(None, tiny_config(len(tok)), tok, "MNLI", FIXTURES, 0, cfg, tmp_path / "mnli")
    assert set(r["metrics"]) == {"acc_m", "acc_mm"} and r["n_dev"] == {"dev_matched": 2, "dev_mismatched": 3}
    preds = (tmp_path / "mnli" / "dev_predictions.tsv").read_text().splitlines()
    assert sum(x.startswith("dev_matched\t") for x in preds) == 2
    assert sum(x.startswith("dev_mismatched\t") for x in preds) == 3
    r = rg.finetune_task(None, tiny_config(len(tok)), tok, "STS-B", FIXTURES, 0, cfg, tmp_path / "stsb")
    assert set(r["metrics"]) == {"pearson", "spearman"}
    assert all(np.isfinite(v) for v in r["metrics"].values())
    assert r["score"] == pytest.approx((r["metrics"]["pearson"] + r["metrics"]["spearman"]) / 2)


def test_pretrained_encoder_state_is_loaded(tokenizer):
    config = tiny_config(len(tokenizer))
    torch.manual_seed(5)
    pre = BertForPretraining(config, nsp=False)
    with torch.no_grad():
        pre.encoder.pooler.weight.fill_(0.123)
    m = ft.FinetuneModule(dict(vars(config)), "SYN-NEXT", ft.FinetuneSettings(lr=1e-3), 10,
                          encoder_state=pre.encoder.state_dict())
    for k, v in pre.encoder.state_dict().items():
        assert torch.equal(m.model.encoder.state_dict()[k], v), k
    assert m.model.classifier.out_features == 2


def test_bad_settings_fail_before_training(tmp_path, tokenizer):
    data = write_topic_task(tmp_path / "data", 8, 4)
    with pytest.raises(ConfigError, match="glue.max_len"):
        rg.finetune_task(None, tiny_config(len(tokenizer)), tokenizer, "SYN-TOPIC", data, 0,
                         {**CFG, "max_len": 100}, tmp_path / "o")
    small = BertConfig(vocab_size=10, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    with pytest.raises(ConfigError, match="vocabulary"):
        rg.finetune_task(None, small, tokenizer, "SYN-TOPIC", data, 0, CFG, tmp_path / "o")
    with pytest.raises(ConfigError, match="glue.data_dir"):
        ge.load_encoded("RTE", None, tokenizer, 16)


def test_train_order_follows_the_seed(tmp_path, tokenizer):
    enc = ge.load_encoded("SYN-TOPIC", write_topic_task(tmp_path, 64, 8), tokenizer, 16)

    def first_batch(seed: int) -> list[list[int]]:
        dm = ft.GlueDataModule("SYN-TOPIC", enc, 8, seed, pad_id=0)
        return next(iter(dm.train_dataloader()))["input_ids"].tolist()

    assert first_batch(3) == first_batch(3) and first_batch(3) != first_batch(4)
    assert len(ft.GlueDataModule("MNLI", {"train": enc["train"], "dev_matched": enc["dev"],
                                          "dev_mismatched": enc["dev"]}, 8, 0, 0).val_dataloader()) == 2


def test_select_best_is_dev_selection_first_on_ties():
    tried = [{"score": 0.5, "k": 0}, {"score": 0.7, "k": 1}, {"score": 0.7, "k": 2}, {"score": 0.6, "k": 3}]
    assert rg.select_best(tried)["k"] == 1


def test_check_glue_config_before_any_compute(tmp_path):
    assert [t.name for t in rg.check_glue_config({"tasks": ["SYN-TOPIC"], "data_dir": None})] == ["SYN-TOPIC"]
    with pytest.raises(ConfigError, match="glue.data_dir"):
        rg.check_glue_config({"tasks": ["RTE"], "data_dir": None})
    with pytest.raises(DataError, match=r"RTE.train\.tsv"):
        rg.check_glue_config({"tasks": ["RTE"], "data_dir": str(FIXTURES)})  # fixtures hold RTE/test.tsv only
    assert rg.check_glue_config({"tasks": ["MNLI", "WNLI"], "data_dir": str(FIXTURES)})[0].name == "MNLI"
    assert rg.check_glue_config({"tasks": ["RTE"], "source": "hf"})[0].name == "RTE"
    with pytest.raises(ConfigError, match="glue.source"):
        rg.check_glue_config({"tasks": ["RTE"], "source": "ftp"})
    with pytest.raises(ConfigError, match="glue.tasks"):
        rg.check_glue_config({"tasks": ["SQuAD"]})
    with pytest.raises(ConfigError, match="glue.lr"):
        rg.check_glue_config({"tasks": ["SYN-NEXT"], "grid": {"lr": [1e-5, -1.0]}})
    with pytest.raises(ConfigError, match="glue.epochs"):
        rg.check_glue_config({"tasks": ["SYN-NEXT"], "epochs": 0})


def test_grid_points():
    assert rg.grid_points(None) == [{}]
    pts = rg.grid_points({"batch_size": [16, 32], "lr": [1e-5, 2e-5, 3e-5]})
    assert len(pts) == 6 and {"batch_size": 32, "lr": 3e-5} in pts
    with pytest.raises(ConfigError, match="glue.grid"):
        rg.grid_points({"momentum": [0.9]})


def test_finetune_all_glue_section(tmp_path):
    """finetune_all as the pipeline calls it: encoder from a HF folder, synthetic task, seeds x grid."""
    from omegaconf import OmegaConf

    from conftest import compose_cfg
    from robablate.config import validate
    from robablate.glue import synthetic_tasks
    from robablate.models.hf_export import save_hf

    cfg = compose_cfg(["glue.tasks=[SYN-TOPIC]", "glue.seeds=2", "glue.epochs=1", "glue.max_train_examples=48",
                       "glue.max_eval_examples=24", "glue.max_len=32", "glue.grid={lr:[1.0e-5,5.0e-3]}",
                       f"cache_dir={tmp_path / 'cache'}", "trainer.enable_progress_bar=false",
                       "trainer.accelerator=cpu"])
    syn = synthetic_tasks.ensure_glue(cfg.corpus, cfg.cache_dir)
    tok = make_tokenizer(glue.load_task(syn, "SYN-TOPIC", "train").texts_a + glue.load_task(syn, "SYN-TOPIC", "dev").texts_a)
    hf_dir = save_hf(BertForPretraining(tiny_config(len(tok)), nsp=False), tmp_path / "hf", tokenizer=tok)
    section = rg.finetune_all(OmegaConf.to_container(cfg.glue, resolve=True), validate(cfg), tmp_path / "run", hf_dir, tok)
    task = section["tasks"]["SYN-TOPIC"]
    assert task["metrics"] == ["acc"] and task["main"] == "acc" and task["summary"]["n"] == 2
    assert [r["seed"] for r in task["seeds"]] == [0, 1]
    for r in task["seeds"]:  # dev-set selection over the grid: the kept point has the best score
        assert r["score"] == max(g["score"] for g in r["grid"]) and r["hparams"]["lr"] in (1e-5, 5e-3)
    assert task["median_metrics"]["acc"] == pytest.approx(np.median([r["metrics"]["acc"] for r in task["seeds"]]))
    assert section["score"]["glue"]["value"] is None and section["score"]["glue"]["tasks"] == []
    assert section["score"]["synthetic"]["value"] == pytest.approx(task["median_metrics"]["acc"])
    assert (tmp_path / "run" / "glue" / "SYN-TOPIC" / "seed=1" / "lr=0.005" / "metrics.csv").is_file()


def test_test_splits_are_encoded_uncapped_and_written_as_submission(tmp_path):
    """with_test adds the task's test splits when its test files are present (never capped: a submission
    needs every row); write_submission names the files as the GLUE server expects."""
    texts = []
    for s in glue.splits("MNLI"):
        sp = glue.load_task(FIXTURES, "MNLI", s)
        texts += sp.texts_a + sp.texts_b
    tok = make_tokenizer(texts)
    assert ge.test_splits_present("MNLI", FIXTURES) == ["test_matched", "test_mismatched"]
    assert ge.test_splits_present("RTE", FIXTURES) == ["test"] and ge.test_splits_present("SYN-NEXT", FIXTURES) == []
    assert ge.test_splits_present("CoLA", tmp_path) == []  # no test file: nothing to submit
    enc = ge.load_encoded("MNLI", FIXTURES, tok, 32, tmp_path / "cache", max_eval=1, with_test=True)
    n_test = {s: len(glue.load_task(FIXTURES, "MNLI", s)) for s in ("test_matched", "test_mismatched")}
    assert len(enc["dev_matched"]) == 1 and {s: len(enc[s]) for s in n_test} == n_test
    assert enc["test_matched"].labels is None
    assert "test_matched" not in ge.load_encoded("MNLI", FIXTURES, tok, 32, tmp_path / "cache", max_eval=1)
    preds = {"test_matched": np.arange(n_test["test_matched"]) % 3,
             "test_mismatched": np.full(n_test["test_mismatched"], 2)}
    paths = rg.write_submission(tmp_path / "sub", glue.get_task("MNLI"), preds)
    assert [p.name for p in paths] == ["MNLI-m.tsv", "MNLI-mm.tsv"]
    expected = "".join(f"{i}\tneutral\n" for i in range(n_test["test_mismatched"]))
    assert paths[1].read_text() == "index\tprediction\n" + expected


def test_finetune_settings_are_checked_once_with_defaults_for_null():
    hp = ft.FinetuneSettings.from_config({"lr": 1e-4, "epochs": None, "betas": [0.9, 0.999], "tasks": ["RTE"]})
    # null = RoBERTa's default; other keys ignored
    assert hp == ft.FinetuneSettings(lr=1e-4, optimizer=OptimizerSpec(betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1))
    assert hp.epochs == 3 and hp.schedule.warmup_fraction == 0.06
    for bad, key in (({"batch_size": 0}, "glue.batch_size"), ({"max_len": 3}, "glue.max_len"),
                     ({"lr": "fast"}, "glue.lr"), ({"warmup_fraction": 1.0}, "glue.warmup_fraction"),
                     ({"weight_decay": -0.1}, "glue.weight_decay"), ({"betas": [0.9, 1.0]}, "glue.betas")):
        with pytest.raises(ConfigError, match=key):
            ft.FinetuneSettings.from_config(bad)
