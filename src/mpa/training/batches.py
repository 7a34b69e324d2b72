"""The global batch over processes: ``micro_batch_size x accumulation x processes = batch_size``.

The global batch is ``train.batch_size`` whatever the number of processes (the paper's presets). The
Trainer's seeded sampler orders the samples (one shuffle per epoch); accelerate hands each process
its share of every global batch.
"""

from __future__ import annotations

import math
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


def check_strategy(strategy: str, on_gpu: bool) -> None:
    """FSDP goes through accelerate, which shards only on accelerators (on CPU it would silently run DDP)."""
    if strategy == "fsdp" and not on_gpu:
        raise ValueError("train.strategy fsdp needs GPUs (accelerate shards only on accelerators; on the CPU it "
                         "would silently train unsharded): use strategy ddp on the CPU")
