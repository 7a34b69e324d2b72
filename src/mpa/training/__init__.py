"""PL at scale: processes, sharding, the global batch across processes, resume and the local launcher.

- :mod:`mpa.training.distributed`: the process group (gloo on CPU, NCCL on GPU) from the environment a
  launcher sets (``torchrun``, our own launcher, a Kubeflow TrainJob), DDP or FSDP2 wrapping, full
  state dicts for saving;
- :mod:`mpa.training.batches`: the global batch split over processes, micro-batches and accumulation;
- :mod:`mpa.training.resume`: optimizer, scheduler, data position and RNG saved every K steps;
- :mod:`mpa.training.launch`: ``train.processes: N`` starts N local worker processes.

The training loop itself is :func:`mpa.stages.level.level`.
"""
