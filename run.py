"""robablate entry point: `python run.py [overrides]` runs one ablation arm; `-m` sweeps them.

Thin on purpose (lightning-hydra-template): compose the config, hand it to robablate.pipeline.
"""

import os
import sys

# OpenMP threads that spin while another process holds the cores made CPU steps 2-5x slower on a
# shared machine (benchmarks.md); sleeping instead costs nothing measurable on an idle one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from robablate.config import normalize_overrides  # noqa: E402

# `seq_len=128` names a config option, but Hydra parses 128 as an int and refuses it as a group
# override; quote such values before Hydra reads the command line.
sys.argv[1:] = normalize_overrides(sys.argv[1:])


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from robablate.pipeline import main as run_arm

    code = run_arm(cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
