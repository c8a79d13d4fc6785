"""GLUE read-out: fine-tune the encoder on glue.tasks x glue.seeds (x glue.grid) and return the
`glue` section of results.json (RoBERTa §3.1: dev-set selection over the grid, median over seeds).

Unlike the zero-shot read-outs this one trains, so besides its `glue` section (a plain mapping) its
entry points take the run's Plan and folders: `check_glue_config` / `check_glue_files` (before any
compute), `finetune_task` (one task, one seed) and `finetune_all` (every task x seed x grid point). The Lightning pieces are in
robablate.glue.finetune, the encoding and its cache in robablate.glue.encoding. When a task's test
files are present, the selected epoch also predicts them into GLUE-server files.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from robablate.config import Plan
from robablate.glue.tasks import TaskSpec, dev_splits, get_task, load_task, submission_splits, submission_text
from robablate.glue.encoding import EncodedSplit, check_source, load_encoded, test_splits_present
from robablate.data.tokenizer import special_ids
from robablate.errors import ConfigError, DataError
from robablate.glue.finetune import FinetuneModule, FinetuneSettings, GlueDataModule, predict
from robablate.io import atomic_write_text
from robablate.glue.metrics import glue_score, summarize_seeds
from robablate.models.bert import BertConfig
from robablate.progress import bars_fit_output

def wants_submission(cfg_glue: Mapping[str, Any]) -> bool:
    """glue.submission (default true): predict the test files that are present into GLUE-server files."""
    return cfg_glue.get("submission") is not False


def write_dev_predictions(path: Path, spec: TaskSpec, encoded: Mapping[str, EncodedSplit],
                          preds: Mapping[str, np.ndarray]) -> None:
    """split, row (in the dev file), prediction, label (label strings; scores for regression)."""
    fmt = (lambda v: f"{float(v):.4f}") if spec.is_regression else (lambda v: spec.labels[int(v)])
    lines = ["split\trow\tprediction\tlabel"]
    for s, p in preds.items():
        enc = encoded[s]
        lines += [f"{s}\t{r}\t{fmt(y_hat)}\t{fmt(y)}" for r, y_hat, y in zip(enc.rows, p, enc.labels)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_submission(out_dir: Path, spec: TaskSpec, preds: Mapping[str, np.ndarray]) -> list[Path]:
    """GLUE-server files (index, prediction) named as the server expects (RTE.tsv, MNLI-m.tsv, ...),
    one per test split, in out_dir."""
    paths = []
    for split, name in zip(submission_splits(spec), spec.submission_files):
        if split in preds:
            paths.append(out_dir / name)
            atomic_write_text(paths[-1], submission_text(spec, preds[split]))
    return paths


def check_model(config: BertConfig, tokenizer: Any, max_len: int) -> int:
    """glue.max_len fits the encoder's positions and the tokenizer its vocabulary; returns max_len."""
    if not 4 <= max_len <= config.max_position_embeddings:
        raise ConfigError(f"glue.max_len={max_len} must be in [4, {config.max_position_embeddings}] "
                          f"(the encoder's max_position_embeddings)")
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the encoder's vocabulary is "
                          f"{config.vocab_size}: fine-tune with the tokenizer the encoder was pretrained with")
    return max_len


def check_glue_config(cfg_glue: Mapping[str, Any]) -> list[TaskSpec]:
    """Everything about `glue` that can be checked before pretraining: task names, glue.source, the
    grid, and for local real-GLUE tasks that glue.data_dir holds each task's train and dev files."""
    tasks = [get_task(t) for t in cfg_glue.get("tasks") or []]
    source = check_source(cfg_glue.get("source") or "local")
    for point in grid_points(cfg_glue.get("grid")):
        FinetuneSettings.from_config({**cfg_glue, **point})  # the fine-tuning rules live there
    init = cfg_glue.get("init")
    if init and not (Path(str(init)).expanduser() / "config.json").is_file():
        raise ConfigError(f"glue.init: {init} is not a local Hugging Face model folder (no config.json); "
                          f"give a finished run's pretrain/hf or a BERT checkpoint folder")
    for spec in tasks:
        if spec.synthetic or source == "hf":
            continue
        data_dir = cfg_glue.get("data_dir")
        if not data_dir:
            raise ConfigError(f"glue.data_dir: {spec.name} needs a folder in the official GLUE layout "
                              f"(folders {' '.join(t.name for t in tasks if not t.synthetic)}), or glue.source=hf")
        for split in ["train", *dev_splits(spec)]:
            path = Path(data_dir) / spec.folder / f"{split}.tsv"
            if not path.is_file():
                raise DataError(f"glue.data_dir: {path} not found ({spec.name} needs its {split} file); point "
                                f"glue.data_dir at a folder in the official GLUE layout, or read the task from "
                                f"the Hugging Face hub with glue.source=hf")
    return tasks


def check_glue_files(cfg_glue: Mapping[str, Any], tasks: list[TaskSpec] | None = None) -> None:
    """Read every local GLUE file the fine-tuning will read (train, dev and, with glue.submission,
    the test files that are present) with the task's reader, before any compute: a bad row (too few
    fields, unknown label, a non-numeric STS-B score) or an empty split fails here, naming the file and
    line, not hours later after pretraining. Every bad file is listed in one DataError.
    Synthetic tasks (generated by robablate) and glue.source=hf (read from the hub) are not read here."""
    tasks = check_glue_config(cfg_glue) if tasks is None else tasks
    source = str(cfg_glue.get("source") or "local")
    data_dir = cfg_glue.get("data_dir")
    if source != "local" or not data_dir:
        return
    errors = []
    for spec in tasks:
        if spec.synthetic:
            continue
        names = ["train", *dev_splits(spec)]
        if wants_submission(cfg_glue):
            names += test_splits_present(spec, data_dir)
        for split in names:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # QQP's known short rows: warned when fine-tuning
                    load_task(data_dir, spec, split)
            except DataError as e:
                errors.append(str(e))
    if errors:
        raise DataError("GLUE data: " + ("\n  ".join(["", *errors]) if len(errors) > 1 else errors[0]))


def finetune_task(encoder_state: Mapping[str, torch.Tensor] | None, model_cfg: BertConfig | Mapping[str, Any],
                  tokenizer: Any, task: str, data_dir: str | Path | None, seed: int,
                  cfg_glue: Mapping[str, Any], out_dir: str | Path, *, cache_dir: str | Path | None = None,
                  encoded: Mapping[str, EncodedSplit] | None = None, trainer_kwargs: Mapping[str, Any] | None = None,
                  loggers: list | None = None, csv_log: bool = True) -> dict[str, Any]:
    """Fine-tune one encoder on one task with one seed; return the best epoch's dev metrics and score.

    encoder_state None = a randomly initialised encoder (the "no pretraining" baseline). Writes
    out_dir/metrics.csv (CSVLogger: train loss per step, dev metrics per epoch; not with csv_log=False),
    out_dir/dev_predictions.tsv (the selected epoch's predictions) and, when `encoded` holds test
    splits (load_encoded(with_test=True)), the selected epoch's GLUE-server files in out_dir/submission/.
    """
    from lightning.pytorch.loggers import CSVLogger

    spec = get_task(task)
    out_dir = Path(out_dir)
    config = model_cfg if isinstance(model_cfg, BertConfig) else BertConfig(**dict(model_cfg))
    hp = FinetuneSettings.from_config(cfg_glue)
    check_model(config, tokenizer, hp.max_len)
    if encoded is None:
        encoded = load_encoded(spec, data_dir, tokenizer, hp.max_len, cache_dir, cfg_glue.get("source") or "local",
                               cfg_glue.get("max_train_examples"), cfg_glue.get("max_eval_examples"))
    epochs, batch_size = hp.epochs, hp.batch_size

    pl.seed_everything(int(seed), workers=True, verbose=False)  # head init, dropout, data order
    dm = GlueDataModule(spec, encoded, batch_size, int(seed), special_ids(tokenizer).pad)
    total_steps = epochs * dm.steps_per_epoch()
    module = FinetuneModule(asdict(config), spec.name, hp, total_steps, encoder_state=encoder_state,
                            keep_best_state=any(k.startswith("test") for k in encoded))
    kw = {"accelerator": "auto", "precision": "32-true", "deterministic": True, "enable_progress_bar": False,
          **(trainer_kwargs or {})}
    trainer = pl.Trainer(
        devices=1, max_epochs=epochs, num_sanity_val_steps=0, enable_checkpointing=False,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, dm.steps_per_epoch())),
        logger=[*([CSVLogger(save_dir=str(out_dir), name="", version="")] if csv_log else []), *(loggers or [])],
        default_root_dir=str(out_dir), **kw)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=dm)
    best = module.best
    assert best is not None  # validation runs after every epoch
    write_dev_predictions(out_dir / "dev_predictions.tsv", spec, encoded, best["preds"])
    submission: list[str] = []
    if module.best_state is not None:
        module.model.load_state_dict(module.best_state)  # the selected epoch, as for the dev predictions
        pad_id = special_ids(tokenizer).pad
        preds = {s: predict(module.model, spec, enc, pad_id, 2 * batch_size) for s, enc in encoded.items()
                 if s.startswith("test")}
        submission = [str(p) for p in write_submission(out_dir / "submission", spec, preds)]
    return {"task": spec.name, "seed": int(seed), "metrics": best["metrics"], "score": best["score"],
            "best_epoch": best["epoch"], "epochs": module.history, "steps": total_steps,
            "n_train": len(encoded["train"]), "n_dev": {s: len(encoded[s]) for s in dev_splits(spec)},
            "submission": submission, "wall_s": time.perf_counter() - t0}


# --- all tasks x seeds (x grid) -> the glue section of results.json ---------------------------------

GRID_KEYS = ("batch_size", "lr", "epochs", "warmup_fraction", "weight_decay", "dropout")


def grid_points(grid: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Every combination of glue.grid (e.g. {batch_size: [16, 32], lr: [1e-5, 2e-5, 3e-5]})."""
    if not grid:
        return [{}]
    bad = [k for k in grid if k not in GRID_KEYS]
    if bad:
        raise ConfigError(f"glue.grid: unknown keys {bad}; allowed: {', '.join(GRID_KEYS)}")
    keys = list(grid)
    values = [list(grid[k]) if isinstance(grid[k], (list, tuple)) else [grid[k]] for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def select_best(tried: list[dict[str, Any]]) -> dict[str, Any]:
    """Dev-set selection over grid points (RoBERTa §3.1): the highest task score, the first on ties."""
    return max(tried, key=lambda r: r["score"])


def _median_metrics(runs: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, float]:
    return {m: float(np.median([r["metrics"][m] for r in runs])) for m in names}


def finetune_all(cfg_glue: Mapping[str, Any], plan: Plan, run_dir: str | Path, hf_dir: str | Path,
                 tokenizer: Any) -> dict[str, Any]:
    """Fine-tune the run's encoder (or glue.init, with its own tokenizer) on glue.tasks x glue.seeds
    (x glue.grid, best dev per seed); return the `glue` section of results.json. Per task, the GLUE
    score uses each metric's median over seeds (RoBERTa reports the median of 5). `cfg_glue` is the
    read-out's own section (a plain mapping, checked here); the run's settings come from `plan.specs`
    (cache, trainer, loggers, the synthetic world of the corpus).

    Writes run_dir/glue/<task>/seed=<n>/ (metrics.csv, dev_predictions.tsv, submission/ when the task's
    test files are present) and run_dir/glue/submission/: per task, the GLUE-server files of the seed
    with the best dev score (dev-set selection, as for the grid), ready to zip and upload."""
    from robablate.glue import synthetic_tasks
    from robablate.data.tokenizer import load_tokenizer
    from robablate.loggers import build_loggers, wants_csv
    from robablate.models.hf_export import encoder_state_from_hf

    specs = plan.specs
    tasks = check_glue_config(cfg_glue)
    n_seeds = int(cfg_glue.get("seeds") or 0)
    if not tasks or n_seeds < 1:
        return {}
    init = cfg_glue.get("init")
    if init:  # another encoder: it must read its own vocabulary, not the run's
        tokenizer = load_tokenizer(init, key="glue.init")
    config, state = encoder_state_from_hf(init or hf_dir)
    max_len = check_model(config, tokenizer, FinetuneSettings.from_config(cfg_glue).max_len)
    run_dir, cache_dir = Path(run_dir), specs.cache_dir
    syn_dir = synthetic_tasks.glue_folder(specs.corpus.generator, cache_dir) if any(t.synthetic for t in tasks) else None
    trainer_kwargs = {"accelerator": specs.trainer.accelerator, "precision": plan.precision,
                      "deterministic": bool(specs.trainer.deterministic),
                      "enable_progress_bar": specs.trainer.enable_progress_bar and bars_fit_output()}
    points = grid_points(cfg_glue.get("grid"))
    section: dict[str, Any] = {"tasks": {}, "data_dir": cfg_glue.get("data_dir"), "source": cfg_glue.get("source"),
                               "seeds": n_seeds, "grid": cfg_glue.get("grid"), "init": init}
    submission: dict[str, Any] = {}
    for spec in tasks:
        data_dir = syn_dir if spec.synthetic else cfg_glue.get("data_dir")
        source = "local" if spec.synthetic else str(cfg_glue.get("source") or "local")
        encoded = load_encoded(spec, data_dir, tokenizer, max_len, cache_dir, source,
                               cfg_glue.get("max_train_examples"), cfg_glue.get("max_eval_examples"),
                               with_test=wants_submission(cfg_glue))
        runs = []
        for seed in range(n_seeds):
            tried = []
            for point in points:
                sub = ",".join(f"{k}={v}" for k, v in point.items())
                out_dir = run_dir / "glue" / spec.name / f"seed={seed}"
                out_dir = out_dir / sub if sub else out_dir
                # W&B (logger=wandb): the arm's one finetune run, metrics under "<task>/seed=<n>/";
                # finetune_task writes the CSV log itself (not under logger=none).
                loggers = build_loggers(specs.logger, out_dir, "finetune", csv_log=False)
                r = finetune_task(state, config, tokenizer, spec.name, data_dir, seed, {**cfg_glue, **point},
                                  out_dir, encoded=encoded, trainer_kwargs=trainer_kwargs, loggers=loggers,
                                  csv_log=wants_csv(specs.logger))
                tried.append({**r, "hparams": point})
            best = select_best(tried)
            runs.append({"seed": seed, "metrics": best["metrics"], "score": best["score"],
                         "best_epoch": best["best_epoch"], "hparams": best["hparams"],
                         "submission": best["submission"], "wall_s": sum(t["wall_s"] for t in tried),
                         "grid": [{"hparams": t["hparams"], "score": t["score"]} for t in tried]
                         if len(tried) > 1 else None})
        section["tasks"][spec.name] = {
            "metrics": list(spec.metrics), "main": spec.main_metric, "seeds": runs,
            "summary": summarize_seeds([r["score"] for r in runs]),
            "median_metrics": _median_metrics(runs, spec.metrics),
            "n_train": len(encoded["train"]), "n_dev": {s: len(encoded[s]) for s in dev_splits(spec)},
            "wall_s": sum(r["wall_s"] for r in runs),
        }
        chosen = select_best(runs)
        if chosen["submission"]:
            dest = run_dir / "glue" / "submission"
            dest.mkdir(parents=True, exist_ok=True)
            files = []
            for f in map(Path, chosen["submission"]):
                atomic_write_text(dest / f.name, f.read_text(encoding="utf-8"))
                files.append(str(dest / f.name))
            submission[spec.name] = {"seed": chosen["seed"], "files": files}
    section["score"] = glue_score({n: t["median_metrics"] for n, t in section["tasks"].items()})
    if submission:
        section["submission"] = submission
    return section


# ------------------------------------------------------------------ the registry's entry points


def check_config(section: Mapping[str, Any]) -> list[str]:
    """The task names, checked before the run folder exists (glue=none wins over a preset's tasks)."""
    if section.get("name") == "none":
        return []
    return [spec.name for spec in check_glue_config(section)]


def check(section: Mapping[str, Any], stage: str = "all") -> list[str]:
    """Task names; every local file they read parses (stage=pretrain fine-tunes nothing: no files)."""
    tasks = check_config(section)
    if tasks and stage != "pretrain":
        check_glue_files(section)
    return tasks if stage != "pretrain" else []


def run(context: Any) -> dict[str, Any]:
    """results["glue"]: fine-tune on the checked tasks ({} when there are none)."""
    if not context.prepared:
        return {}
    return finetune_all(context.section, context.plan, context.run_dir, context.hf_dir, context.tokenizer)
