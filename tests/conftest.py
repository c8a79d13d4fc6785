"""Shared test helpers: compose configs with Hydra's compose API, find ../shared/data, share caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from robablate.config import normalize_overrides

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED_DATA = Path(os.environ.get("ROBABLATE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def compose_cfg(overrides: list[str] | None = None):
    """The config `python run.py <overrides>` would see (without Hydra's runtime section)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=normalize_overrides(list(overrides or [])))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the whole session, so tokenizers and token caches are built once."""
    return tmp_path_factory.mktemp("robablate-cache")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared/data is absent; set ROBABLATE_SHARED_DATA)")
    return path
