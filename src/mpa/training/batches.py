"""The global batch over processes: which samples each process trains on at each optimizer step.

The global batch is ``train.batch_size`` whatever the number of processes (the paper's presets):
``micro_batch_size x accumulation x processes = batch_size``. The sample order is one seeded shuffle
per epoch, the same on every process and for every world size; step ``s`` takes
``order[s*B:(s+1)*B]`` and process ``r`` its ``r``-th contiguous share of it, cut into micro-batches.
So 1 process and N processes see the same global batches, and a resumed run continues at the
step it saved.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


class BatchLayoutError(ValueError):
    """A batch size that cannot be split over the processes and micro-batches as configured."""


@dataclass(frozen=True)
class BatchLayout:
    batch_size: int  # global: all processes together, per optimizer step
    world_size: int
    per_process: int  # samples one process trains on per step
    micro_batch_size: int  # samples per forward pass
    accumulation: int  # micro-batches per process per step

    @property
    def micro_batches(self) -> int:
        return self.accumulation


def batch_layout(batch_size: int, world_size: int, micro_batch_size: int | None) -> BatchLayout:
    """Split ``batch_size`` over ``world_size`` processes and micro-batches; clear errors if it does not divide."""
    if batch_size % world_size:
        raise BatchLayoutError(
            f"train.batch_size {batch_size} cannot be split evenly over {world_size} processes: "
            f"use a batch size that is a multiple of {world_size}, or a number of processes that divides {batch_size}"
        )
    per = batch_size // world_size
    micro = min(micro_batch_size or per, per)
    if per % micro:
        divisors = [d for d in range(1, per + 1) if per % d == 0]
        raise BatchLayoutError(
            f"train.micro_batch_size {micro} does not divide the {per} samples each of {world_size} process(es) "
            f"trains on per step (batch_size {batch_size}): choose one of {divisors}"
        )
    return BatchLayout(batch_size, world_size, per, micro, per // micro)


def total_steps(n_samples: int, epochs: float, batch_size: int) -> int:
    return max(1, math.ceil(n_samples * epochs / batch_size))


def sample_order(n_samples: int, steps: int, batch_size: int, seed: int) -> list[int]:
    """Indices for ``steps`` global batches: a fresh seeded shuffle per pass over the samples."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        idx = list(range(n_samples))
        rng.shuffle(idx)
        order.extend(idx)
    return order[: steps * batch_size]


def micro_batches(order: list[int], step: int, layout: BatchLayout, rank: int) -> list[list[int]]:
    """The micro-batches (sample indices) process ``rank`` trains on at optimizer step ``step``."""
    start = step * layout.batch_size + rank * layout.per_process
    mine = order[start : start + layout.per_process]
    m = layout.micro_batch_size
    return [mine[i : i + m] for i in range(0, len(mine), m)]
