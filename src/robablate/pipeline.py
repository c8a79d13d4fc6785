"""One ablation arm end to end: check config -> data -> pretrain -> fine-tune -> results.json."""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robablate.loggers import finish_wandb
from robablate.config import Plan, axes_of, validate
from robablate.errors import ConfigError, RobablateError
from robablate.overrides import check_arguments
from robablate.quiet import quiet_third_party
from robablate.registry import READOUTS, Context, Readout
from robablate.relaunch import prepare_run, start_run
from robablate.results import environment, write_results


def resolve_run_dir(cfg: DictConfig) -> Path:
    """`run_dir` if given, else Hydra's output folder (Hydra >= 1.2 does not chdir into it)."""
    if cfg.get("run_dir"):
        return Path(cfg.run_dir).resolve()
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir).resolve()
    raise ConfigError("Invalid config `run_dir`: no output folder; set run_dir=DIR (needed outside `python run.py`).")


def writable_dir(run_dir: Path) -> Path:
    """Create run_dir and prove it takes a file, before any compute (an unwritable folder such as
    run_dir=/proc/x otherwise fails after tokenizing with a traceback)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".robablate_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"Invalid config `run_dir`: cannot write to {run_dir} ({e.strerror or e}); "
                          "expected a folder this user can create and write.") from None
    return run_dir


def overrides_of(cfg: DictConfig) -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def is_sweep() -> bool:
    """Whether this process runs one job of a `-m` sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def readout_config(cfg: DictConfig, key: str) -> dict[str, Any] | None:
    """A read-out's config section (`glue`, `eval.blimp`) as a plain dict, None when absent: the
    read-outs take their own section, never the DictConfig."""
    node = OmegaConf.select(cfg, key)
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def active_readouts(cfg: DictConfig) -> list[tuple[Readout, dict[str, Any] | None]]:
    """The read-outs this config asks for (robablate/registry.py), each with its own config section;
    the validation MLM read-out is part of pretraining and has nothing to run."""
    return [(r, readout_config(cfg, r.config_key)) for r in READOUTS.values()
            if r.impl is not None and (r.always or OmegaConf.select(cfg, r.config_key) is not None)]


def check_readouts(readouts, stage: str) -> dict[str, Any]:
    """Every read-out's config and input files, before any compute, so a bad file fails in seconds
    rather than after pretraining (errors name the file and the line); returns what each `run` needs
    (BLiMP's pairs, read once; GLUE's task names)."""
    return {r.name: r.implementation().check(section, stage) for r, section in readouts}


def run_readouts(readouts, kind: str, prepared: dict[str, Any], timings: dict[str, float], **context: Any
                 ) -> dict[str, Any]:
    """Run the read-outs of one kind; return their results.json sections (timings updated)."""
    out = {}
    for r, section in readouts:
        if r.kind != kind:
            continue
        t = time.perf_counter()
        out[r.results_key] = r.implementation().run(Context(section, prepared[r.name], **context))
        if out[r.results_key] and r.timing:
            timings[r.timing] = out[r.results_key].get("wall_s", time.perf_counter() - t)
    return out


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one arm; return the results dict (also written to <run_dir>/results.json)."""
    t_start = time.perf_counter()
    plan: Plan = validate(cfg)  # bad configs stop here, before any compute
    check_arguments(cfg, overrides_of(cfg), plan.total_steps, sweep=is_sweep())  # typed but moot
    readouts = active_readouts(cfg)
    for r, section in readouts:  # each read-out's config, before the run folder exists
        r.implementation().check_config(section)
    run_dir = writable_dir(resolve_run_dir(cfg))
    results_path = run_dir / "results.json"
    stage = cfg.get("stage", "all")
    if stage not in ("all", "pretrain", "finetune"):
        raise ConfigError(f"Invalid config `stage`: expected all, pretrain or finetune, got {stage!r}.")
    config = OmegaConf.to_container(cfg, resolve=True)
    if stage != "finetune":  # stage=finetune updates a finished run on purpose
        # refusals stop here, nothing written
        decision = prepare_run(run_dir, config, resume=bool(cfg.get("resume")),
                               overwrite=bool(cfg.get("overwrite")), precision=plan.precision)
        if decision.action == "skip":  # results.json is left as it is (same bytes, same mtime)
            from robablate.summary import summary_line

            prev = json.loads(results_path.read_text())
            print(f"[robablate] done already: {summary_line(prev).removeprefix('[robablate] done ')}"
                  f"{decision.reason}", flush=True)
            return {**prev, "skipped": True}
        if decision.action == "resume":  # a partial run of this config: continue it exactly
            plan = replace(plan, specs=replace(plan.specs, trainer=replace(plan.specs.trainer, resume=True)))
    if stage != "finetune":
        from robablate.data.corpus import check_corpus

        check_corpus(plan.specs.corpus)  # the corpus files decode (corpus.errors decides what an undecodable one does)
    prepared = check_readouts(readouts, stage)  # bad data stops here
    quiet_third_party()  # third-party noise only (after the checks: it imports transformers)
    init = plan.specs.model.init  # "random": the untrained control arm (model.init=random)

    base: dict[str, Any] = {
        "status": "running", "run_dir": str(run_dir), "experiment": cfg.experiment_name,
        "overrides": overrides_of(cfg), "axes": axes_of(cfg, plan), "seed": int(cfg.seed),
        "plan": plan.to_dict(), "config": config,
        "init": init,
    }
    if stage != "finetune":
        start_run(run_dir, config, overwrite=bool(cfg.get("overwrite")), precision=plan.precision)
    try:
        if stage == "finetune":
            return _finetune_only(cfg, plan, run_dir, base)

        from robablate.datamodule import prepare
        from robablate.identical import training_checks
        from robablate.pretrain import pretrain
        from robablate.tune import tune_lr

        # tune.lr: this arm's peak LR from pilot runs (cached per arm); the random-init control trains nothing
        tuned = tune_lr(cfg, plan) if init == "pretrained" else None
        if tuned is not None:
            plan = replace(plan, lr=tuned["chosen_lr"])
            base.update(plan=plan.to_dict(), tune=tuned)
        data = prepare(plan)
        base["data"] = data.stats
        # Before the first step: static masking that is dynamic at this budget warns; what it trains on is hashed.
        checks = training_checks(plan, data, {k: readout_config(cfg, k) for k in ("glue", "eval")})
        module, section = pretrain(plan, data, run_dir)
        section.update(checks)
        if section["global_rank"] != 0:
            return {}  # DDP ranks > 0: rank 0 exports, fine-tunes and writes results
        if section["interrupted"]:
            print(f"[robablate] stopped at step {section['steps']} (train.stop_at_step); resume with resume=true "
                  f"run_dir={run_dir}", file=sys.stderr)
            return {"status": "interrupted", "pretrain": section}
        _release_process_group()

        from robablate.models.hf_export import save_hf

        hf_dir = run_dir / "pretrain" / "hf"
        save_hf(module.model, hf_dir, tokenizer=data.tokenizer)
        section["hf_dir"] = str(hf_dir)
        timings = {**data.timings, "pretrain_s": section["wall_s"]}
        context = dict(plan=plan, run_dir=run_dir, hf_dir=hf_dir, model=module.model, tokenizer=data.tokenizer)
        base.update(run_readouts(readouts, "zero_shot", prepared, timings, **context))  # before fine-tuning
        finetuned = run_readouts(readouts, "finetune", prepared, timings, **context)  # stage=pretrain: no tasks
        timings["total_s"] = time.perf_counter() - t_start
        results = {**base, "status": "complete", "pretrain": section, **finetuned,
                   "environment": environment(data.fingerprint), "timings": timings}
        write_results(results_path, results)
        return results
    except BaseException as e:
        # Leave a record the report lists as failed (never a half-written file), then re-raise.
        if not isinstance(e, (KeyboardInterrupt, SystemExit)):
            failed = {**base, "status": "failed", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc(limit=20), "environment": environment()}
            try:
                write_results(results_path, failed)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        raise
    finally:
        finish_wandb()


def _release_process_group() -> None:
    """After DDP pretraining, rank 0 fine-tunes alone: leave the process group first."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _finetune_only(cfg: DictConfig, plan: Plan, run_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune an existing run's encoder again (stage=finetune run_dir=...), updating its results.
    A fresh run_dir (glue.init=PATH: a Hugging Face folder as the encoder) gets this config's run
    fields (axes, seed, config, ...), so the report reads it like any other run."""
    from transformers import AutoTokenizer

    from robablate.glue.readout import finetune_all

    hf_dir = run_dir / "pretrain" / "hf"
    results_path = run_dir / "results.json"
    if not hf_dir.exists() and not cfg.glue.get("init"):
        raise ConfigError(f"Invalid config `run_dir`: {hf_dir} does not exist; stage=finetune needs a finished "
                          f"pretraining run (or glue.init=PATH).")
    prev = json.loads(results_path.read_text()) if results_path.exists() else {**base, "pretrain": {}}
    tok_dir = Path(cfg.glue.init) if cfg.glue.get("init") else hf_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    t = time.perf_counter()
    glue = finetune_all(readout_config(cfg, "glue"), plan, run_dir, hf_dir, tokenizer)
    prev.pop("schema_version", None)
    timings = {**prev.get("timings", {}), "finetune_s": time.perf_counter() - t}
    results = {**prev, "status": "complete", "glue": glue, "timings": timings,
               "environment": prev.get("environment") or environment()}
    write_results(results_path, results)
    return results


def main(cfg: DictConfig) -> int:
    """Entry point used by run.py: user errors become one paragraph on stderr and exit code 2."""
    try:
        results = run(cfg)
    except RobablateError as e:
        print(f"robablate: error: {e}", file=sys.stderr)
        return 2
    if results.get("status") == "complete" and not results.get("skipped"):
        from robablate.summary import format_summary, summary_line

        print(summary_line(results) if is_sweep() else format_summary(results), flush=True)
    return 0
