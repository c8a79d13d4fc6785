"""The WikiText-2 CPU presets compose the RoBERTa-table presets (issue 13): one place for each sweep's
settings, so the CPU study sweeps exactly what the table preset sweeps, at its own scale."""

from __future__ import annotations

import pytest
from conftest import CONF
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf


def composed(experiment: str) -> tuple[dict, dict]:
    """(config without `hydra`, hydra.sweeper.params) of `python run.py -m experiment=<experiment>`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = dict(cfg.hydra.sweeper.params)
    return OmegaConf.to_container(cfg, resolve=False), params


@pytest.mark.parametrize("table", ["table1", "table2", "table3"])
def test_cpu_preset_sweeps_what_the_table_preset_sweeps(table: str) -> None:
    paper, paper_params = composed(f"roberta_{table}")
    cpu, cpu_params = composed(f"wikitext2_cpu_{table}")
    assert cpu_params == paper_params and cpu_params  # same axis values, same seeds
    assert cpu["nsp"] == paper["nsp"] and cpu["masking"]["name"] == paper["masking"]["name"]
    assert cpu["corpus"]["name"] == "wikitext2" and cpu["model"]["name"] == "tiny"
    assert cpu["experiment_name"] == f"wikitext2_cpu_{table}"


def test_table3_keeps_its_own_lr_grid() -> None:
    """The CPU scale wants larger LRs than the paper's: its grid replaces the table preset's."""
    paper, _ = composed("roberta_table3")
    cpu, _ = composed("wikitext2_cpu_table3")
    assert cpu["batch"]["scale"] == paper["batch"]["scale"] == 0.03125
    assert cpu["tune"]["lr"] == [3.0e-4, 1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2] != paper["tune"]["lr"]
