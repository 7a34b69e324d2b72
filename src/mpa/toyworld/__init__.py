"""A synthetic, verifiable VQA world with a tiny Qwen2-VL teacher and student (the MPA demo).

See :mod:`mpa.toyworld.world` (scenes, rendering, templates, oracle), :mod:`mpa.toyworld.data`
(dataset writers), :mod:`mpa.toyworld.train` (training the shipped checkpoints) and
:mod:`mpa.toyworld.grading` (oracle grading of pseudo-labels).
"""

from pathlib import Path

CHECKPOINTS = Path(__file__).parent / "checkpoints"
TEACHER_CHECKPOINT = CHECKPOINTS / "teacher"
STUDENT_CHECKPOINT = CHECKPOINTS / "student"

# ``mpa demo`` defaults (kept here, light to import, so the CLI and the demo share them).
# PA temperature 1.75: the tiny teacher's pseudo-labels are then ≈ 0.73 correct before PI, close to
# the paper's human study of real teachers (0.68, Table 4); at 1.0, 0.89 (measured).
DEMO_TEMPERATURE = 1.75
DEMO_N_IMAGES = 6000
DEMO_N_TEST = 700  # 100 per question type
DEMO_TRAIN = {"batch_size": 8, "learning_rate": 3e-4, "epochs": 1}  # PL preset of the toy student
