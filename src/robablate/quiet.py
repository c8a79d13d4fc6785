"""Third-party noise, filtered at its source so that robablate's own warnings stay visible.

Each filter names the message and the module that emits it (never a blanket `ignore` by category):
a new or changed warning from a dependency, and every warning robablate itself raises, still shows.
"""

from __future__ import annotations

import logging
import warnings

# (message regex, category, module regex of the emitting code, why it is noise for a robablate user)
THIRD_PARTY_NOISE: tuple[tuple[str, type[Warning], str, str], ...] = (
    # Lightning 2.6's _pytree builds torch's deprecated LeafSpec on every batch-size extraction:
    # printed once per Trainer, i.e. once per fine-tuning run (22 times in `make run`); not ours to fix
    # (torch deprecated LeafSpec in pytorch/pytorch#160843; Lightning-AI/pytorch-lightning#21326).
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.", "Lightning internals"),
    (r".*LeafSpec.*is deprecated", FutureWarning, r"torch\.utils\._pytree", "same, raised inside torch"),
)

# Lightning's per-Trainer banners (GPU available..., tips) drown the progress of a run with many
# fine-tuning trainers; their warnings and errors are kept.
QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda")


def quiet_third_party() -> None:
    """Install the filters above (idempotent: warnings.filterwarnings de-duplicates) and turn off the
    Hugging Face progress bars of each export and load (one bar per fine-tuning run otherwise)."""
    for message, category, module, _why in THIRD_PARTY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        disable_progress_bars()
        hf_logging.disable_progress_bar()  # "Writing model shards", "Loading weights" per export/load
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
