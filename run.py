"""robablate entry point: `python run.py [overrides]` runs one ablation arm; `-m` sweeps them.

Thin on purpose (lightning-hydra-template): compose the config, hand it to robablate.pipeline.
"""

import sys

from robablate import threads

# Before torch loads OpenMP: ACTIVE (spinning) threads when the run has the cores, PASSIVE when others
# want them (robablate/threads.py; benchmarks.md). OMP_WAIT_POLICY set in the environment wins.
_choice = threads.configure(argv=sys.argv[1:])
if _choice.policy:
    print(f"robablate: OMP_WAIT_POLICY={_choice.policy} ({_choice.reason}; set OMP_WAIT_POLICY to override)",
          file=sys.stderr)

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
