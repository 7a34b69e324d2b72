"""PL on transformers' Trainer: what is ours around it.

:mod:`~mpa.training.data` (dataset and answer-only collator, run in DataLoader workers),
:mod:`~mpa.training.trainer` (settings mapping, the loss, step log, live metrics),
:mod:`~mpa.training.resume` (Trainer checkpoints, loaded without unpickling),
:mod:`~mpa.training.launch` (``train.processes``: torchrun or accelerate), :mod:`~mpa.training.batches`
(the global batch over processes). The stage is :func:`mpa.stages.level.level`.
"""
