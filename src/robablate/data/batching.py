"""The batch plan: which instances form each global batch, as a pure function of (seed, phase, epoch).

Lightning 2.x has no fault-tolerant mid-epoch resume: a plain shuffled DataLoader repeats or skips
batches after a restart (Lightning #13843, #19475). Here the order of epoch e is a permutation drawn
from rng(seed, phase, e), and global step s is found by walking epochs from step 0, so a run resumed
at step k sees exactly the batches a full run sees from step k on, and 1 or 2 processes (with any
gradient accumulation) split the same global batches. With masking a pure function of
(seed, epoch, index) (data/masking.py) the masked data is identical too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from robablate.errors import ConfigError

# Columns of the key arrays BatchPlanSampler yields: the dataset index and the data epoch (the epoch
# to mask with, after masking.mask_epoch).
KEY_INDEX, KEY_EPOCH = 0, 1


def _permutation(n: int, epoch: int, seed: int, phase: int) -> np.ndarray:
    if seed < 0 or epoch < 0 or phase < 0:
        raise ConfigError(f"seed, epoch and phase must be >= 0 for the batch plan, got seed={seed} epoch={epoch} phase={phase}")
    return np.random.default_rng([seed, phase, epoch]).permutation(n).astype(np.int64)


def plan_epoch(
    lengths: np.ndarray,
    epoch: int,
    seed: int,
    batch_size: int,
    tokens_per_batch: int | None = None,
    *,
    min_instances: int = 1,
    phase: int = 0,
) -> list[np.ndarray]:
    """The global batches of one epoch: a list of int64 arrays of instance indices.

    Fixed batching (`tokens_per_batch` None, batch.unit=sequences, BERT's fixed sequence count):
    consecutive chunks of `batch_size` of the shuffled indices; the last, incomplete chunk is dropped.

    Token batching (`tokens_per_batch` = T given; `batch_size` is then unused; batch.unit=tokens):
    batch k ends at the instance boundary whose cumulative token count (sum of lengths, the tokens
    actually fed) is nearest to (k+1)·T, and holds at least `min_instances` instances (so it splits
    into accumulate x world micro-batches). This is error diffusion: a batch that ran over its share
    is followed by a shorter one, so the first k batches of an epoch hold k·T tokens to within half an
    instance, and a run's mean tokens per step is T to within half an instance per epoch, whatever
    the format's instance lengths (RoBERTa §4.2 matched tokens per batch; fixed-size batches of
    shorter instances feed fewer tokens). The epoch's last tokens that do not fill a batch are dropped.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if min_instances < 1:
        raise ConfigError(f"min_instances must be >= 1, got {min_instances}")
    order = _permutation(len(lengths), epoch, seed, phase)
    if tokens_per_batch is None:
        if batch_size < 1:
            raise ConfigError(f"batch.size must be >= 1, got {batch_size}")
        n_batches = len(order) // batch_size
        return list(order[: n_batches * batch_size].reshape(n_batches, batch_size))

    if tokens_per_batch < 1:
        raise ConfigError(f"tokens_per_batch must be >= 1, got {tokens_per_batch}")
    # cum[i] = tokens in the first i shuffled instances. Batch k ends at the boundary nearest to
    # (k+1)·T, found by binary search (a loop over batches, not instances).
    cum = np.concatenate([[0], np.cumsum(lengths[order], dtype=np.int64)])
    n = len(order)
    batches, start = [], 0
    for k in range(1, int(cum[-1]) // tokens_per_batch + 1):
        goal = k * tokens_per_batch
        end = int(np.searchsorted(cum, goal, side="left"))  # first boundary at or past the goal
        if end > 0 and goal - cum[end - 1] < cum[end] - goal:
            end -= 1  # the boundary before the goal is nearer (ties go past it)
        end = max(end, start + min_instances)
        if end > n:
            break
        batches.append(order[start:end])
        start = end
    return batches


class BatchPlanSampler(Sampler):
    """Yields this rank's micro-batches for global steps start_step .. max_steps - 1.

    Global step s takes the next batch of the plan (epoch e = plan_epoch(..., epoch=e)); the batch is
    split by stride into accumulate x world_size parts (part k = batch[k::A*W]), and rank r gets parts
    a*W + r for a = 0 .. A-1, one per accumulation step. Each yielded element is an int64 array
    [n, 2] of keys: column KEY_INDEX the dataset index, column KEY_EPOCH the epoch it was drawn in (so
    the dataset masks it with mask_epoch(strategy, that epoch, dupe_factor)).

    Use it as `DataLoader(dataset, sampler=..., batch_size=None)` with a dataset whose __getitem__
    takes the key array and returns a whole collated batch (masking is vectorised per batch); with
    Lightning, set `use_distributed_sampler=False` so it does not wrap this in a DistributedSampler.
    Steps count within `phase` (two_phase seq_len: each phase has its own instances and plan; pass
    start_step = global step - the phase's first step).
    """

    def __init__(
        self,
        lengths: np.ndarray,
        seed: int,
        batch_size: int,
        tokens_per_batch: int | None,
        accumulate: int,
        world_size: int,
        rank: int,
        start_step: int,
        max_steps: int,
        phase: int = 0,
    ) -> None:
        if accumulate < 1 or world_size < 1:
            raise ConfigError(f"gradient accumulation and devices must be >= 1, got {accumulate} and {world_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
        if not 0 <= start_step <= max_steps:
            raise ConfigError(f"start_step must be in [0, train.max_steps={max_steps}], got {start_step}")
        parts = accumulate * world_size
        if tokens_per_batch is None and (batch_size < 1 or batch_size % parts):
            raise ConfigError(
                f"batch.size ({batch_size}) must be a positive multiple of accumulation x devices "
                f"({accumulate} x {world_size}); set batch.micro_batch_size so it divides"
            )
        self.lengths = np.asarray(lengths)
        self.seed, self.batch_size, self.tokens_per_batch, self.phase = seed, batch_size, tokens_per_batch, phase
        self.accumulate, self.world_size, self.rank = accumulate, world_size, rank
        self.start_step, self.max_steps = start_step, max_steps
        self._batches_per_epoch: list[int] = []  # token batching: counts of epochs planned so far
        if self.steps_per_epoch is not None and self.steps_per_epoch == 0:
            raise ConfigError(f"batch.size ({batch_size}) exceeds the {len(self.lengths)} training instances")

    @property
    def steps_per_epoch(self) -> int | None:
        """Global steps per epoch under fixed batching (None under token batching, where it varies)."""
        return None if self.tokens_per_batch is not None else len(self.lengths) // self.batch_size

    def plan(self, epoch: int) -> list[np.ndarray]:
        return plan_epoch(
            self.lengths, epoch, self.seed, self.batch_size, self.tokens_per_batch,
            min_instances=self.accumulate * self.world_size, phase=self.phase,
        )

    def _count(self, epoch: int) -> int:
        while len(self._batches_per_epoch) <= epoch:
            count = len(self.plan(len(self._batches_per_epoch)))
            if count == 0:
                raise ConfigError(
                    f"tokens_per_batch ({self.tokens_per_batch}) exceeds what the {len(self.lengths)} training "
                    "instances hold: not one global batch fits in an epoch"
                )
            self._batches_per_epoch.append(count)
        return self._batches_per_epoch[epoch]

    def _locate(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within it) of global step `step`, walking epochs from step 0."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.steps_per_epoch is not None:
            return divmod(step, self.steps_per_epoch)
        epoch = 0
        while step >= self._count(epoch):
            step -= self._count(epoch)
            epoch += 1
        return epoch, step

    def epoch_of_step(self, step: int) -> int:
        """The data epoch global step `step` draws its batch from."""
        return self._locate(step)[0]

    def global_batch(self, step: int) -> tuple[int, np.ndarray]:
        """(data epoch, instance indices) of global step `step`: the whole batch, before the split into parts."""
        epoch, i = self._locate(step)
        return epoch, self.plan(epoch)[i]

    def epoch_first_steps(self, max_epochs: int) -> list[int]:
        """The first global step of each data epoch below max_steps (at most max_epochs of them)."""
        out, step = [], 0
        while step < self.max_steps and len(out) < max_epochs:
            out.append(step)
            step += self.steps_per_epoch if self.steps_per_epoch is not None else self._count(len(out) - 1)
        return out

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accumulate

    def __iter__(self) -> Iterator[np.ndarray]:
        parts = self.accumulate * self.world_size
        epoch, offset = self._locate(self.start_step)
        step = self.start_step
        while step < self.max_steps:
            for batch in self.plan(epoch)[offset:]:
                if step >= self.max_steps:
                    return
                for a in range(self.accumulate):
                    part = batch[a * self.world_size + self.rank :: parts]
                    yield np.stack([part, np.full_like(part, epoch)], axis=1)
                step += 1
            epoch, offset = epoch + 1, 0
