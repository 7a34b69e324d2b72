"""A synthetic, verifiable VQA world with a tiny Qwen2-VL teacher and student (the MPA demo).

See :mod:`mpa.toyworld.world` (scenes, rendering, templates, oracle), :mod:`mpa.toyworld.data`
(dataset writers), :mod:`mpa.toyworld.train` (training the shipped checkpoints) and
:mod:`mpa.toyworld.grading` (oracle grading of pseudo-labels).
"""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"
TEACHER_CHECKPOINT = CHECKPOINTS / "teacher"
STUDENT_CHECKPOINT = CHECKPOINTS / "student"
