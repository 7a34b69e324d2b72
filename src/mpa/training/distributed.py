"""The process group of a data-parallel PL run, and the model wrapping that goes with it.

A process learns its place from the environment every torch launcher sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): ``torchrun``, our own launcher
(:mod:`mpa.training.launch`) and a Kubeflow Trainer TrainJob all do. Without them the run is one
process and no process group is created.

Two strategies:

- ``ddp``: every process holds the whole model; gradients are averaged (``DistributedDataParallel``);
- ``fsdp``: PyTorch's FSDP2 (``fully_shard``): parameters, gradients and AdamW state are sharded over
  the processes, each transformer block is gathered just for its forward and backward. It runs on CPU
  with gloo as on GPU with NCCL, which is why it is used directly rather than through accelerate
  (accelerate applies its FSDP plugin only on accelerators).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def launched_world_size() -> int:
    """``WORLD_SIZE`` set by a launcher (1 when this process was not started by one)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, value: float | int) -> float:
        """Sum a number over all processes (every process gets the total)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_error(self, message: str | None) -> str | None:
        """Rank 0's error message (or None) on every rank, so all ranks stop together."""
        if not self.distributed:
            return message
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device: str = "auto") -> DistContext:
    """Join the launcher's process group (gloo on CPU, NCCL on CUDA), or a one-process context.

    ``device``: the student's ``device`` setting (``auto``, ``cpu``, ``cuda``...): ``auto`` takes the
    GPU of this process's local rank when CUDA is there.
    """
    world = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(minutes=30),
            device_id=dev if use_cuda else None,
        )
        owns = True
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, owns_group=owns)


def block_classes(model: torch.nn.Module) -> set[str]:
    """Class names of the repeated blocks (HF's ``_no_split_modules``): the FSDP units."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    return names


def wrap_model(model: torch.nn.Module, ctx: DistContext, strategy: str, bf16: bool) -> torch.nn.Module:
    """DDP or FSDP2 over the process group (unchanged for one process)."""
    if not ctx.distributed:
        return model
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kw: dict[str, Any] = {"mesh": mesh}
        if mp is not None:
            kw["mp_policy"] = mp
        names = block_classes(model)
        blocks = [m for m in model.modules() if type(m).__name__ in names]
        if not blocks:
            raise ValueError(
                f"train.strategy fsdp: {type(model).__name__} names no repeated blocks (_no_split_modules) to shard"
            )
        for m in blocks:
            fully_shard(m, **kw)
        fully_shard(model, **kw)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
        find_unused_parameters=False,
        gradient_as_bucket_view=True,  # no second copy of the gradients in the all-reduce buckets
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Skip DDP's all-reduce on all but the last micro-batch of an accumulation step.

    FSDP reduce-scatters every micro-batch (keeping gradients sharded is the point of it).
    """
    from torch.nn.parallel import DistributedDataParallel

    if not sync and isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def full_state_dict(model: torch.nn.Module, ctx: DistContext) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on rank 0's CPU (a collective under FSDP); None on other ranks."""
    if not ctx.distributed:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if ctx.is_main else None
