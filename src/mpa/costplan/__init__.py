"""``mpa plan``: the expected work of a run, before anything runs — and beside the measured numbers after.

The cost model (public figures on image tokens, FLOPs per token, GPU peaks and API prices):

- image tokens: Qwen2-VL's ``smart_resize`` to the configured pixel cap, one token per 28×28 px;
- FLOPs ≈ 2 × the decoder's parameters per token for the language model (prefill and decode; the input
  embedding is a lookup and the LM head runs only where a token is generated: measured with
  ``mpa bench-arch``, counting both on every prompt token overstated a 2-layer cut 7B's prefill ~10×), plus the
  vision tower's FLOPs per image token (≈ 6.4 GFLOP for Qwen2-VL's 675 M-parameter ViT);
- PA: one call per image and attempt; PI teacher: one per parsed attempt; PI student: one per
  teacher-consistent attempt (by default the student never sees samples that cannot be kept);
- GPU-minutes = FLOPs / (peak × utilisation) on a named GPU; API dollars for an OpenAI teacher
  from the token prices in the config (GPT-4o-style image tokens: 85 + 170 per 512-px tile).

Parameters come from ``plan.teacher_params`` / ``plan.student_params``, else from the
checkpoint's safetensors (local directories), else from the model name (2B / 7B / 72B).

Split by concern: :mod:`mpa.costplan.models` (what a model costs per token and image),
:mod:`mpa.costplan.work` (the PA/PI plan), :mod:`mpa.costplan.level` (PL memory and time). This
package face re-exports their public names.
"""

from mpa.costplan.level import (
    GIB,
    USABLE_MEMORY,
    LevelPlan,
    MemoryEstimate,
    StudentArch,
    activation_bytes,
    format_level,
    level_gpus,
    memory_estimate,
    plan_level,
    student_arch,
    student_image_tokens,
)
from mpa.costplan.models import (
    NAMED_STUDENTS,
    ModelFacts,
    checkpoint_pixel_cap,
    gpt4o_image_tokens,
    model_facts,
    named_student,
    qwen_image_tokens,
)
from mpa.costplan.work import Plan, StageWork, format_plan, make_plan, measured

__all__ = [
    "GIB", "NAMED_STUDENTS", "USABLE_MEMORY", "LevelPlan", "MemoryEstimate", "ModelFacts", "Plan", "StageWork",
    "StudentArch", "activation_bytes", "checkpoint_pixel_cap", "format_level", "format_plan", "gpt4o_image_tokens",
    "level_gpus", "make_plan", "measured", "memory_estimate", "model_facts", "named_student", "plan_level",
    "qwen_image_tokens", "student_arch", "student_image_tokens",
]
