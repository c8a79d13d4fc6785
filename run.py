"""robablate entry point: `python run.py [overrides]` runs one ablation arm; `-m` sweeps them.

Thin on purpose (lightning-hydra-template): compose the config, hand it to robablate.pipeline.
"""

import sys

import hydra
from omegaconf import DictConfig

from robablate.config import normalize_overrides

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
